"""Activation functions, as in Flux/NNlib, numerically stable, each one primitive.

Each works on plain and tracked arrays. ``softmax`` and ``logsoftmax`` act over the last
axis by default (batch first). Activations whose derivative is a function of the output
(identity, relu, sigmoid, tanh) can be fused into Dense and Conv by ``FUSABLE``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._backend import array_module
from ._ops import data
from ._tape import Tracked, record

__all__ = [
    "ACTIVATIONS",
    "celu", "elu", "gelu", "hardsigmoid", "hardtanh", "identity", "leakyrelu", "logsigmoid",
    "logsoftmax", "relu", "relu6", "selu", "sigmoid", "softmax", "softplus", "softsign",
    "swish", "tanh",
]

_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def _elementwise(name: str, fwd: Callable, bwd: Callable, doc: str) -> Callable:
    """A primitive ``f(x)`` with ``fwd(xp, x) -> y`` and ``bwd(xp, x, y, g) -> dx``."""

    def act(x: Any) -> Any:
        xd = data(x)
        xp = array_module(xd)
        y = fwd(xp, xd)
        if x.__class__ is not Tracked:
            return y
        return record(y, (x,), lambda g: (bwd(xp, xd, y, g),))

    act.__name__ = act.__qualname__ = name
    act.__doc__ = doc
    return act


def identity(x: Any) -> Any:
    """``x`` unchanged."""
    return x


def _sigmoid(xp: Any, x: Any) -> Any:
    # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)).
    y = xp.tanh(x * 0.5)
    y += 1
    y *= 0.5
    return y


def _softplus(xp: Any, x: Any) -> Any:
    return xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0)


relu = _elementwise("relu", lambda xp, x: xp.maximum(x, 0),
                    lambda xp, x, y, g: g * (y > 0), "max(x, 0).")
sigmoid = _elementwise("sigmoid", _sigmoid, lambda xp, x, y, g: g * y * (1 - y),
                       "The logistic function 1 / (1 + exp(-x)), computed without overflow.")
tanh = _elementwise("tanh", lambda xp, x: xp.tanh(x), lambda xp, x, y, g: g * (1 - y * y),
                    "Hyperbolic tangent.")
relu6 = _elementwise("relu6", lambda xp, x: xp.clip(x, 0, 6),
                     lambda xp, x, y, g: g * ((x > 0) & (x < 6)), "min(max(x, 0), 6).")
hardtanh = _elementwise("hardtanh", lambda xp, x: xp.clip(x, -1, 1),
                        lambda xp, x, y, g: g * ((x > -1) & (x < 1)), "min(max(x, -1), 1).")
hardsigmoid = _elementwise(
    "hardsigmoid", lambda xp, x: xp.clip(x / 6 + 0.5, 0, 1),
    lambda xp, x, y, g: g * ((x > -3) & (x < 3)) / 6, "min(max(x / 6 + 1/2, 0), 1).")
softplus = _elementwise("softplus", _softplus, lambda xp, x, y, g: g * _sigmoid(xp, x),
                        "log(1 + exp(x)), stable for large |x|.")
logsigmoid = _elementwise("logsigmoid", lambda xp, x: -_softplus(xp, -x),
                          lambda xp, x, y, g: g * _sigmoid(xp, -x),
                          "log(sigmoid(x)) = -softplus(-x), stable for large |x|.")
softsign = _elementwise("softsign", lambda xp, x: x / (1 + xp.abs(x)),
                        lambda xp, x, y, g: g / (1 + xp.abs(x)) ** 2, "x / (1 + |x|).")
swish = _elementwise("swish", lambda xp, x: x * _sigmoid(xp, x),
                     lambda xp, x, y, g: g * (_sigmoid(xp, x) * (1 + x * (1 - _sigmoid(xp, x)))),
                     "x * sigmoid(x) (also called SiLU).")

_GELU_C = math.sqrt(2 / math.pi)


def _gelu_bwd(xp: Any, x: Any, y: Any, g: Any) -> Any:
    inner = _GELU_C * (x + 0.044715 * x**3)
    t = xp.tanh(inner)
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x * x))


gelu = _elementwise(
    "gelu", lambda xp, x: 0.5 * x * (1 + xp.tanh(_GELU_C * (x + 0.044715 * x**3))), _gelu_bwd,
    "GELU, tanh approximation (NNlib's gelu; PyTorch's gelu(approximate='tanh')).")


def leakyrelu(x: Any, a: float = 0.01) -> Any:
    """x where x > 0, else a * x."""
    xd = data(x)
    xp = array_module(xd)
    pos = xd > 0
    y = xp.where(pos, xd, a * xd)
    if x.__class__ is not Tracked:
        return y
    return record(y, (x,), lambda g: (xp.where(pos, g, a * g),))


def elu(x: Any, alpha: float = 1.0) -> Any:
    """x where x > 0, else alpha * (exp(x) - 1)."""
    xd = data(x)
    xp = array_module(xd)
    neg = alpha * xp.expm1(xp.minimum(xd, 0))
    y = xp.where(xd > 0, xd, neg)
    if x.__class__ is not Tracked:
        return y
    return record(y, (x,), lambda g: (xp.where(xd > 0, g, g * (neg + alpha)),))


def celu(x: Any, alpha: float = 1.0) -> Any:
    """x where x > 0, else alpha * (exp(x / alpha) - 1)."""
    xd = data(x)
    xp = array_module(xd)
    neg = alpha * xp.expm1(xp.minimum(xd, 0) / alpha)  # expm1: exact near 0, unlike exp - 1
    y = xp.where(xd > 0, xd, neg)
    if x.__class__ is not Tracked:
        return y
    return record(y, (x,), lambda g: (xp.where(xd > 0, g, g * (neg / alpha + 1)),))


def selu(x: Any) -> Any:
    """Scaled ELU with the self-normalising constants λ ≈ 1.0507, α ≈ 1.6733."""
    xd = data(x)
    xp = array_module(xd)
    e = _SELU_ALPHA * xp.expm1(xp.minimum(xd, 0))
    y = _SELU_LAMBDA * xp.where(xd > 0, xd, e)
    if x.__class__ is not Tracked:
        return y
    return record(
        y, (x,), lambda g: (_SELU_LAMBDA * xp.where(xd > 0, g, g * (e + _SELU_ALPHA)),)
    )


def logsoftmax(x: Any, axis: int = -1) -> Any:
    """x - logsumexp(x) over ``axis`` (the feature axis, last by default)."""
    xd = data(x)
    xp = array_module(xd)
    shifted = xd - xd.max(axis=axis, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    if x.__class__ is not Tracked:
        return y
    return record(y, (x,), lambda g: (g - xp.exp(y) * g.sum(axis=axis, keepdims=True),))


def softmax(x: Any, axis: int = -1) -> Any:
    """exp(x) / sum(exp(x)) over ``axis`` (the feature axis, last by default)."""
    xd = data(x)
    xp = array_module(xd)
    e = xp.exp(xd - xd.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    if x.__class__ is not Tracked:
        return y
    return record(y, (x,), lambda g: (y * (g - (g * y).sum(axis=axis, keepdims=True)),))


#: Activations by name, for JSON specs.
ACTIVATIONS: dict[str, Callable] = {
    f.__name__: f
    for f in (identity, relu, leakyrelu, relu6, elu, gelu, swish, selu, celu, softplus,
              softsign, sigmoid, hardsigmoid, tanh, hardtanh, logsigmoid, softmax, logsoftmax)
}


def _fused_grads() -> dict[Callable, Callable | None]:
    """Activation -> (xp, y, g) -> dx from the output alone, for fusion into layers."""
    return {
        identity: None,
        relu: lambda xp, y, g: g * (y > 0),
        sigmoid: lambda xp, y, g: g * y * (1 - y),
        tanh: lambda xp, y, g: g * (1 - y * y),
    }


FUSABLE = _fused_grads()
