"""Datasets a worker has loaded, kept in memory for the next job on the same data.

Jobs come in runs on one dataset (a sweep, a resubmission, a job resumed after a pause),
and loading a dataset again (reading the cached blob, parsing the .npz) costs time that
grows with its size, all of it before the first step. The arrays are read-only, so a
job that wrote into its data would fail at once instead of changing the next job's.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_MEMORY_MB", "LoadedDatasets"]

#: The default bound on the loaded datasets a worker keeps (KILN_WORKER_DATASET_MEMORY_MB).
DEFAULT_MEMORY_MB = 1024

Arrays = dict[str, np.ndarray]


class LoadedDatasets:
    """The arrays of recently used datasets by sha256; the least recently used are dropped
    once the kept ones hold more than ``max_bytes`` (0 keeps none). Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0; got {max_bytes}")
        self.max_bytes = max_bytes
        self._kept: collections.OrderedDict[str, tuple[Arrays, int]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays kept now."""
        with self._lock:
            return sum(size for _, size in self._kept.values())

    def __contains__(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._kept

    def get(self, sha256: str, load: Callable[[], Arrays]) -> Arrays:
        """The dataset's arrays: kept ones, or ``load()``'s (then kept if they fit)."""
        with self._lock:
            if sha256 in self._kept:
                self._kept.move_to_end(sha256)
                return self._kept[sha256][0]
        arrays = load()
        for a in arrays.values():
            a.flags.writeable = False
        size = sum(a.nbytes for a in arrays.values())
        if size <= self.max_bytes:
            with self._lock:
                self._kept[sha256] = (arrays, size)
                total = sum(s for _, s in self._kept.values())
                while total > self.max_bytes:
                    _, (_, dropped) = self._kept.popitem(last=False)
                    total -= dropped
        return arrays
