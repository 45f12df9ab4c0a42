"""Applying the rules to the collected leaves: fused kernels for the common rules.

``step_leaf`` calls ``rule.apply`` and subtracts the step: the reference path, used for
every rule and every array type. For Descent, Momentum, Adam and AdamW on float32/float64
numpy arrays, ``step_all`` runs instead one compiled kernel per leaf (numba) that reads
``x``, ``g`` and the state once and writes them once; a large leaf is cut into chunks run
on all cores by a small thread pool (the kernels release the GIL). The numpy path makes
~12 passes over memory with temporaries, single-threaded: about a third of an MLP's
training step. Each kernel does the very operations of the rule's ``apply``, in the same
order and precision (no fast-math, no FMA contraction), so its results are bit-identical
to the reference path; tests hold it to that.

No flat buffers are needed: a kernel call costs about a microsecond, so leaves need no
gathering, and freeze, adjust and None gradients act per leaf as on the reference path.
Threads come from Python's ThreadPoolExecutor, not numba's OpenMP layer, whose spinning
workers slowed the BLAS calls of the next forward pass. Without numba, or for other
rules, dtypes (float16 and complex arrays among them: their order of operations and
squared moduli are the rules' own), devices or non-contiguous arrays, the reference path
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

from ._rule import cast, cast_eps
from .modifiers import NonFiniteError
from .rules import Adam, AdamW, Descent, Momentum

__all__ = ["CHUNK_MIN", "enabled", "step_all", "step_leaf"]

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a bare install working
    njit = None

#: Set to False to force the reference path (the tests compare the two).
enabled = njit is not None

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
    """Run the leaf's kernel if there is one for its rule and arrays; False if not."""
    run = _RUNNERS.get(type(leaf.rule))
    if run is None or type(x) is not np.ndarray or x.dtype not in _DTYPES \
            or not x.flags.writeable:
        return False
    xf = _flat(x)
    if xf is None:
        return False
    gf = np.ascontiguousarray(g, dtype=x.dtype).reshape(-1)
    return run(leaf, xf, gf)


_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_RUNNERS: dict[type, Callable[[Any, Any, Any], bool]] = {}

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


if njit is not None:
    _jit = njit(cache=True, nogil=True, error_model="numpy")

    # One loop per rule: the rule's apply for one entry, same operations in the same order.

    @_jit
    def _descent(x: Any, g: Any, k: tuple) -> None:
        for i in range(x.size):
            x[i] = x[i] - g[i] * k[0]

    @_jit
    def _momentum(x: Any, g: Any, v: Any, k: tuple) -> None:
        for i in range(x.size):
            vi = v[i] * k[1] + k[0] * g[i]
            v[i] = vi
            x[i] = x[i] - vi

    @_jit
    def _adam(x: Any, g: Any, m: Any, v: Any, k: tuple) -> None:
        # k = (b1, b2, 1-b1, 1-b2, scale, 1/sqrt(1-b2^t), epsilon, eta, lambda, mode): mode 0
        # is Adam (scale = eta/(1-b1^t)), 1 AdamW coupled, 2 AdamW decoupled (scale =
        # 1/(1-b1^t)); rules._adam_step is the reference.
        for i in range(x.size):
            gi, xi = g[i], x[i]
            mi = m[i] * k[0] + k[2] * gi
            vi = v[i] * k[1] + k[3] * (gi * gi)
            m[i], v[i] = mi, vi
            adam = k[4] * mi / (np.sqrt(vi) * k[5] + k[6])
            if k[9] == 0:
                step = adam
            elif k[9] == 1:
                step = k[7] * (adam + k[8] * xi)
            else:
                step = k[7] * adam + k[8] * xi
            x[i] = xi - step

    def _run_descent(leaf: Any, x: Any, g: Any) -> bool:
        _launch(_descent, (x, g), (cast(x, leaf.rule.eta),))
        return True

    def _run_momentum(leaf: Any, x: Any, g: Any) -> bool:
        v = _flat(leaf.state)
        if v is None:
            return False
        _launch(_momentum, (x, g, v), (cast(x, leaf.rule.eta), cast(x, leaf.rule.rho)))
        return True

    def _run_adam(leaf: Any, x: Any, g: Any) -> bool:
        r = leaf.rule
        m, v, (bt1, bt2) = leaf.state
        mf, vf = _flat(m), _flat(v)
        if mf is None or vf is None:
            return False
        t = x.dtype.type
        b1, b2 = cast(x, r.beta[0]), cast(x, r.beta[1])
        eta, eps = cast(x, r.eta), cast_eps(x, r.epsilon)
        if isinstance(r, AdamW):
            lam, mode, scale = cast(x, r.lambda_), t(1 if r.couple else 2), t(1 / (1 - bt1))
        else:
            lam, mode, scale = t(0), t(0), t(eta / (1 - bt1))
        k = (b1, b2, t(1 - b1), t(1 - b2), scale, t(1 / np.sqrt(1 - bt2)), eps, eta, lam, mode)
        _launch(_adam, (x, g, mf, vf), k)
        leaf.state = (m, v, (t(bt1 * b1), t(bt2 * b2)))
        return True

    _RUNNERS.update({Descent: _run_descent, Momentum: _run_momentum, Adam: _run_adam,
                     AdamW: _run_adam})
