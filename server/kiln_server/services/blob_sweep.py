"""Blobs nobody refers to any more, removed: superseded checkpoints and weights, those of
deleted jobs, uploads whose write was refused.

A blob is kept while a row refers to it (``datasets.sha256``, ``jobs.checkpoint_sha256``,
``jobs.weights_sha256``) and for ``blob_sweep_grace_s`` after it was last written: an
upload goes into the store before the transaction that refers to it begins (queue.py),
and a commit of content the store already holds writes it again. So a blob old and
unreferenced when the sweep looks is one that no transaction is about to refer to, and
the store checks again, as it removes the blob, that nothing has written it since. Every
API replica sweeps (app.py); a blob two remove at once is removed once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, union
from sqlalchemy.orm import Session, sessionmaker

from ..blobs import BlobStore
from ..db import session_scope
from ..models import Dataset, Job, utcnow

__all__ = ["sweep"]

#: Blob hashes looked up per query.
_CHUNK = 500


def _referenced(session: Session, shas: list[str]) -> set[str]:
    return set(session.scalars(union(
        select(Dataset.sha256).where(Dataset.sha256.in_(shas)),
        select(Job.checkpoint_sha256).where(Job.checkpoint_sha256.in_(shas)),
        select(Job.weights_sha256).where(Job.weights_sha256.in_(shas)))))


def sweep(sessions: sessionmaker[Session], blobs: BlobStore, grace_s: float) -> list[str]:
    """Remove the blobs that no row refers to and that were last written over ``grace_s``
    ago; their hashes."""
    before = utcnow() - timedelta(seconds=grace_s)
    old = list(blobs.written_before(before))
    removed = []
    for first in range(0, len(old), _CHUNK):
        shas = old[first:first + _CHUNK]
        with session_scope(sessions) as session:
            kept = _referenced(session, shas)
        removed += [sha for sha in shas
                    if sha not in kept and blobs.delete_if_written_before(sha, before)]
    return removed
