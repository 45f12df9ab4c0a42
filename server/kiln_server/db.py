"""The database engine and sessions: SQLite (WAL, foreign keys on) or PostgreSQL, one code.

SQLite transactions begin with ``BEGIN IMMEDIATE``: a transaction that reads and then
writes would otherwise fail with "database is locked" when another writer committed in
between (WAL cannot upgrade a stale read snapshot), rather than waiting its turn.
Writers queue on the busy timeout instead. A transaction that only reads (every one of
a ``read_only`` sessionmaker's sessions: GET requests, authentication's lookups, the
event streams' and long-polls' reads) begins deferred: it reads a WAL snapshot and never
waits for, nor holds up, the writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from .services.stamps import stamp_changed_jobs

__all__ = ["make_engine", "make_sessionmaker", "session_scope", "setup_lock"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The PostgreSQL advisory lock under which a process migrates the database and seeds
#: its admin ("klns" as a number).
SETUP_LOCK = int.from_bytes(b"klns", "big")
#: The execution option that marks a read-only transaction (a deferred BEGIN on SQLite).
_READ_ONLY = "kiln_read_only"


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" hook issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine for ``url``; ``postgresql://`` URLs use psycopg 3, keeping ``pool_size``
    connections open, and opening as many again while more threads need one.

    A pooled connection is not pinged before each use (a round trip on every request):
    a connection found dead on use invalidates the whole pool, and its request is a 503
    (errors.py) that the client tries again, on new connections."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    engine = create_engine(url, connect_args={"check_same_thread": False,
                                              "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(conn: Any) -> None:
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (handlers return them); with
    ``read_only``, sessions whose every transaction only reads (see the module's doc).
    A writer's commit first stamps the jobs it changed (services/stamps.py)."""
    if read_only:
        return sessionmaker(engine.execution_options(**{_READ_ONLY: True}),
                            expire_on_commit=False)
    sessions = sessionmaker(engine, expire_on_commit=False)
    event.listen(sessions, "before_commit", stamp_changed_jobs)
    return sessions


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """Take turns with the other processes setting up the same database: API replicas
    that start together would otherwise run the same migration, or create the same
    admin token, at once, and all but one fail. On PostgreSQL a session-level advisory
    lock; SQLite serves one machine, and its writers queue on its lock anyway."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(select(func.pg_advisory_lock(SETUP_LOCK)))
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(SETUP_LOCK)))


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with factory() as session, session.begin():
        yield session
