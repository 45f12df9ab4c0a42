"""Optimiser updates as one pass per parameter: Descent, Momentum, Adam and AdamW, each
after up to two gradient stages (ClipGrad, WeightDecay) as an OptimiserChain puts them.

Each kernel reads the gradient, the parameter and its state once and writes them once,
doing per entry exactly what the rules' ``apply`` does (``optimisers/rules.py``,
``optimisers/modifiers.py``), in the same order. Three builds of each, one argument list:
the CUDA source (compiled, as every kernel is, without multiply-add contraction, so a GPU
gives the CPU's very bits),
the numba loop that the CPU path runs (:data:`CPU`, by kernel name; no fast-math, no
contraction) and the numpy twin. The scalars (rates, bias corrections) are computed once
a step on the host, in the parameter's dtype, exactly as the rules compute them: the
rules hand them over through the registry (``optimisers/_kernels.py``).

A stage is ``(kind, value)``: :data:`CLIP` clamps the gradient to ``[-value, value]``
(numpy's clip: a NaN stays NaN), :data:`DECAY` adds ``value * x``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backend import array_module
from . import Elementwise, compiled, register

__all__ = ["ADAM", "ADAMW_COUPLED", "ADAMW_DECOUPLED", "ADAM_MODE", "CLIP", "CPU", "DECAY",
           "DESCENT", "MOMENTUM", "NONE", "adam_scalars", "launch", "stage_args"]

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a bare install working
    njit = None

#: Gradient stages.
NONE, CLIP, DECAY = 0, 1, 2
#: The Adam kernel's modes: Adam, AdamW with the decay scaled by the rate, AdamW without.
ADAM_MODE, ADAMW_COUPLED, ADAMW_DECOUPLED = 0, 1, 2

_STAGES = """
__device__ inline T kiln_stage(T d, const T x, const T kind, const T p) {
  if (kind == 1) {            // ClipGrad: numpy's clip, max then min; NaN passes
    if (d == d) {
      d = d > -p ? d : -p;
      d = d < p ? d : p;
    }
  } else if (kind == 2) {     // WeightDecay
    d = d + p * x;
  }
  return d;
}
"""
_GRAD = "const T d = kiln_stage(kiln_stage(g, x, s1, p1), x, s2, p2);\n"
_STAGE_PARAMS = "T g, T s1, T p1, T s2, T p2"
_STAGE_SCALARS = frozenset({"s1", "p1", "s2", "p2"})


def _stage(d: Any, x: Any, kind: int, p: Any) -> Any:
    if kind == CLIP:
        return np.clip(d, -p, p)
    if kind == DECAY:
        return d + p * x
    return d


def _grad(g: Any, x: Any, s1: int, p1: Any, s2: int, p2: Any) -> Any:
    return _stage(_stage(g, x, s1, p1), x, s2, p2)


def _descent_twin(g: Any, s1: int, p1: Any, s2: int, p2: Any, eta: Any, x: Any) -> None:
    d = _grad(g, x, s1, p1, s2, p2)
    x -= d * eta


def _momentum_twin(g: Any, s1: int, p1: Any, s2: int, p2: Any, eta: Any, rho: Any,
                   x: Any, v: Any) -> None:
    d = _grad(g, x, s1, p1, s2, p2)
    vi = v * rho + eta * d
    v[...] = vi
    x -= vi


def _adam_twin(g: Any, s1: int, p1: Any, s2: int, p2: Any, b1: Any, b2: Any, omb1: Any,
               omb2: Any, scale: Any, rsq: Any, eps: Any, eta: Any, lam: Any, mode: int,
               x: Any, m: Any, v: Any) -> None:
    d = _grad(g, x, s1, p1, s2, p2)
    mi = m * b1 + omb1 * d
    vi = v * b2 + omb2 * (d * d)
    m[...] = mi
    v[...] = vi
    adam = scale * mi / (np.sqrt(vi) * rsq + eps)
    if mode == ADAMW_COUPLED:
        step = eta * (adam + lam * x)
    elif mode == ADAMW_DECOUPLED:
        step = eta * adam + lam * x
    else:
        step = adam
    x -= step


DESCENT = register(Elementwise(
    "kiln_descent", f"{_STAGE_PARAMS}, T eta", "T x",
    _GRAD + "x = x - d * eta;",
    _descent_twin, _STAGE_SCALARS | {"eta"}, _STAGES))

MOMENTUM = register(Elementwise(
    "kiln_momentum", f"{_STAGE_PARAMS}, T eta, T rho", "T x, T v",
    _GRAD + """const T vi = v * rho + eta * d;
v = vi;
x = x - vi;""",
    _momentum_twin, _STAGE_SCALARS | {"eta", "rho"}, _STAGES))

ADAM = register(Elementwise(
    "kiln_adam",
    f"{_STAGE_PARAMS}, T b1, T b2, T omb1, T omb2, T scale, T rsq, T eps, T eta, T lam, "
    "T mode",
    "T x, T m, T v",
    _GRAD + """const T xi = x;
