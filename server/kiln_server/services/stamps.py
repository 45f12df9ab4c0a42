"""``jobs.updated_at``: stamped just before a transaction commits, in commit order.

A user's jobs stream (``GET /v1/jobs/events``) sends each of the user's jobs that changed
after its cursor, ``(updated_at, id)``, and moves the cursor past what it sent. So a
change must never commit with a stamp below one that a stream may already have passed.
A stamp taken when a row is written would allow it: transactions commit in another
order than they write (concurrently on PostgreSQL; on either, one may take its time
between the write and the commit). Here the jobs a transaction changed (those whose
streams it tells, wakeups.tell / touch) are stamped last, before it commits, under a
lock held until the commit: SQLite's one write lock (taken at BEGIN IMMEDIATE, db.py),
on PostgreSQL a transaction-level advisory lock per owner of those jobs (a stream
follows one user's jobs, so only one user's stamps need an order). Each stamp is also
after the latest stamp among the owners' jobs, so a user's stamps only grow, even across
replicas whose clocks disagree, and two transactions never share one (several jobs of
one transaction share its stamp; the id orders them).

On PostgreSQL the lock makes the end of a transaction that changes a user's job wait for
the end of the one before that changed one of theirs: a few milliseconds (its commit);
other users' writes go on beside it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..models import Job, utcnow
from ..wakeups import tell_owner, told

__all__ = ["STAMP_LOCK", "stamp_changed_jobs"]

#: The class of the PostgreSQL advisory locks that stampers take in turn, one per owner
#: ("kiln" as a number; the owner's id hashed is the lock's second key).
STAMP_LOCK = int.from_bytes(b"kiln", "big")
#: The smallest step between two stamps (timestamps carry microseconds).
_TICK = timedelta(microseconds=1)


def stamp_changed_jobs(session: Session) -> None:
    """Stamp the jobs this transaction changed, and mark their owners' jobs streams to be
    woken at the commit (a ``before_commit`` hook of the writers' sessions, db.py)."""
    changed = told(session)
    if not changed:
        return
    session.flush()  # the changes go in before the stamp, under the same lock
    owners = sorted(set(session.scalars(select(Job.owner_id).where(Job.id.in_(changed)))))
    if session.get_bind().dialect.name == "postgresql":
        for owner in owners:  # always in the same order: two stampers never deadlock
            session.execute(select(func.pg_advisory_xact_lock(STAMP_LOCK,
                                                              func.hashtext(owner))))
    last = session.scalar(select(func.max(Job.updated_at)).where(Job.owner_id.in_(owners)))
    now = utcnow()
    at = now if last is None or now > last else last + _TICK
    for owner in set(session.scalars(
            update(Job).where(Job.id.in_(changed)).values(updated_at=at)
            .returning(Job.owner_id), execution_options={"synchronize_session": "evaluate"})):
        tell_owner(session, owner)
