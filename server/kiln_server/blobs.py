"""A blob store: a directory of files named by the sha256 of their content.

Writes stream to a temporary file in the same directory and are renamed into place, so a
reader never sees half a blob and two writers of the same content agree.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["BlobStore", "Staging", "TooLargeError"]

class TooLargeError(ValueError):
    """A stream longer than the store's limit (nothing was kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than the limit of {limit:,} bytes")
        self.limit = limit


class Staging:
    """A new blob being written: hashed and counted as it goes; removed if abandoned."""

    def __init__(self, root: Path, limit: int) -> None:
        fd, name = tempfile.mkstemp(dir=root, prefix=".incoming-")
        self.path, self.limit, self.size = Path(name), limit, 0
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise TooLargeError(self.limit)
        self._digest.update(chunk)
        self._file.write(chunk)

    def close(self) -> None:
        self._file.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    """Content-addressed files under ``root`` (``root/ab/abcdef…``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise KeyError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def staging(self, limit: int) -> Staging:
        """A temporary file to write a new blob into, at most ``limit`` bytes."""
        return Staging(self.root, limit)

    def commit(self, staged: Staging) -> str:
        """Move a finished staging file into place under its hash; the hash."""
        dest = self.path(staged.sha256)
        dest.parent.mkdir(exist_ok=True)
        os.replace(staged.path, dest)
        return staged.sha256

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