const T mi = m * b1 + omb1 * d;
const T vi = v * b2 + omb2 * (d * d);
m = mi;
v = vi;
const T adam = scale * mi / (sqrt(vi) * rsq + eps);
T step = adam;
if (mode == 1) {
  step = eta * (adam + lam * xi);
} else if (mode == 2) {
  step = eta * adam + lam * xi;
}
x = xi - step;""",
    _adam_twin,
    _STAGE_SCALARS | {"b1", "b2", "omb1", "omb2", "scale", "rsq", "eps", "eta", "lam", "mode"},
    _STAGES))


def stage_args(x: Any, stages: Sequence[tuple[int, float]]) -> tuple:
    """``(s1, p1, s2, p2)`` for up to two ``(kind, value)`` stages, in ``x``'s dtype like every
    scalar of these kernels (the codes too: numba vectorises a loop over one type's tuple)."""
    if len(stages) > 2:
        raise ValueError(f"at most two gradient stages fit a kernel; got {len(stages)}")
    return _stage_args(x.dtype, tuple(stages))


# Scalars that depend on hyper-parameters alone are made once (a step makes them per leaf,
# and their casts cost more than a small leaf's update).


@functools.lru_cache(maxsize=256)
def _stage_args(dtype: np.dtype, stages: tuple) -> tuple:
    t = dtype.type
    padded = [*stages, *[(NONE, 0.0)] * (2 - len(stages))]
    return (t(padded[0][0]), t(padded[0][1]), t(padded[1][0]), t(padded[1][1]))


@functools.lru_cache(maxsize=256)
def _adam_constants(dtype: np.dtype, eta: float, beta: tuple, epsilon: float, mode: int,
                    lambda_: float) -> tuple:
    t = dtype.type
    b1, b2 = t(beta[0]), t(beta[1])
    return b1, b2, t(1 - b1), t(1 - b2), t(epsilon), t(eta), t(lambda_), t(mode)


def adam_scalars(x: Any, *, eta: float, beta: tuple[float, float], epsilon: float, bt1: Any,
                 bt2: Any, mode: int = ADAM_MODE, lambda_: float = 0.0) -> tuple:
    """The Adam kernel's scalars after ``stage_args``: ``bt1, bt2`` are the state's running
    powers of beta (before this step's), everything is cast to ``x``'s dtype as
    ``Adam.apply`` / ``AdamW.apply`` cast it, in the same order of operations."""
    t = x.dtype.type
    b1, b2, omb1, omb2, eps, eta_t, lam, mode_t = _adam_constants(
        x.dtype, eta, tuple(beta), epsilon, mode, lambda_)
    scale = t(eta_t / (1 - bt1)) if mode == ADAM_MODE else t(1 / (1 - bt1))
    return (b1, b2, omb1, omb2, scale, t(1 / np.sqrt(1 - bt2)), eps, eta_t, lam, mode_t)


def launch(kernel: Elementwise, x: Any, g: Any, state: tuple, scalars: tuple) -> None:
    """Run ``kernel`` on the GPU over ``x`` and its ``state`` arrays, in place; ``scalars``
    are ``stage_args`` followed by the kernel's own."""
    compiled(kernel, array_module(x), x.dtype)(g, *scalars, x, *state)


#: The numba build of each kernel, by name: ``run(g, x, *state, scalars)`` over 1-D
#: contiguous arrays, in place (empty without numba).
CPU: dict[str, Any] = {}

if njit is not None:
    _jit = njit(cache=True, nogil=True, error_model="numpy")
    _inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")

    # Each kernel has two loops: the bare rule's, which LLVM vectorises, and the one with
    # the stages, whose branches per entry would keep the bare loop from vectorising.

    @_inline
    def _stage_cpu(d: Any, x: Any, kind: Any, p: Any) -> Any:
        if kind == CLIP:
            if d == d:
                d = d if d > -p else -p
                d = d if d < p else p
        elif kind == DECAY:
            d = d + p * x
        return d

    @_inline
    def _staged(g: Any, x: Any, k: tuple) -> Any:
        return _stage_cpu(_stage_cpu(g, x, k[0], k[1]), x, k[2], k[3])

    @_jit
    def _descent_cpu(g: Any, x: Any, k: tuple) -> None:
        if k[0] == NONE and k[2] == NONE:
            for i in range(x.size):
                x[i] = x[i] - g[i] * k[4]
        else:
            for i in range(x.size):
                x[i] = x[i] - _staged(g[i], x[i], k) * k[4]

    @_inline
    def _momentum_one(d: Any, x: Any, v: Any, i: int, k: tuple) -> None:
        vi = v[i] * k[5] + k[4] * d
        v[i] = vi
        x[i] = x[i] - vi

    @_jit
    def _momentum_cpu(g: Any, x: Any, v: Any, k: tuple) -> None:
        if k[0] == NONE and k[2] == NONE:
            for i in range(x.size):
                _momentum_one(g[i], x, v, i, k)
        else:
            for i in range(x.size):
                _momentum_one(_staged(g[i], x[i], k), x, v, i, k)

    @_inline
    def _adam_one(d: Any, x: Any, m: Any, v: Any, i: int, k: tuple) -> None:
        # k: the stages (4), b1, b2, 1-b1, 1-b2, scale, 1/sqrt(1-b2^t), eps, eta, lambda, mode
        xi = x[i]
        mi = m[i] * k[4] + k[6] * d
        vi = v[i] * k[5] + k[7] * (d * d)
        m[i], v[i] = mi, vi
        adam = k[8] * mi / (np.sqrt(vi) * k[9] + k[10])
        if k[13] == ADAM_MODE:
            step = adam
        elif k[13] == ADAMW_COUPLED:
            step = k[11] * (adam + k[12] * xi)
        else:
            step = k[11] * adam + k[12] * xi
        x[i] = xi - step

    @_jit
    def _adam_cpu(g: Any, x: Any, m: Any, v: Any, k: tuple) -> None:
        if k[0] == NONE and k[2] == NONE:
            for i in range(x.size):
                _adam_one(g[i], x, m, v, i, k)
        else:
            for i in range(x.size):
                _adam_one(_staged(g[i], x[i], k), x, m, v, i, k)

    CPU.update({DESCENT.name: _descent_cpu, MOMENTUM.name: _momentum_cpu,
                ADAM.name: _adam_cpu})
