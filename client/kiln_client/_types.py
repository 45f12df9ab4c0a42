"""The plain records the SDK hands back, made from the server's JSON.

Each keeps the server's whole object in ``raw``, so a field the server adds later is
there before the SDK names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = [
    "FINISHED",
    "ArrayInfo",
    "Control",
    "Dataset",
    "EpochRow",
    "Epochs",
    "Event",
    "Steps",
    "User",
    "Worker",
    "parse_time",
]

#: The statuses of a job that has ended.
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _pick(cls: type, raw: dict[str, Any], **converted: Any) -> dict[str, Any]:
    """The fields of dataclass ``cls`` taken from ``raw`` (absent ones None), with
    ``converted`` overriding, and ``raw`` itself."""
    out = {f.name: raw.get(f.name) for f in fields(cls) if f.name != "raw"}
    out.update(converted)
    return {**out, "raw": raw}


@dataclass(frozen=True)
class ArrayInfo:
    """One array of a dataset: its shape and dtype (and, for labels, their range)."""

    shape: tuple[int, ...]
    dtype: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Dataset:
    """An uploaded dataset. Pass it as a job's data: ``train=(ds, "x", "y")``."""

    id: str
    name: str
    sha256: str
    size_bytes: int
    arrays: dict[str, ArrayInfo]
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Dataset:
        arrays = {a["name"]: ArrayInfo(tuple(a["shape"]), a["dtype"], a.get("min"), a.get("max"))
                  for a in raw.get("arrays", [])}
        return cls(**_pick(cls, raw, arrays=arrays, created_at=parse_time(raw.get("created_at"))))


@dataclass(frozen=True)
class Control:
    """A control on a job (adjust, freeze, thaw, pause, resume, cancel) and what became of
    it: ``status`` pending, applied (at ``applied_epoch`` / ``applied_step``) or rejected
    (``reason``)."""

    seq: int
    kind: str
    path: str
    hyper: dict[str, Any]
    status: str
    applied_epoch: int | None
    applied_step: int | None
    reason: str | None
    created_at: datetime | None
    resolved_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Control:
        return cls(**_pick(cls, raw, created_at=parse_time(raw.get("created_at")),
                           resolved_at=parse_time(raw.get("resolved_at"))))


def _covering(path: str, subtrees: Any) -> str | None:
    """The deepest of ``subtrees`` (dotted paths, '' the root) that contains ``path``."""
    inside = [p for p in subtrees if p == "" or path == p or path.startswith(p + ".")]
    return max(inside, key=len, default=None)


@dataclass(frozen=True)
class EpochRow:
    """One finished epoch: its losses and metrics, and the learning rate per subtree and
    the frozen paths in force during it."""

    epoch: int
    train_loss: float | None
    val_loss: float | None
    metrics: dict[str, float | None]
    learning_rates: dict[str, float]
    frozen: list[str]
    skipped_steps: int
    samples_per_s: float | None
    duration_s: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EpochRow:
        return cls(**_pick(cls, raw))

    def learning_rate(self, path: str = "") -> float | None:
        """The learning rate in force at ``path`` (e.g. ``"layers.enc"``). The row lists a
        rate once for a whole subtree that agrees (``{"": 0.001}``), so this is the rate of
        the deepest listed subtree containing ``path``; None if none does."""
        owner = _covering(path, self.learning_rates)
        return None if owner is None else self.learning_rates[owner]

    def is_frozen(self, path: str = "") -> bool:
        """Whether ``path`` was frozen: it lies under one of the frozen paths."""
        return _covering(path, self.frozen) is not None


class Epochs(list[EpochRow]):
    """A job's epoch rows, in order; ``to_pandas()`` makes a DataFrame of them."""

    def to_pandas(self) -> Any:
        """One row per epoch, indexed by epoch: the losses, each metric, ``lr[PATH]`` for
        each subtree's learning rate, ``frozen`` (paths joined by commas) and timings.
        Needs pandas (``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Epochs.to_pandas needs pandas: pip install pandas") from None
        rows = []
        for e in self:
            row: dict[str, Any] = {"epoch": e.epoch, "train_loss": e.train_loss,
                                   "val_loss": e.val_loss}
            row.update({k: v for k, v in e.metrics.items() if k not in row})
            row.update({f"lr[{p}]": v for p, v in e.learning_rates.items()})
            row.update({"frozen": ",".join(e.frozen), "skipped_steps": e.skipped_steps,
                        "samples_per_s": e.samples_per_s, "duration_s": e.duration_s})
            rows.append(row)
        return pd.DataFrame(rows).set_index("epoch") if rows else pd.DataFrame()


@dataclass(frozen=True)
class Steps:
    """Per-step losses: ``steps[i]`` is the first global step of point ``i``, averaged
    over ``stride`` steps when the server downsampled a long run, with the lowest and
    highest loss of those steps in ``min[i]`` and ``max[i]``; ``count`` is how many steps
    the server holds. ``min``, ``max`` and ``count`` are None from a server that does not
    send them."""

    steps: list[int]
    losses: list[float | None]
    stride: int
    min: list[float | None] | None
    max: list[float | None] | None
    count: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Steps:
        return cls(**_pick(cls, raw))


@dataclass(frozen=True)
class User:
    """Who a token belongs to."""

    name: str
    admin: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> User:
        return cls(**_pick(cls, raw))


@dataclass(frozen=True)
class Worker:
    """A worker process: its device, whether it is busy, idle or gone, and its job (shown
    only when the job is yours)."""

    id: str
    name: str
    device: dict[str, Any]
    status: str | None
    job_id: str | None
    created_at: datetime | None
    last_seen_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Worker:
        return cls(**_pick(cls, raw, created_at=parse_time(raw.get("created_at")),
                           last_seen_at=parse_time(raw.get("last_seen_at"))))


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job's stream: ``kind`` is steps, epoch, control or
    status; ``data`` its JSON; ``id`` where a reconnection resumes from."""

    kind: str
    data: dict[str, Any]
    id: str | None = None
