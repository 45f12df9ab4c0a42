"""Dense: y = activation(x @ weight.T + bias), one fused primitive (on a GPU, the bias and
activation are one kernel each way: ``kernels/dense.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import array_module
from .._ops import data
from .._tape import Tracked, record
from ..activations import FUSABLE, identity, relu, sigmoid, tanh
from ..init import glorot_uniform
from ..kernels import C_TYPES
from ..kernels import dense as kernels
from ._base import Layer, check_input, member_name

__all__ = ["Dense", "dense"]

_UNFUSED = object()
#: The fusable activations' codes in the GPU kernels.
_KERNEL_ACT = {identity: kernels.IDENTITY, relu: kernels.RELU, sigmoid: kernels.SIGMOID,
               tanh: kernels.TANH}


def dense(x: Any, weight: Any, bias: Any, activation: Callable = identity) -> Any:
    """``activation(x @ weight.T + bias)`` over the last axis of ``x``, as one tape node.

    The matmul, the bias and an activation in ``FUSABLE`` share one node, whose vjp
    takes the activation's derivative from the output: no pre-activation is kept.
    """
    xd, wd = data(x), data(weight)
    bd = None if bias is None else data(bias)
    # One 2-d matmul over all leading axes: numpy's batched matmul is far slower.
    y = xd @ wd.T if xd.ndim <= 2 else \
        (xd.reshape(-1, xd.shape[-1]) @ wd.T).reshape(*xd.shape[:-1], wd.shape[0])
    xp = array_module(y)
    dact = FUSABLE.get(activation, _UNFUSED)
    code = None
    if xp is not np and bd is not None and dact is not _UNFUSED and y.dtype in C_TYPES:
        code = _KERNEL_ACT[activation]
        kernels.bias_act(y, bd, code)
    else:
        if bd is not None:
            y += bd
        if dact is _UNFUSED:
            return activation(_affine(x, weight, bias, y, None))
        if activation is relu:
            xp.maximum(y, 0, out=y)
        elif activation is not identity:
            y = activation(y)
    if x.__class__ is not Tracked and weight.__class__ is not Tracked \
            and bias.__class__ is not Tracked:
        return y
    return _affine(x, weight, bias, y, dact, code)


def _affine(x: Any, weight: Any, bias: Any, y: Any, dact: Callable | None,
            code: int | None = None) -> Any:
    """The node of ``y = act(x @ weight.T + bias)``; ``dact`` takes the activation's
    derivative from ``y``, or with ``code`` the GPU kernel does it and the bias sum."""
    xd, wd = data(x), data(weight)
    xp = array_module(y)
    tx, tw, tb = x.__class__ is Tracked, weight.__class__ is Tracked, bias.__class__ is Tracked

    def vjp(g: Any) -> tuple:
        gb = None
        if code is not None and code != kernels.IDENTITY:
            g, gb = kernels.bias_act_grad(y, g, code, tb)
        elif dact is not None:
            g = dact(xp, y, g)
        g2 = g.reshape(-1, wd.shape[0])
        gx = (g2 @ wd).reshape(xd.shape) if tx else None
        gw = (g2.T @ xd.reshape(-1, wd.shape[1])) if tw else None
        if tb and gb is None:
            gb = g2.sum(axis=0)
        return gx, gw, gb

    if not (tx or tw or tb):
        return y
    return record(y, (x, weight, bias), vjp)


class Dense(Layer):
    """``Dense(in, out, activation=identity, *, bias=True, init=glorot_uniform)``.

    Holds ``weight`` of shape (out, in) and ``bias`` of shape (out,) (None without bias);
    maps input (..., in) to (..., out). Input of another float dtype is cast to the
    weight's dtype, as Flux does.
    """

    def __init__(self, in_: int, out: int, activation: Callable = identity, *, bias: bool = True,
                 init: Callable = glorot_uniform, dtype: Any = np.float32,
                 rng: np.random.Generator | None = None) -> None:
        for name, v in (("in", in_), ("out", out)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Dense: {name} must be a positive integer; got {v!r}")
        if not callable(activation):
            raise ValueError(f"Dense: activation must be callable; got {activation!r}")
        self.weight = init(out, in_, rng=rng, dtype=dtype)
        self.bias = np.zeros(out, dtype=dtype) if bias else None
        self.activation = activation

    @property
    def in_features(self) -> int:
        return data(self.weight).shape[1]

    @property
    def out_features(self) -> int:
        return data(self.weight).shape[0]

    def __call__(self, x: Any) -> Any:
        w = data(self.weight)
        d = data(x)
        # Fast path: the checks a well-formed input passes; anything else gets the full
        # validation, which casts or raises an error naming this layer.
        if not (getattr(d, "dtype", None) == w.dtype and 1 <= d.ndim <= 4
                and d.shape[-1] == w.shape[1]):
            x = check_input(self, x, ndim=(1, 2, 3, 4), features=w.shape[1], axis=-1,
                            like=w, what=f"input (..., {w.shape[1]})")
        return dense(x, self.weight, self.bias, self.activation)

    def __repr__(self) -> str:
        act = "" if self.activation is identity else f", {member_name(self.activation)}"
        nob = "" if self.bias is not None else ", bias=False"
        return f"Dense({self.in_features} => {self.out_features}{act}{nob})"
