"""Softmax cross-entropy against integer labels: per-row loss, then its gradient.

Forward, a warp per row: the row's maximum, ``s = x - max``, ``e = exp(s)`` kept in a
buffer, ``total = sum(e)`` and the loss ``log(total) - fit`` with ``fit = s[label]``
(``fit * (1 - alpha) + alpha / k * sum(s)`` with label smoothing ``alpha``). Gradient,
one pass over that buffer in place: ``e * (g / total) - g * (1 - alpha)`` at the label,
``- g * alpha / k`` everywhere when smoothing, ``g`` the row's incoming gradient. These
are the operations of ``losses._softmax_xent`` (labels), in its order; its sums over a
row are pairwise in numpy and a warp's tree on the GPU, so there the two agree to
rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_module
from . import Elementwise, Raw, compiled, register

__all__ = ["XENT_FORWARD", "XENT_GRAD", "forward", "grad"]

#: Warps (rows) a block for the forward pass.
_WARPS = 4


def _forward_twin(x: Any, labels: Any, e: Any, total: Any, loss: Any, n: int, k: int,
                  omalpha: Any, apk: Any, smooth: int) -> None:
    x2, e2 = x.reshape(n, k), e.reshape(n, k)
    s = x2 - x2.max(axis=1, keepdims=True)
    fit = s[np.arange(n), labels]
    if smooth:
        fit *= omalpha
        fit += apk * s.sum(axis=1)
    np.exp(s, out=e2)
    total[...] = e2.sum(axis=1)
    loss[...] = np.log(total) - fit


def _grad_twin(total: Any, labels: Any, gs: Any, gstep: int, k: int, omalpha: Any, apk: Any,
               smooth: int, e: Any) -> None:
    n = total.size
    col = gs.reshape(-1)[np.arange(n) * gstep]
    e2 = e.reshape(n, k)
    e2 *= (col / total)[:, None]
    e2[np.arange(n), labels] -= col * omalpha
    if smooth:
        e2 -= (col * apk)[:, None]


XENT_FORWARD = register(Raw("kiln_xent_forward", """
__device__ inline T kiln_warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    const T u = __shfl_xor_sync(0xffffffffu, v, o);
    v = (u > v || u != u) ? u : v;   // as numpy's max: a NaN wins
  }
  return v;
}

__device__ inline T kiln_warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

extern "C" __global__ void kiln_xent_forward(
    const T* __restrict__ x, const long long* __restrict__ labels, T* __restrict__ e,
    T* __restrict__ total, T* __restrict__ loss, const long long n, const long long k,
    const T omalpha, const T apk, const int smooth) {
  const int lane = threadIdx.x & 31;
  const long long step = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < n;
       r += step) {
    const T* xr = x + r * k;
    T* er = e + r * k;
    T m = xr[lane < k ? lane : 0];
    for (long long j = lane + 32; j < k; j += 32) m = (xr[j] > m || xr[j] != xr[j]) ? xr[j] : m;
    m = kiln_warp_max(m);
    T ssum = (T)0, tot = (T)0;
    for (long long j = lane; j < k; j += 32) {
      const T s = xr[j] - m;
      if (smooth) ssum += s;
      const T ej = exp(s);
      er[j] = ej;
      tot += ej;
    }
    tot = kiln_warp_sum(tot);
    if (smooth) ssum = kiln_warp_sum(ssum);
    if (lane == 0) {
      T fit = xr[labels[r]] - m;
      if (smooth) {
        fit = fit * omalpha;
        fit = fit + apk * ssum;
      }
      total[r] = tot;
      loss[r] = log(tot) - fit;
    }
  }
}
""", _forward_twin))

XENT_GRAD = register(Elementwise(
    "kiln_xent_grad",
    "raw T total, raw int64 labels, raw T gs, int64 gstep, int64 k, T omalpha, T apk, "
    "int32 smooth",
    "T e",
    """const long long r = i / k;
const T col = gs[r * gstep];
T d = e * (col / total[r]);
if (i - r * k == labels[r]) d = d - col * omalpha;
if (smooth) d = d - col * apk;
e = d;""",
    _grad_twin, frozenset({"gstep", "k", "omalpha", "apk", "smooth"})))


def _constants(dtype: Any, alpha: float, k: int) -> tuple:
    """``(1 - alpha, alpha / k, smoothing?)`` as the CPU path rounds them: computed in
    Python floats, then cast to the logits' dtype."""
    t = np.dtype(dtype).type
    return t(1 - alpha), t(alpha / k), np.int32(1 if alpha else 0)


def forward(x2: Any, labels: Any, alpha: float) -> tuple[Any, Any, Any]:
    """``(e, total, loss)`` on the GPU for logits ``x2`` (samples, classes) and integer
    ``labels`` (samples,): the exponentials buffer, each row's sum of them and its loss."""
    xp = array_module(x2)
    n, k = x2.shape
    x2 = xp.ascontiguousarray(x2)
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    e = xp.empty_like(x2)
    total = xp.empty(n, dtype=x2.dtype)
    loss = xp.empty(n, dtype=x2.dtype)
    grid = max(1, min(-(-n // _WARPS), 65535))
    omalpha, apk, smooth = _constants(x2.dtype, alpha, k)
    compiled(XENT_FORWARD, xp, x2.dtype)((grid,), (32 * _WARPS,),
                                         (x2, labels, e, total, loss, np.int64(n), np.int64(k),
                                          omalpha, apk, smooth))
    return e, total, loss


def grad(e: Any, total: Any, labels: Any, gs: Any, alpha: float) -> Any:
    """The logits' gradient, written over ``e`` (``forward``'s buffer, used once): ``gs``
    is each row's incoming gradient, (samples,), or one for all as a 0-d array."""
    xp = array_module(e)
    k = e.shape[1]
    omalpha, apk, smooth = _constants(e.dtype, alpha, k)
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    gs = gs.astype(e.dtype, copy=False)
    compiled(XENT_GRAD, xp, e.dtype)(total, labels, gs, np.int64(1 if gs.ndim else 0),
                                     np.int64(k), omalpha, apk, smooth, e)
    return e
