"""``train`` (Flux's ``train!``) and ``Trainer``, a training loop driven step by step.

``train(loss, model, data, opt_state)`` runs one epoch: for each batch ``(x, y)`` it
takes ``withgradient(m -> loss(m, x, y), model)`` and updates. A non-finite loss skips
its update with a warning naming the batch; ``on_nonfinite="raise"`` stops instead, as
Flux's DomainError does, and ``max_nonfinite=N`` stops after N such losses in a row.

``Trainer`` holds the model, its optimiser state, a DataLoader, schedules bound to
subtrees and the stop criteria. ``step()`` runs one batch; controls (``adjust``,
``freeze``, ``thaw``, ``schedule``) called between steps, directly or from the
``on_step`` / ``on_epoch`` hooks, take effect at the next step. Each epoch leaves an
:class:`EpochRecord`: mean training loss, validation loss and metrics, learning rate per
subtree, frozen paths, skipped steps and samples per second.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._backend import to_float
from ._grad import withgradient
from ._onehot import onecold
from ._ops import data as unwrap
from ._spec import SpecError, check_keys, get_int
from .controls import Binding, Controls
from .data import DataLoader
from .optimisers import update
from .schedules import ReduceOnPlateau, Schedule

__all__ = [
    "EpochRecord",
    "NonFiniteLossError",
    "StepRecord",
    "TrainResult",
    "Trainer",
    "accuracy",
    "train",
]

logger = logging.getLogger(__name__)

#: What a non-finite loss does: skip that update (with a warning), or stop training.
NONFINITE_POLICIES = ("skip", "raise")

#: Batch size for validation data given as a tuple of arrays (bounds evaluation memory).
VALIDATION_BATCH = 1024


class NonFiniteLossError(ArithmeticError):
    """The loss was NaN or infinite and the policy says stop (Flux's DomainError)."""

    def __init__(self, message: str, *, value: float, batch: int, epoch: int) -> None:
        super().__init__(message)
        self.value, self.batch, self.epoch = value, batch, epoch


class _Guard:
    """Applies the non-finite policy, counting non-finite losses in a row."""

    def __init__(self, on_nonfinite: str, max_nonfinite: int | None) -> None:
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {list(NONFINITE_POLICIES)}; got "
                             f"{on_nonfinite!r}")
        if max_nonfinite is not None and (not isinstance(max_nonfinite, int) or
                                          isinstance(max_nonfinite, bool) or max_nonfinite < 1):
            raise ValueError(f"max_nonfinite must be a positive integer or None; got "
                             f"{max_nonfinite!r}")
        self.policy, self.limit, self.in_a_row = on_nonfinite, max_nonfinite, 0

    def finite(self, value: float, batch: int, epoch: int) -> bool:
        """True to go on with the update; False to skip it; raises to stop."""
        if math.isfinite(value):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        where = f"batch {batch} of epoch {epoch}"
        if self.policy == "raise":
            raise NonFiniteLossError(f"loss is {value} on {where}; stopping "
                                     "(on_nonfinite='raise')", value=value, batch=batch,
                                     epoch=epoch)
        if self.limit is not None and self.in_a_row >= self.limit:
            raise NonFiniteLossError(f"{self.in_a_row} non-finite losses in a row, the last "
                                     f"{value} on {where}; stopping (max_nonfinite="
                                     f"{self.limit})", value=value, batch=batch, epoch=epoch)
        logger.warning("loss is %s on %s; skipping this update", value, where)
        return False


def _gradient(loss: Callable[..., Any], model: Any, batch: Any) -> tuple[float, Any]:
    """``(loss value, gradient of the model)`` for one batch; a tuple batch is splatted."""
    args = batch if isinstance(batch, tuple) else (batch,)
    value, grads = withgradient(lambda m: loss(m, *args), model)
    return to_float(value), grads[0]


@dataclass
class TrainResult:
    """What one call of :func:`train` saw: every batch's loss and the skipped batches."""

    losses: list[float]
    skipped: list[int]

    @property
    def mean_loss(self) -> float:
        """The mean of the finite losses (NaN when there were none)."""
        ok = [v for v in self.losses if math.isfinite(v)]
        return sum(ok) / len(ok) if ok else math.nan


