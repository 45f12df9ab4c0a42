"""Numbers for /metrics: jobs by status, queue depth, live workers, recent steps per second."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import Job, JobStatus, StepBatch, Worker, utcnow

__all__ = ["STEPS_WINDOW_S", "ping", "snapshot"]

#: Steps per second are counted over the step batches posted in this window.
STEPS_WINDOW_S = 60.0


def snapshot(session: Session, worker_alive_s: float) -> dict[str, object]:
    """Current counts; a worker is live if seen within ``worker_alive_s``."""
    now = utcnow()
    by_status = {s.value: 0 for s in JobStatus}
    for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        by_status[JobStatus(status).value] = n
    workers = session.scalar(select(func.count()).where(
        Worker.last_seen_at >= now - timedelta(seconds=worker_alive_s)))
    recent = session.scalars(select(StepBatch.losses).where(
        StepBatch.created_at >= now - timedelta(seconds=STEPS_WINDOW_S)))
    steps = sum(len(b) for b in recent)
    return {"jobs": by_status, "queue_depth": by_status["queued"], "workers": workers,
            "steps_per_s": steps / STEPS_WINDOW_S}


def ping(session: Session) -> None:
    """A trivial query: raises if the database does not answer."""
    session.execute(select(1))
