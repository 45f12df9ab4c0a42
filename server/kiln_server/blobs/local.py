"""The local blob store: a directory of files named by the sha256 of their content (the
embedded default, ``<data_dir>/blobs``, or a directory every replica mounts).

Writes stream to a temporary file in the same directory and are renamed into place, so a
reader never sees half a blob and two writers of the same content agree.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from starlette.responses import FileResponse, Response

from .staging import Staging
from .store import (
    CHUNK_BYTES,
    BlobMissingError,
    BlobStore,
    BlobStoreUnavailableError,
    BlobStream,
    check_mark,
    check_sha256,
    is_sha256,
)

__all__ = ["LocalBlobStore"]


def _mtime(path: Path) -> float:
    """When the file was last written (a commit renames a new file into place); +inf if
    it is gone."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return math.inf


class LocalBlobStore(BlobStore):
    """Content-addressed files under ``root`` (``root/ab/abcdef…``); marks in
    ``root/.marks/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = self.root.as_uri()

    def _path(self, sha256: str) -> Path:
        return self.root / check_sha256(sha256)[:2] / sha256

    def _mark(self, name: str) -> Path:
        return self.root / ".marks" / check_mark(name)

    def staging(self, limit: int) -> Staging:
        return Staging(self.root, limit)

    def commit(self, staged: Staging) -> str:
        dest = self._path(staged.sha256)
        try:
            dest.parent.mkdir(exist_ok=True)
            os.replace(staged.path, dest)
        except OSError as e:
            staged.discard()
            raise BlobStoreUnavailableError(f"cannot write to the blob store {self}: {e}") \
                from e
        return staged.sha256

    def exists(self, sha256: str) -> bool:
        try:
            return self._path(sha256).is_file()
        except BlobMissingError:
            return False

    def open(self, sha256: str) -> BlobStream:
        try:
            f = self._path(sha256).open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise BlobMissingError(sha256) from None
        except OSError as e:
            raise BlobStoreUnavailableError(f"cannot read the blob store {self}: {e}") from e
        return BlobStream(os.fstat(f.fileno()).st_size,
                          iter(functools.partial(f.read, CHUNK_BYTES), b""), f.close)

    def response(self, sha256: str, filename: str | None = None) -> Response:
        path = self._path(sha256)
        if not path.is_file():
            raise BlobMissingError(sha256)
        return FileResponse(path, media_type="application/octet-stream", filename=filename)

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def written_before(self, when: datetime) -> Iterator[str]:
        limit = when.timestamp()
        for path in self.root.glob("??/*"):
            if is_sha256(path.name) and _mtime(path) < limit:
                yield path.name

    def delete_if_written_before(self, sha256: str, when: datetime) -> bool:
        path = self._path(sha256)
        if _mtime(path) >= when.timestamp():  # written again since (or gone: +inf)
            return False
        path.unlink(missing_ok=True)
        return True

    def read_mark(self, name: str) -> bytes | None:
        try:
            return self._mark(name).read_bytes()
        except FileNotFoundError:
            return None

    def write_mark(self, name: str, data: bytes) -> None:
        path = self._mark(name)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def delete_mark(self, name: str) -> None:
        self._mark(name).unlink(missing_ok=True)