def train(loss: Callable[..., Any], model: Any, data: Iterable[Any], opt_state: Any, *,
          on_nonfinite: str = "skip", max_nonfinite: int | None = None,
          epoch: int = 1) -> TrainResult:
    """One epoch over ``data``: ``loss(model, x, y)`` per batch, then ``update``.

    ``data`` yields batches (a tuple is splatted into ``loss``). A non-finite loss skips
    its update and logs a warning naming the batch (0-based) and ``epoch``; with
    ``on_nonfinite="raise"``, or once ``max_nonfinite`` non-finite losses came in a row,
    NonFiniteLossError is raised instead, before any update from that batch.
    """
    if not callable(loss):
        raise TypeError(f"train: loss must be callable as loss(model, x, y); got "
                        f"{type(loss).__name__}")
    guard = _Guard(on_nonfinite, max_nonfinite)
    result = TrainResult([], [])
    for i, batch in enumerate(data):
        value, grad = _gradient(loss, model, batch)
        result.losses.append(value)
        if guard.finite(value, i, epoch):
            update(opt_state, model, grad)
        else:
            result.skipped.append(i)
    return result


def accuracy(yhat: Any, y: Any) -> float:
    """The fraction of rows whose argmax matches ``y``: class indices shaped like ``yhat``
    without its last axis, or one-hot / probability rows shaped like ``yhat``."""
    yhat = unwrap(yhat)
    y = unwrap(y)
    if tuple(y.shape) == tuple(yhat.shape):
        y = onecold(y)
    elif tuple(y.shape) != tuple(yhat.shape[:-1]):
        raise ValueError(f"accuracy: y must be class indices of shape {tuple(yhat.shape[:-1])} "
                         f"or one-hot rows of shape {tuple(yhat.shape)}; got shape "
                         f"{tuple(y.shape)}")
    return to_float((onecold(yhat) == y).mean())


def _jsonable(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)


@dataclass
class EpochRecord:
    """One epoch, as the service logs it.

    ``metrics`` holds ``train_loss`` (the mean of the epoch's finite batch losses) and,
    with validation, ``val_loss`` and ``val_<metric>``. ``hyper`` maps each reported
    hyper-parameter (``eta`` and any scheduled one) to its value per subtree at the end of
    the epoch; ``frozen`` lists the frozen subtrees; ``skipped`` the batches whose loss
    was not finite.
    """

    epoch: int
    steps: int
    metrics: dict[str, float]
    skipped: list[int]
    hyper: dict[str, dict[str, Any]]
    frozen: list[str]
    seconds: float
    samples_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (non-finite numbers as the strings "nan", "inf", "-inf")."""
        out = asdict(self)
        out["metrics"] = {k: _jsonable(v) for k, v in self.metrics.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "metrics": {k: float(v) for k, v in d["metrics"].items()}})


@dataclass
class StepRecord:
    """One step: its epoch, global step number, batch within the epoch, loss, whether the
    update was skipped, and the epoch's record when this step ended an epoch."""

    epoch: int
    step: int
    batch: int
    loss: float
    skipped: bool
    epoch_end: EpochRecord | None = None


@dataclass
class _Running:
    """The sums an epoch in progress keeps for its record."""

    loss_sum: float = 0.0
    finite: int = 0
    skipped: list[int] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple) else \
        next(iter(batch.values())) if isinstance(batch, Mapping) else batch
    return int(first.shape[0])


Hook = Callable[["Trainer", Any], None]
Criterion = Callable[[EpochRecord], bool]


