"""Keep freed memory in the heap (glibc only), called once when kiln_engine is imported.

A training step allocates and frees the same large arrays every time. By default glibc
serves blocks above 128 KiB-32 MiB with mmap and returns freed memory at the top of the
heap to the OS, so each step faults every page in again: measured on a LeNet step, ~4,000
page faults and a 1.7× slower numpy step. Raising the mmap and trim thresholds keeps that
memory in the heap for reuse. This changes the whole process (PyTorch in the same process
benefits too); it is skipped where the C library is not glibc, and where the user set
``glibc.malloc`` tunables in ``GLIBC_TUNABLES`` themselves.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc refuses an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2 on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap beyond this goes back to the OS.
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True if both were set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
