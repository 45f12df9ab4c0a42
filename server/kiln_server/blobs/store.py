"""What every blob store does, and how it fails.

Blobs (datasets, checkpoints, weights) are named by the sha256 of their content, so two
writers of the same bytes agree and a blob never changes once stored. A new blob is
staged locally (staging.py), then committed to the store under its hash; a read streams
it back. Besides blobs a store keeps a few small *marks* (named objects outside the
blob namespace): the one the replicas of a database check at startup
(services/blob_store.py).

A blob the store lacks is :class:`BlobMissingError` (a 404); a store that does not answer
is :class:`BlobStoreUnavailableError` (a 503): either may pass (another replica, a retry),
so neither is ever a 500, and a worker that meets one does not fail its job for good.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from starlette.responses import Response, StreamingResponse

from .staging import Staging

__all__ = ["CHUNK_BYTES", "BlobMissingError", "BlobStore", "BlobStoreUnavailableError",
           "BlobStream", "check_mark", "check_sha256"]

#: Bytes per chunk when a blob is streamed out.
CHUNK_BYTES = 1 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MARK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BlobMissingError(LookupError):
    """The store has no blob by this hash (or it is not a sha256 at all)."""

    def __init__(self, sha256: str, what: str = "blob") -> None:
        super().__init__(f"{what} {sha256!r} is not in this server's blob store (a replica "
                         f"with a blob store of its own kept it, or it was removed)")
        self.sha256 = sha256


class BlobStoreUnavailableError(RuntimeError):
    """The store did not answer, or refused (unreachable, no credentials, no bucket)."""


def is_sha256(name: str) -> bool:
    """Whether ``name`` is a lowercase hex sha256: a blob's name, in a store's listing."""
    return _SHA256.match(name) is not None


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is a lowercase hex sha256 (BlobMissingError if not: no such blob)."""
    if not is_sha256(sha256):
        raise BlobMissingError(sha256)
    return sha256


def check_mark(name: str) -> str:
    if not _MARK.match(name):
        raise ValueError(f"not a mark's name: {name!r}")
    return name


@dataclass
class BlobStream:
    """An opened blob: its size, and its bytes in chunks (the source is closed once they
    are all read, or when the response that sends them ends)."""

    size: int
    chunks: Iterator[bytes]
    close: Callable[[], None]

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.chunks
        finally:
            self.close()


class BlobStore(ABC):
    """Content-addressed blobs. ``location`` names the store as KILN_BLOB_STORE would."""

    location: str

    def __str__(self) -> str:
        return self.location

    @abstractmethod
    def staging(self, limit: int) -> Staging:
        """A local temporary file to write a new blob into, at most ``limit`` bytes."""

    @abstractmethod
    def commit(self, staged: Staging) -> str:
        """Store a finished staging file under its hash (it is gone afterwards); the hash."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def open(self, sha256: str) -> BlobStream:
        """The blob, to stream (BlobMissingError if the store lacks it)."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove a blob (nothing happens if it is not there)."""

    @abstractmethod
    def written_before(self, when: datetime) -> Iterator[str]:
        """The sha256 of every blob last written before ``when`` (a commit of content the
        store holds already writes it again)."""

    @abstractmethod
    def delete_if_written_before(self, sha256: str, when: datetime) -> bool:
        """Remove the blob if it was last written before ``when``, not if a commit wrote
        it since; whether it was removed."""

    @abstractmethod
    def read_mark(self, name: str) -> bytes | None:
        """A mark's content; None if the store has no such mark."""

    @abstractmethod
    def write_mark(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def delete_mark(self, name: str) -> None: ...

    def response(self, sha256: str, filename: str | None = None) -> Response:
        """The blob as an HTTP response (octet-stream, its length known; an attachment
        named ``filename`` if given). BlobMissingError now, before anything is sent."""
        stream = self.open(sha256)
        headers = {"Content-Length": str(stream.size)}
        if filename is not None:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return StreamingResponse(iter(stream), media_type="application/octet-stream",
                                 headers=headers)
