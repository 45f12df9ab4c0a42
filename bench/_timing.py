"""Timing shared by the benchmarks: Kiln and its peer interleaved in one process.

The machines these run on are noisy (PERF-NOTES.md: the same command moved ~50% minutes
apart), so a lone time means little. Each round times a batch of calls of every contender
back to back, alternating contenders, so drift hits both sides alike; the reported figure
is each contender's median over rounds.

Between contenders the harness pauses briefly: OpenBLAS's and OpenMP's worker threads
spin for a while after a parallel call, and on a 2-core machine the spinning threads of
one library slowed the other's next calls several-fold (torch's Adam(foreach) ran 2-4x
slower right after numpy calls than alone; OpenBLAS spins up to ~2^28 cycles). The pause
lets them park, so each contender is timed about as it runs alone.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

#: Seconds to wait between contenders so the other library's spinning threads park.
SWITCH_PAUSE_S = 0.2


def machine() -> str:
    """CPU model, core count and numpy's BLAS, for the header of a benchmark's output."""
    import numpy as np

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "unknown BLAS"
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            blas = f"{info[0]['internal_api']} {info[0].get('version')} " \
                   f"({info[0].get('architecture')}, {info[0]['num_threads']} threads)"
    except ImportError:
        pass
    env = os.environ.get("OPENBLAS_CORETYPE", "unset")
    return f"{cpu}, {os.cpu_count()} cores; numpy {np.__version__} with {blas}; " \
           f"OPENBLAS_CORETYPE={env}"


def interleaved(contenders: dict[str, Callable[[], object]], *, rounds: int = 15,
                calls: int = 5, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each contender, timed in alternating rounds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(SWITCH_PAUSE_S)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def ratio_line(label: str, kiln_s: float, peer_s: float, peer: str, target: float) -> str:
    """One result row: both times, the ratio and whether it meets the target."""
    r = kiln_s / peer_s
    verdict = "meets" if r <= target else "MISSES"
    return (f"{label:<34} kiln {kiln_s * 1e3:9.3f} ms   {peer} {peer_s * 1e3:9.3f} ms   "
            f"ratio {r:5.2f}  ({verdict} target <= {target})")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, its ended threads' too (in 10 ms
    ticks); NaN off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
