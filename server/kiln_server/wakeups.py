"""Wake-ups for the server's held requests, rung when a transaction commits: a job's bell
for its controls long-poll, its news bell (:func:`news`) for its event streams, its
owner's bell (:func:`owner_news`) for the owner's jobs stream, and the queue's bell
(:data:`QUEUE`) for the claims held while the queue is empty.

A service that changes what a long-poll waits for (a new control, the job's lease
ended; a job queued) marks the job, or the queue, in its session with :func:`touch`
(which also wakes the job's event streams); one that writes only what the streams
report (step losses, epoch rows, progress, control results) with :func:`tell`. The
jobs so marked are the transaction's changed jobs (:func:`told`): services/stamps.py
stamps them before the commit and marks their owners' bells (:func:`tell_owner`).
:class:`Wakeups`, attached to the app's sessionmaker, rings the bell once that
transaction has committed, never before: a waiter woken earlier would read the database
without the new row and go back to sleep. A rolled-back transaction rings nothing.
Commits happen on threadpool threads; the bells are asyncio events on the server's
loop, reached with ``call_soon_threadsafe``.

A bell rung at a commit reaches the waiters of this process. On PostgreSQL the same keys
travel to the other API replicas by LISTEN/NOTIFY (pg_wakeups.py), so a control posted
through one replica wakes a long-poll held by another as promptly. SQLite has no such
channel: there a waiter also re-reads every ``sqlite_recheck_s`` (:meth:`Wakeups.wait`),
for what another process wrote to the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterable

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from .pg_wakeups import Carrier

__all__ = ["QUEUE", "Wakeups", "news", "owner_news", "tell", "tell_owner", "told", "touch"]

_TOUCHED = "kiln_touched_jobs"
_NEWS = "news:"
#: The queue's bell: rung when a job is queued (submitted, resumed, or requeued by the
#: reaper). Not a job id (those are hex).
QUEUE = "queue"


def news(job_id: str) -> str:
    """The key of the bell that a job's event streams wait on."""
    return _NEWS + job_id


def owner_news(user_id: str) -> str:
    """The key of the bell that a user's jobs stream waits on (not a job id: those are
    hex)."""
    return f"owner:{user_id}"


def touch(session: Session, job_id: str) -> None:
    """Ring ``job_id``'s bell (or the QUEUE's) when this session's transaction commits; a
    job's event streams hear it too."""
    keys = session.info.setdefault(_TOUCHED, set())
    keys.add(job_id)
    if job_id != QUEUE:
        keys.add(news(job_id))


def tell(session: Session, job_id: str) -> None:
    """Wake ``job_id``'s event streams (not its worker's long-poll) when this commits."""
    session.info.setdefault(_TOUCHED, set()).add(news(job_id))


def told(session: Session) -> set[str]:
    """The jobs whose event streams this session's transaction has news for so far."""
    return {key.removeprefix(_NEWS) for key in session.info.get(_TOUCHED, ())
            if key.startswith(_NEWS)}


def tell_owner(session: Session, user_id: str) -> None:
    """Wake the jobs stream of the user ``user_id`` when this commits."""
    session.info.setdefault(_TOUCHED, set()).add(owner_news(user_id))


class Wakeups:
    """Per-job bells for the waiters of one event loop.

    A waiter takes the job's bell *before* it reads the database, then waits on it: a
    commit that lands after the read rings that bell, and one that landed before is in
    what the read saw. Bells nobody holds are dropped (a weak dictionary).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bells: weakref.WeakValueDictionary[str, asyncio.Event] = \
            weakref.WeakValueDictionary()
        self._carrier: Carrier | None = None
        #: The longest a waiter waits before it reads again; None: only when woken.
        self.recheck_s: float | None = None
        self.closed = False

    def attach(self, sessions: sessionmaker[Session], loop: asyncio.AbstractEventLoop,
               sqlite_recheck_s: float) -> None:
        """Ring for the commits of ``sessions``' sessions, on ``loop``; on PostgreSQL,
        for the other replicas' commits too (and tell them of these)."""
        self._loop = loop
        event.listen(sessions, "after_commit", self._after_commit)
        event.listen(sessions, "after_rollback", self._forget)
        engine: Engine = sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            self.recheck_s = sqlite_recheck_s
            return
        self._carrier = Carrier(engine.url, self._ring_soon, self._ring_all_soon)
        # After services/stamps.py's hook (db.py registered it first): it adds the keys
        # of the owners' jobs streams.
        event.listen(sessions, "before_commit", self._publish)
        self._carrier.start()

    def detach(self, sessions: sessionmaker[Session]) -> None:
        event.remove(sessions, "after_commit", self._after_commit)
        event.remove(sessions, "after_rollback", self._forget)
        if self._carrier is not None:
            event.remove(sessions, "before_commit", self._publish)
            self._carrier.stop()
            self._carrier = None

    async def wait(self, bell: asyncio.Event, timeout: float) -> None:
        """Until ``bell`` rings or ``timeout`` seconds pass (at most ``recheck_s``); the
        waiter then reads again either way."""
        if self.recheck_s is not None:
            timeout = min(timeout, self.recheck_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bell.wait(), max(timeout, 0.0))

    def bell(self, job_id: str) -> asyncio.Event:
        """The job's bell (on the loop's thread), set at the next ring or at close."""
        bell = self._bells.get(job_id)
        if bell is None:
            bell = self._bells[job_id] = asyncio.Event()
        if self.closed:
            bell.set()
        return bell

    def close(self) -> None:
        """Wake every waiter, now and from now on: the server is shutting down, and a
        held long-poll would keep it waiting for the poll's whole time."""
        self.closed = True
        self._ring(list(self._bells.keys()))

    def _ring(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            bell = self._bells.pop(job_id, None)
            if bell is not None:
                bell.set()

    def _ring_soon(self, keys: Iterable[str]) -> None:
        """Ring ``keys`` from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._ring, keys)

    def _ring_all_soon(self) -> None:
        """Wake every waiter (from any thread): each reads again."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self._ring(list(self._bells.keys())))

    def _publish(self, session: Session) -> None:
        touched = session.info.get(_TOUCHED)
        if touched and self._carrier is not None:
            self._carrier.publish(session, touched)

    def _after_commit(self, session: Session) -> None:
        touched = session.info.pop(_TOUCHED, None)
        if touched:
            self._ring_soon(touched)

    @staticmethod
    def _forget(session: Session) -> None:
        session.info.pop(_TOUCHED, None)
