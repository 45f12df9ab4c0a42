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

from sqlalchemy import Interval, bindparam, func, literal, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ..models import Job, utcnow
from ..wakeups import tell_owner, told

__all__ = ["STAMP_LOCK", "stamp_changed_jobs"]

#: The class of the PostgreSQL advisory locks that stampers take in turn, one per owner
#: ("kiln" as a number; the owner's id hashed is the lock's second key).
STAMP_LOCK = int.from_bytes(b"kiln", "big")
#: The smallest step between two stamps (timestamps carry microseconds).
_TICK = timedelta(microseconds=1)

# The statements, built once (building one costs more than running it), on the table,
# not the ORM's class (an ORM UPDATE costs several times the statement's own work).
_jobs = Job.__table__.c
_JOBS = bindparam("jobs", expanding=True)
_OWNERS = bindparam("owners", expanding=True)
#: The owners of the changed jobs, in order.
_OWNERS_OF = (select(_jobs.owner_id).where(_jobs.id.in_(_JOBS)).distinct()
              .order_by(_jobs.owner_id))
#: On PostgreSQL the same, each owner's lock taken as it is read: rows come out of the
#: sorted subquery in order, so two stampers take their locks in the same order and
#: never deadlock.
_owners = _OWNERS_OF.subquery()
_LOCK_OWNERS = select(_owners.c.owner_id, func.pg_advisory_xact_lock(
    literal_column(str(STAMP_LOCK)), func.hashtext(_owners.c.owner_id)))
_LATEST = select(func.max(_jobs.updated_at)).where(_jobs.owner_id.in_(_OWNERS))
#: On PostgreSQL the stamp is worked out by the UPDATE: now, or just after the owners'
#: latest, whichever is later. It is a statement of its own after the locks', so that it
#: reads the latest as of after them (each statement of a READ COMMITTED transaction
#: reads what committed before it began).
_STAMP_IN_SQL = (update(Job.__table__).where(_jobs.id.in_(_JOBS))
                 .values(updated_at=func.greatest(  # GREATEST passes over a NULL
                     _LATEST.scalar_subquery() + literal(_TICK, Interval()),
                     bindparam("now")))
                 .returning(_jobs.updated_at))
_STAMP = update(Job.__table__).where(_jobs.id.in_(_JOBS)).values(updated_at=bindparam("at"))


def stamp_changed_jobs(session: Session) -> None:
    """Stamp the jobs this transaction changed, and mark their owners' jobs streams to be
    woken at the commit (a ``before_commit`` hook of the writers' sessions, db.py)."""
    changed = sorted(told(session))
    if not changed:
        return
    session.flush()  # the changes go in before the stamp, under the same lock
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        owners = list(session.scalars(_LOCK_OWNERS, {"jobs": changed}))
        at = session.scalars(_STAMP_IN_SQL, {"jobs": changed, "owners": owners,
                                             "now": now}).first()
    else:  # one writer at a time: SQLite's lock is held already
        owners = list(session.scalars(_OWNERS_OF, {"jobs": changed}))
        last = session.scalar(_LATEST, {"owners": owners})
        at = now if last is None or now > last else last + _TICK
        session.execute(_STAMP, {"jobs": changed, "at": at})
    for job_id in changed:  # the session's copies, which handlers return, show the stamp
        job = session.identity_map.get(identity_key(Job, job_id))
        if job is not None:
            set_committed_value(job, "updated_at", at)
    for owner in owners:
        tell_owner(session, owner)
