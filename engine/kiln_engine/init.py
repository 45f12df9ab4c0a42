"""Weight initialisers, as in Flux: ``init(rng, *shape, dtype) -> array``.

Fan-in and fan-out follow Flux for Dense weights (out, in) and conv weights
(out, in, kh, kw): fan_in = in * kh * kw, fan_out = out * kh * kw.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .random import default_rng

__all__ = [
    "INITIALISERS",
    "glorot_normal",
    "glorot_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "ones",
    "orthogonal",
    "truncated_normal",
    "zeros",
]

Init = Callable[..., np.ndarray]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else default_rng()


def glorot_uniform(*shape: int, rng: np.random.Generator | None = None, gain: float = 1.0,
                   dtype: type = np.float32) -> np.ndarray:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)); Flux's default."""
    fan_in, fan_out = _fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _rng(rng).uniform(-a, a, size=shape).astype(dtype)


def glorot_normal(*shape: int, rng: np.random.Generator | None = None, gain: float = 1.0,
                  dtype: type = np.float32) -> np.ndarray:
    """N(0, s²) with s = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    s = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (_rng(rng).standard_normal(size=shape) * s).astype(dtype)


def kaiming_uniform(*shape: int, rng: np.random.Generator | None = None,
                    gain: float = math.sqrt(2), dtype: type = np.float32) -> np.ndarray:
    """U(-a, a) with a = gain * sqrt(3 / fan_in)."""
    fan_in, _ = _fans(shape)
    a = gain * math.sqrt(3.0 / fan_in)
    return _rng(rng).uniform(-a, a, size=shape).astype(dtype)


def kaiming_normal(*shape: int, rng: np.random.Generator | None = None,
                   gain: float = math.sqrt(2), dtype: type = np.float32) -> np.ndarray:
    """N(0, s²) with s = gain / sqrt(fan_in)."""
    fan_in, _ = _fans(shape)
    return (_rng(rng).standard_normal(size=shape) * (gain / math.sqrt(fan_in))).astype(dtype)


def truncated_normal(*shape: int, rng: np.random.Generator | None = None, mean: float = 0.0,
                     std: float = 1.0, lo: float = -2.0, hi: float = 2.0,
                     dtype: type = np.float32) -> np.ndarray:
    """N(mean, std²) redrawn until inside [lo, hi]."""
    g = _rng(rng)
    out = g.normal(mean, std, size=shape)
    bad = (out < lo) | (out > hi)
    while bad.any():
        out[bad] = g.normal(mean, std, size=int(bad.sum()))
        bad = (out < lo) | (out > hi)
    return out.astype(dtype)


def orthogonal(*shape: int, rng: np.random.Generator | None = None, gain: float = 1.0,
               dtype: type = np.float32) -> np.ndarray:
    """A (semi-)orthogonal matrix over the first dimension against the rest."""
    rows, cols = shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1
    a = _rng(rng).standard_normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q[:rows, :cols]).reshape(shape).astype(dtype)


def zeros(*shape: int, rng: np.random.Generator | None = None,
          dtype: type = np.float32) -> np.ndarray:
    """All zeros."""
    return np.zeros(shape, dtype=dtype)


def ones(*shape: int, rng: np.random.Generator | None = None,
         dtype: type = np.float32) -> np.ndarray:
    """All ones."""
    return np.ones(shape, dtype=dtype)


#: Initialisers by name, for JSON specs.
INITIALISERS: dict[str, Init] = {
    f.__name__: f
    for f in (glorot_uniform, glorot_normal, kaiming_uniform, kaiming_normal, truncated_normal,
              orthogonal, zeros, ones)
}
