"""``jobs.updated_at``: stamped just before a transaction commits, in commit order.

A user's jobs stream (``GET /v1/jobs/events``) sends each of the user's jobs that changed
after its cursor, ``(updated_at, id)``, and moves the cursor past what it sent. So a
change must never commit with a stamp below one that a stream may already have passed.
A stamp taken when a row is written would allow it: transactions commit in another
order than they write (concurrently on PostgreSQL; on either, one may take its time
between the write and the commit). Here the jobs a transaction changed (those whose
streams it tells, wakeups.tell / touch) are stamped last, before it commits, under a
lock held until the commit: SQLite's one write lock (taken at BEGIN IMMEDIATE, db.py),
on PostgreSQL a transaction-level advisory lock that every stamper takes. Each stamp is
also after the latest stamp among the owners' jobs, so a user's stamps only grow, even
across replicas whose clocks disagree, and two transactions never share one (several
jobs of one transaction share its stamp; the id orders them).

On PostgreSQL the lock makes the end of every transaction that changes a job wait for
the end of the one before: a few milliseconds each (its commit), as SQLite's write lock
already does everywhere.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..models import Job, utcnow
from ..wakeups import tell_owner, told

__all__ = ["STAMP_LOCK", "stamp_changed_jobs"]

#: The PostgreSQL advisory lock that stampers take in turn ("kilnjob" as a number).
STAMP_LOCK = int.from_bytes(b"kilnjob", "big")
#: The smallest step between two stamps (timestamps carry microseconds).
_TICK = timedelta(microseconds=1)


def stamp_changed_jobs(session: Session) -> None:
    """Stamp the jobs this transaction changed, and mark their owners' jobs streams to be
    woken at the commit (a ``before_commit`` hook of the writers' sessions, db.py)."""
    changed = told(session)
    if not changed:
        return
    session.flush()  # the changes go in before the stamp, under the same lock
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(STAMP_LOCK)))
    owners = select(Job.owner_id).where(Job.id.in_(changed))
    last = session.scalar(select(func.max(Job.updated_at)).where(Job.owner_id.in_(owners)))
    now = utcnow()
    at = now if last is None or now > last else last + _TICK
    for owner in set(session.scalars(
            update(Job).where(Job.id.in_(changed)).values(updated_at=at)
            .returning(Job.owner_id), execution_options={"synchronize_session": "evaluate"})):
        tell_owner(session, owner)
