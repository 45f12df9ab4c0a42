"""A new blob being received: a local temporary file, hashed and counted as it is written.

Every backend stages locally: the size limit and the sha256 are known before anything
reaches the store, and a refused upload leaves nothing there.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["Staging", "TooLargeError"]


class TooLargeError(ValueError):
    """A stream longer than the store's limit (nothing was kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than the limit of {limit:,} bytes")
        self.limit = limit


class Staging:
    """A new blob being written under ``root``: hashed and counted as it goes; removed if
    abandoned."""

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