class Trainer:
    """A training loop to drive step by step, with controls and hooks between steps.

    ``Trainer(loss, model, opt_state, loader, validation=(xv, yv),
    metrics={"accuracy": accuracy}, schedules=[("layers.enc", CosAnneal(...))],
    stop=[lambda rec: rec.metrics["val_accuracy"] >= 0.95])``

    ``loss(m, x, y)`` is the training loss; ``metrics`` maps names to ``fn(yhat, y)``
    (``accuracy`` or any loss ``fn(yhat, y)``), evaluated on the validation set as
    ``val_<name>``. ``schedules`` are ``(path, schedule)`` or ``(path, schedule, field)``.
    ``stop`` criteria get each epoch's record; the first True stops training. Hooks are
    called as ``hook(trainer, record)`` after each step (``on_step``, with the epoch's
    record already made when the step ended an epoch) and each epoch (``on_epoch``).
    """

    def __init__(self, loss: Callable[..., Any], model: Any, opt_state: Any, data: DataLoader,
                 *, validation: DataLoader | tuple | None = None,
                 metrics: Mapping[str, Callable[[Any, Any], Any]] | None = None,
                 schedules: Iterable[tuple] = (), stop: Iterable[Criterion] = (),
                 on_nonfinite: str = "skip", max_nonfinite: int | None = None,
                 on_step: Iterable[Hook] = (), on_epoch: Iterable[Hook] = ()) -> None:
        if not callable(loss):
            raise TypeError(f"Trainer: loss must be callable as loss(model, x, y); got "
                            f"{type(loss).__name__}")
        if not isinstance(data, DataLoader):
            raise TypeError("Trainer: data must be a DataLoader, which keeps the position "
                            "within an epoch for checkpoints; wrap arrays as "
                            f"DataLoader((x, y), batchsize=32); got {type(data).__name__}")
        if isinstance(validation, tuple):
            validation = DataLoader(validation, batchsize=VALIDATION_BATCH)
        if validation is not None and not isinstance(validation, DataLoader):
            raise TypeError(f"Trainer: validation must be a tuple (x, y) or a DataLoader; got "
                            f"{type(validation).__name__}")
        self.metrics = dict(metrics or {})
        for name, fn in self.metrics.items():
            if not callable(fn):
                raise TypeError(f"Trainer: metric {name!r} must be callable as fn(yhat, y); "
                                f"got {type(fn).__name__}")
        self.loss, self.model, self.opt_state = loss, model, opt_state
        self.loader, self.validation = data, validation
        self.controls = Controls(opt_state)
        self.stop = list(stop)
        self.on_step, self.on_epoch = list(on_step), list(on_epoch)
        self._guard = _Guard(on_nonfinite, max_nonfinite)
        self.epoch = 0       # the epoch under way, or the last one finished
        self.steps = 0       # steps taken, all epochs
        self.history: list[EpochRecord] = []
        self.stopped: str | None = None
        self._open = False   # an epoch is under way
        self._batch = 0      # batches taken in it
        self._batches: Iterator[Any] | None = None
        self._run = _Running()
        for entry in schedules:
            self.schedule(*entry)

    # ------------------------------------------------------------------ controls

    def metric_names(self) -> list[str]:
        """The keys of each epoch's ``metrics``."""
        names = ["train_loss"]
        if self.validation is not None:
            names += ["val_loss", *(f"val_{k}" for k in self.metrics)]
        return names

    def schedule(self, path: str, schedule: Schedule, field: str = "eta") -> Binding:
        """Let ``schedule`` drive ``field`` of the subtree at ``path`` from the next step."""
        if isinstance(schedule, ReduceOnPlateau) and schedule.metric not in self.metric_names():
            raise ValueError(f"ReduceOnPlateau watches {schedule.metric!r}, which this trainer "
                             f"does not record; it records {self.metric_names()}")
        return self.controls.bind(path, schedule, field, steps_done=self.steps)

    def adjust(self, path: str, eta: float | None = None, /, **hyper: Any) -> None:
        """Change hyper-parameters under ``path`` from the next step; replaces any schedule
        of the same fields there."""
        self.controls.adjust(path, eta, **hyper)

    def freeze(self, path: str) -> None:
        """Stop updating the subtree at ``path`` from the next step."""
        self.controls.freeze(path)

    def thaw(self, path: str) -> None:
        """Resume updating the subtree at ``path``."""
        self.controls.thaw(path)

    def request_stop(self, reason: str) -> None:
        """Stop after the current step (a hook or the worker may call this)."""
        self.stopped = reason

    # ------------------------------------------------------------------ running

    def step(self) -> StepRecord:
        """Train on the next batch, starting an epoch when none is under way."""
        if self.stopped is not None:
            raise RuntimeError(f"Trainer: training has stopped ({self.stopped})")
        t0 = time.perf_counter()
        if not self._open:
            self.epoch += 1
            self._open, self._batch, self._run = True, 0, _Running()
        if self._batches is None:
            self._batches = iter(self.loader)
        batch = next(self._batches)
        i = self._batch
        self.controls.apply(self.steps + 1)
        value, grad = _gradient(self.loss, self.model, batch)
        try:
            finite = self._guard.finite(value, i, self.epoch)
        except NonFiniteLossError as e:
            self.stopped = str(e)
            raise
        if finite:
            update(self.opt_state, self.model, grad)
            self._run.loss_sum += value
            self._run.finite += 1
        else:
            self._run.skipped.append(i)
        self.steps += 1
        self._batch += 1
        self._run.samples += _batch_size(batch)
        self._run.seconds += time.perf_counter() - t0
        record = StepRecord(self.epoch, self.steps, i, value, not finite)
        if self._batch == len(self.loader):
            record.epoch_end = self._end_epoch()
        for hook in self.on_step:
            hook(self, record)
        if record.epoch_end is not None:
            for hook in self.on_epoch:
                hook(self, record.epoch_end)
        return record

    def evaluate(self) -> dict[str, float]:
        """``val_loss`` and ``val_<metric>`` over the validation set (weighted by batch)."""
        if self.validation is None:
            return {}
        sums = dict.fromkeys(["val_loss", *(f"val_{k}" for k in self.metrics)], 0.0)
        n = 0
        for batch in self.validation:
            x, y = batch
            size = _batch_size(batch)
            sums["val_loss"] += to_float(self.loss(self.model, x, y)) * size
            if self.metrics:
                yhat = self.model(x)
                for k, fn in self.metrics.items():
                    sums[f"val_{k}"] += to_float(fn(yhat, y)) * size
            n += size
        return {k: v / n for k, v in sums.items()}

    def _end_epoch(self) -> EpochRecord:
        run = self._run
        metrics = {"train_loss": run.loss_sum / run.finite if run.finite else math.nan}
        metrics.update(self.evaluate())
        fields = ["eta", *(b.field for b in self.controls.bindings if b.field != "eta")]
        record = EpochRecord(
            epoch=self.epoch, steps=self.steps, metrics=metrics, skipped=list(run.skipped),
            hyper={f: self.controls.hyper(f) for f in dict.fromkeys(fields)},
            frozen=self.controls.frozen(), seconds=run.seconds,
            samples_per_s=run.samples / run.seconds if run.seconds > 0 else math.inf)
        self.history.append(record)
        self._open, self._batches = False, None
        logger.info("epoch %d: %s", self.epoch,
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        for b in self.controls.observe(metrics):
            logger.info("epoch %d: %s under %r reduced to %g", self.epoch, b.field,
                        b.path, b.schedule.value)
        hits = [i for i, criterion in enumerate(self.stop) if criterion(record)]
        if hits and self.stopped is None:
            self.stopped = f"stop criterion {hits[0]} met after epoch {self.epoch}"
        return record

    def run_epoch(self) -> EpochRecord | None:
        """Steps until the epoch under way ends; its record, or None if stopped first."""
        while self.stopped is None:
            record = self.step()
            if record.epoch_end is not None:
                return record.epoch_end
        return None

    def run(self, epochs: int | None = None) -> list[EpochRecord]:
        """Whole epochs until a stop criterion holds (or ``epochs`` of them); their records."""
        done: list[EpochRecord] = []
        while self.stopped is None and (epochs is None or len(done) < epochs):
            record = self.run_epoch()
            if record is not None:
                done.append(record)
        return done

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Everything but arrays that a checkpoint needs to go on exactly, as JSON."""
        stop = []
        for criterion in self.stop:
            get = getattr(criterion, "state", None)
            stop.append(get() if callable(get) else None)
        run = self._run
        return {
            "epoch": self.epoch, "steps": self.steps, "open": self._open, "batch": self._batch,
            "running": {"loss_sum": _jsonable(run.loss_sum), "finite": run.finite,
                        "skipped": list(run.skipped), "samples": run.samples,
                        "seconds": run.seconds},
            "nonfinite_in_a_row": self._guard.in_a_row, "stopped": self.stopped,
            "history": [r.to_dict() for r in self.history], "stop": stop,
            "controls": self.controls.state(), "loader": self.loader.state(),
        }

    def load_state(self, state: Any, path: str = "trainer") -> None:
        """Restore :meth:`state` into a trainer built like the one that saved it, after
        its model and optimiser state have been restored."""
        keys = ("epoch", "steps", "open", "batch", "running", "nonfinite_in_a_row", "stopped",
                "history", "stop", "controls", "loader")
        check_keys(state, path, set(keys), keys)
        if len(state["stop"]) != len(self.stop):
            raise SpecError(f"{path}.stop", f"the checkpoint has {len(state['stop'])} stop "
                            f"criteria, this trainer {len(self.stop)}")
        self.loader.load_state(state["loader"], f"{path}.loader")
        self.controls.load_state(state["controls"], f"{path}.controls")
        for i, (criterion, saved) in enumerate(zip(self.stop, state["stop"])):
            if saved is not None:
                criterion.load_state(saved, f"{path}.stop[{i}]")
        run = state["running"]
        self._run = _Running(float(run["loss_sum"]), run["finite"], list(run["skipped"]),
                             run["samples"], run["seconds"])
        self.epoch = get_int(state, "epoch", path, minimum=0)
        self.steps = get_int(state, "steps", path, minimum=0)
        self._batch = get_int(state, "batch", path, minimum=0)
        self._open = bool(state["open"])
        self._guard.in_a_row = get_int(state, "nonfinite_in_a_row", path, minimum=0)
        self.stopped = state["stopped"]
        self.history = [EpochRecord.from_dict(r) for r in state["history"]]
        self._batches = None
