"""Workers as users see them: which exist, what each is doing, when each was last seen.

Every user sees the whole fleet (names and devices are no secret), but only an admin or
the job's owner learns which job a busy worker holds: a job id is the key to a job, and
another user's must not leak.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, NamedTuple

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ..models import Job, JobStatus, User, Worker, utcnow

__all__ = ["WorkerStatus", "WorkerView", "list_"]

WorkerStatus = Literal["busy", "idle", "gone"]


class WorkerView(NamedTuple):
    """A worker, what it is doing, and the job it holds (None when the viewer may not know)."""

    worker: Worker
    status: WorkerStatus
    job_id: str | None


def list_(session: Session, viewer: User, live_s: float,
          status: WorkerStatus | None = None) -> list[WorkerView]:
    """Every worker, last seen first: ``busy`` if it holds a running job, else ``idle`` if
    seen (claim or heartbeat) within ``live_s``, else ``gone``; only ``status`` if given."""
    cutoff = utcnow() - timedelta(seconds=live_s)
    q = (select(Worker, Job.id, Job.owner_id)
         .outerjoin(Job, and_(Job.worker_id == Worker.id, Job.status == JobStatus.running))
         .order_by(Worker.last_seen_at.desc(), Worker.id, Job.started_at.desc()))
    if status == "busy":
        q = q.where(Job.id.is_not(None))
    elif status == "idle":
        q = q.where(Job.id.is_(None), Worker.last_seen_at >= cutoff)
    elif status == "gone":
        q = q.where(Job.id.is_(None), Worker.last_seen_at < cutoff)
    out: list[WorkerView] = []
    seen: set[str] = set()
    for worker, job_id, owner_id in session.execute(q):
        if worker.id in seen:  # a worker that claimed again while holding a job: its newest
            continue
        seen.add(worker.id)
        state = "busy" if job_id else "idle" if worker.last_seen_at >= cutoff else "gone"
        shown = job_id if viewer.is_admin or owner_id == viewer.id else None
        out.append(WorkerView(worker, state, shown))
    return out
