"""A claimed job as the worker reads it: the claim's JSON (the server's ClaimedJob) parsed
once, into typed values, when the job is taken; and the controls that reach the worker
with it and after it (the server's ControlPublic).

Only what the worker uses is read, so a server that sends more is still understood.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

__all__ = ["HEARTBEAT_MIN_INTERVAL_S", "Claim", "Control", "ResumePoint"]

#: The shortest heartbeat interval, whatever the lease (clocks may disagree a little).
HEARTBEAT_MIN_INTERVAL_S = 0.1


@dataclasses.dataclass(frozen=True)
class Control:
    """An adjust, freeze or thaw on a subtree (``path``), numbered ``seq`` within the job;
    ``applied_step`` is where a previous holder of the job applied it, if it did."""

    seq: int
    kind: str  # as sent: an unknown kind is rejected when applied, not when read
    path: str
    hyper: dict[str, Any]
    status: str
    applied_step: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Control:
        return cls(seq=int(body["seq"]), kind=body["kind"], path=body["path"],
                   hyper=body.get("hyper") or {}, status=body["status"],
                   applied_step=body.get("applied_step"))


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a claimed job resumes from: its blob, and where it was taken."""

    sha256: str
    epoch: int
    step: int


@dataclasses.dataclass(frozen=True)
class Claim:
    """A job this worker holds: its spec, its datasets (id -> blob sha256), where to resume
    it, every control so far, its lease, and the server's cadences."""

    job_id: str
    lease: str
    lease_expires_at: datetime
    attempt: int
    spec: dict[str, Any]
    datasets: dict[str, str]
    checkpoint: ResumePoint | None
    controls: tuple[Control, ...]
    heartbeat_interval_s: float
    log_interval_s: float
    checkpoint_interval_s: float
    blob_retry_s: float = 0.0  # 0: one try

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Claim:
        """The claim's reply, parsed (KeyError / ValueError if it is not a claim)."""
        point = body.get("checkpoint")
        return cls(
            job_id=body["job_id"], lease=body["lease_token"],
            lease_expires_at=datetime.fromisoformat(body["lease_expires_at"]),
            attempt=int(body["attempt"]), spec=body["spec"],
            datasets={i: d["sha256"] for i, d in body["datasets"].items()},
            checkpoint=ResumePoint(point["sha256"], int(point["epoch"]), int(point["step"]))
            if point else None,
            controls=tuple(Control.from_json(c) for c in body["controls"]),
            heartbeat_interval_s=float(body["heartbeat_interval_s"]),
            log_interval_s=float(body["log_interval_s"]),
            checkpoint_interval_s=float(body["checkpoint_interval_s"]),
            blob_retry_s=float(body.get("blob_retry_s", 0.0)))

    @property
    def epochs(self) -> int:
        return int(self.spec["epochs"])

    @property
    def resumed_at(self) -> int:
        """The global step the job resumes after (0: from the start)."""
        return self.checkpoint.step if self.checkpoint else 0

    def heartbeat_interval(self) -> float:
        """The server's heartbeat interval, but at most a third of the lease left, so that
        a late heartbeat or two never costs the lease (a server configured with a lease
        shorter than its heartbeat interval would otherwise lose every job)."""
        lease_s = (self.lease_expires_at - datetime.now(UTC)).total_seconds()
        return max(HEARTBEAT_MIN_INTERVAL_S, min(self.heartbeat_interval_s, lease_s / 3))
