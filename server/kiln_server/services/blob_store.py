"""The one blob store that every replica of a database shares, checked as each starts.

A dataset uploaded through one replica is fetched by a worker through another, so the
replicas of one database must read and write the same blob store. One given a store of
its own (its own ``--data-dir``, another bucket) would take uploads that the others
cannot serve: it refuses to start instead, saying why.

The database names its store by a random id (table ``blob_store``, one row), and the
store holds a mark by that id. The first replica writes its mark into its store, then
the row; every later replica finds the row and checks that its store holds that mark.
Two first replicas starting at once each write a mark of their own before they insert
the row: one insert wins (on PostgreSQL the other waits for it to commit, then fails on
the primary key), and both then check the winner's mark, which a shared store holds
and a store of one's own does not. A loser removes its own mark.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..blobs import BlobStore, BlobStoreUnavailableError, open_store
from ..db import session_scope
from ..models import BlobStoreMark, new_id
from ..settings import Settings

__all__ = ["BlobStoreStartupError", "check_shared", "open_shared"]


class BlobStoreStartupError(RuntimeError):
    """This replica may not serve with its blob store (the message says why and what to do)."""


def _mark(store_id: str) -> str:
    return f"store-{store_id}"


def _named(sessions: sessionmaker[Session]) -> str | None:
    with session_scope(sessions) as session:
        return session.scalar(select(BlobStoreMark.store_id).where(BlobStoreMark.id == 1))


def check_shared(sessions: sessionmaker[Session], store: BlobStore) -> str:
    """The id of the database's blob store, once ``store`` is known to be it (the first
    replica makes it so); BlobStoreStartupError if it is not, or cannot be read."""
    try:
        named = _named(sessions)
        if named is None:
            mine = new_id()
            store.write_mark(_mark(mine), f"kiln blob store {mine}\n".encode())
            try:
                with session_scope(sessions) as session:
                    session.add(BlobStoreMark(id=1, store_id=mine))
            except IntegrityError:  # another replica's insert came first: its store it is
                pass
            named = _named(sessions)
            if named != mine:
                store.delete_mark(_mark(mine))
        held = store.read_mark(_mark(named)) is not None
    except BlobStoreUnavailableError as e:
        raise BlobStoreStartupError(f"KILN_BLOB_STORE: cannot use the blob store: {e}") \
            from e
    if not held:
        raise BlobStoreStartupError(
            f"KILN_BLOB_STORE: the blob store {store} is not the one this database's "
            f"replicas share: it lacks the mark .marks/{_mark(named)} that the database "
            f"names (the first replica to start wrote it into its store). Give every replica "
            f"of one database the same blob store: KILN_BLOB_STORE=s3://bucket/prefix, or "
            f"file:///a/directory/every/replica/mounts, not a --data-dir of its own. (If "
            f"the store was replaced on purpose, delete the row of the table blob_store, "
            f"and the next replica to start adopts its store.)")
    return named


def open_shared(settings: Settings, sessions: sessionmaker[Session]) -> BlobStore:
    """The blob store ``settings`` name, checked to be the database's (see the module)."""
    store = open_store(settings)
    check_shared(sessions, store)
    return store
