"""The glibc malloc tuning done at import: freed arrays are reused without page faults, and a
user's own GLIBC_TUNABLES for malloc are respected. Each case runs in a fresh process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Ten times, allocates arrays of 1-16 MiB (46 MiB in all) and frees them, as a training step
# does; prints whether Kiln tuned malloc and the page faults of those ten rounds.
PROBE = """
import resource, numpy as np
import kiln_engine
from kiln_engine._malloc import keep_freed_memory
def step():
    arrays = [np.ones(mib << 18, np.float32) for mib in (1, 2, 4, 8, 16, 3, 12)]
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@glibc_only
def test_freed_memory_is_reused_without_page_faults():
    tuned, faults = probe({"GLIBC_TUNABLES": ""})
    assert tuned == "True"
    assert faults < 1000  # 46 MiB is 11,776 pages a round: none is faulted in again


@glibc_only
def test_users_own_malloc_tunables_are_left_alone():
    # The default tcache size: malloc behaves as untuned, and Kiln must not override it.
    tuned, faults = probe({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"})
    assert tuned == "False"
    assert faults > 10_000  # glibc hands memory back and faults it in again
