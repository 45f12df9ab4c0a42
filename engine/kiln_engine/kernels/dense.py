"""Dense's bias and activation, forward and backward, fused.

Forward: ``y = act(y + b)`` in place over the matmul's output, one pass (cupy would make
two to four). Backward: ``dz = dact(y, g)`` from the output alone, and the bias gradient
``db = sum(dz, axis=0)`` in the same pass: a thread per column walks the rows in order,
which is also the order numpy's column sum adds them in. The activations are those
``activations.FUSABLE`` fuses, by code; each is written as ``activations.py`` computes it
(sigmoid as ``(tanh(z / 2) + 1) / 2``), so the twins equal ``layers/dense.py``'s numpy
path bit for bit; on a GPU, ``tanh`` may differ from the CPU's in the last bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_module
from . import Elementwise, Raw, compiled, register

__all__ = ["BIAS_ACT", "BIAS_ACT_GRAD", "IDENTITY", "RELU", "SIGMOID", "TANH", "bias_act",
           "bias_act_grad"]

#: Activation codes.
IDENTITY, RELU, SIGMOID, TANH = 0, 1, 2, 3

#: Threads a block for the backward pass (one per column).
_BLOCK = 128


def _act(z: Any, act: int) -> Any:
    if act == RELU:
        return np.maximum(z, 0)
    if act == SIGMOID:
        t = np.tanh(z * 0.5)
        return (t + 1) * 0.5
    if act == TANH:
        return np.tanh(z)
    return z


def _dact(y: Any, g: Any, act: int) -> Any:
    if act == RELU:
        return g * (y > 0)
    if act == SIGMOID:
        return g * y * (1 - y)
    if act == TANH:
        return g * (1 - y * y)
    return g


def _bias_act_twin(b: Any, act: int, y: Any) -> None:
    y[...] = _act(y + b, act)


def _bias_act_grad_twin(y: Any, g: Any, dz: Any, db: Any, rows: int, cols: int, act: int,
                        want_db: int) -> None:
    d = _dact(y.reshape(rows, cols), g.reshape(rows, cols), act)
    dz.reshape(rows, cols)[...] = d
    if want_db:
        db[...] = d.sum(axis=0)


BIAS_ACT = register(Elementwise(
    "kiln_bias_act", "T b, int32 act", "T y",
    """T z = y + b;
if (act == 1) {
  z = z < (T)0 ? (T)0 : z;          // numpy's maximum(z, 0): NaN and -0 pass
} else if (act == 2) {
  const T t = tanh(z * (T)0.5);
  z = (t + (T)1) * (T)0.5;
} else if (act == 3) {
  z = tanh(z);
}
y = z;""",
    _bias_act_twin, frozenset({"act"})))

BIAS_ACT_GRAD = register(Raw("kiln_bias_act_grad", """
__device__ inline T kiln_dact(const int act, const T y, const T g) {
  if (act == 1) return g * (T)(y > (T)0);
  if (act == 2) return g * y * ((T)1 - y);
  if (act == 3) return g * ((T)1 - y * y);
  return g;
}

extern "C" __global__ void kiln_bias_act_grad(
    const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ dz, T* __restrict__ db,
    const long long rows, const long long cols, const int act, const int want_db) {
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < cols;
       j += (long long)blockDim.x * gridDim.x) {
    T acc = (T)0;
    for (long long i = 0; i < rows; ++i) {
      const long long k = i * cols + j;
      const T d = kiln_dact(act, y[k], g[k]);
      dz[k] = d;
      acc = i == 0 ? d : acc + d;   // as numpy sums a column: from the first row on
    }
    if (want_db) db[j] = acc;
  }
}
""", _bias_act_grad_twin))


def bias_act(y: Any, b: Any, act: int) -> None:
    """``y = act(y + b)`` in place on the GPU; ``b`` has ``y``'s last axis."""
    compiled(BIAS_ACT, array_module(y), y.dtype)(b, np.int32(act), y)


def bias_act_grad(y: Any, g: Any, act: int, want_db: bool) -> tuple[Any, Any]:
    """``(dz, db)`` on the GPU: the pre-activation gradient shaped like ``g``, and the
    bias gradient (None unless ``want_db``). ``y`` is C-contiguous; ``g`` is made so (an
    upstream gradient may be a broadcast view)."""
    xp = array_module(y)
    g = xp.ascontiguousarray(g, dtype=y.dtype)
    cols = y.shape[-1]
    rows = y.size // cols if cols else 0
    dz = xp.empty_like(g)
    db = xp.empty(cols, dtype=y.dtype) if want_db else dz
    grid = max(1, min(-(-cols // _BLOCK), 65535))
    compiled(BIAS_ACT_GRAD, xp, y.dtype)((grid,), (_BLOCK,),
                                         (y, g, dz, db, np.int64(rows), np.int64(cols),
                                          np.int32(act), np.int32(want_db)))
    return dz, db if want_db else None
