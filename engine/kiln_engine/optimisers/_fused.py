"""Applying the rules to the collected leaves: fused kernels for the common rules.

``step_leaf`` calls ``rule.apply`` and subtracts the step: the reference path, used for
every rule and every array type. Where the registry (``_kernels.py``) has a plan for a
leaf's rule (Descent, Momentum, Adam, AdamW, after up to two ClipGrad / WeightDecay
stages in a chain) and its float32/float64 arrays, ``step_all`` runs instead one kernel
per leaf that reads ``x``, ``g`` and the state once and writes them once: on the CPU the
kernel's numba build, a large leaf cut into chunks run on all cores by a small thread
pool (the kernels release the GIL); on a GPU its CUDA build, one launch. The numpy path
makes ~12 passes over memory with temporaries, single-threaded: about a third of an
MLP's training step; on a GPU, a dozen launches a leaf. Each kernel does the very
operations of the rules' ``apply``, in the same order and precision (no fast-math, no
FMA contraction), so its results are bit-identical to the reference path; tests hold it
to that.

No flat buffers are needed: a kernel call costs about a microsecond, so leaves need no
gathering, and freeze, adjust and None gradients act per leaf as on the reference path.
Threads come from Python's ThreadPoolExecutor, not numba's OpenMP layer, whose spinning
workers slowed the BLAS calls of the next forward pass. For other rules, dtypes (float16
and complex arrays among them: their order of operations and squared moduli are the
rules' own), non-contiguous CPU arrays, or without numba on the CPU, the reference path
runs; so does a leaf shared by copies (arrays at its paths that share no memory), which
needs the step itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np

from ..kernels import optimisers as kernels
from ._kernels import plan
from .modifiers import NonFiniteError

__all__ = ["CHUNK_MIN", "enabled", "step_all", "step_leaf"]

#: Set to False to force the reference path (the tests compare the two).
enabled = True

#: A leaf is split over threads in chunks of at least this many entries.
CHUNK_MIN = 1 << 19

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def step_leaf(leaf: Any, x: Any, g: Any, copies: Any = ()) -> None:
    """One leaf's step by its rule: ``x -= apply(state, x, g)``, the state replaced; the
    same step is subtracted from each of ``copies``."""
    if g.dtype != x.dtype:
        g = g.astype(x.dtype)
    leaf.state, dx = leaf.rule.apply(leaf.state, x, g)
    if dx is not None:
        for c in copies:
            c -= dx
        x -= dx


def step_all(entries: list[list]) -> None:
    """Step every ``[leaf, x, g, path, copies]`` collected by ``update``."""
    for leaf, x, g, path, copies in entries:
        try:
            if copies:
                step_leaf(leaf, x, g, copies)
            elif not (enabled and _step_fused(leaf, x, g)):
                step_leaf(leaf, x, g)
        except NonFiniteError as e:
            e.path = path
            raise


def _flat(a: Any) -> Any:
    """``a`` as a 1-D view, or None where that would need a copy (the kernel writes in place)."""
    return a.reshape(-1) if isinstance(a, np.ndarray) and a.flags.c_contiguous else None


def _step_fused(leaf: Any, x: Any, g: Any) -> bool:
    """Run the kernel the registry plans for the leaf's rule and arrays; False if none."""
    p = plan(leaf.rule, x, leaf.state)
    if p is None:
        return False
    if type(x) is np.ndarray:
        run = kernels.CPU.get(p.kernel.name)
        if run is None or not x.flags.writeable:
            return False
        arrays = [_flat(a) for a in (x, *p.arrays)]
        if any(a is None for a in arrays):
            return False
        gf = np.ascontiguousarray(g, dtype=x.dtype).reshape(-1)
        _launch(run, (gf, *arrays), p.scalars)
    else:
        kernels.launch(p.kernel, x, g.astype(x.dtype, copy=False), p.arrays, p.scalars)
    leaf.state = p.state
    return True


def _launch(kernel: Callable, arrays: tuple, k: tuple) -> None:
    """``kernel(*arrays, k)`` over 1-D arrays, in chunks on the thread pool when large."""
    global _pool, _pool_pid
    n = arrays[0].size
    parts = min(_CORES, n // CHUNK_MIN)
    if parts <= 1:
        kernel(*arrays, k)
        return
    if _pool is None or _pool_pid != os.getpid():  # a forked child has none of the threads
        _pool = ThreadPoolExecutor(max_workers=_CORES - 1, thread_name_prefix="kiln-fused")
        _pool_pid = os.getpid()
    edges = [(n * i // parts) & ~15 for i in range(parts)] + [n]  # 64-byte aligned cuts
    chunks = list(pairwise(edges))
    futures = [_pool.submit(kernel, *(a[lo:hi] for a in arrays), k) for lo, hi in chunks[1:]]
    kernel(*(a[chunks[0][0]:chunks[0][1]] for a in arrays), k)
    for f in futures:
        f.result()
