"""BatchNorm and LayerNorm, each one fused tape node for the normalisation.

Both compute ``activation(weight * (x - mean) / sqrt(var + eps) + bias)``; they differ
in the axes the statistics run over and the axes the affine parameters span. The
shared primitive ``_normalise`` keeps only x̂ (and the output, for a fused activation)
and writes the whole backward pass as three reductions, instead of a chain of ten
recorded ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import array_module
from .._ops import data
from .._tape import Tracked, record
from ..activations import FUSABLE, identity
from ._base import MAX_RANK, Layer, ShapeError, check_input, member_name
from .mode import ModalLayer, check_active

__all__ = ["BatchNorm", "LayerNorm"]

_UNFUSED = object()


def _mean_over(shape: tuple[int, ...], axes: tuple[int, ...], xp: Any) -> Callable:
    """``mean(a, b=None)``: the mean of ``a`` (or of ``a * b``) over ``axes``, keepdims.

    Over trailing axes (LayerNorm) it is an einsum over rows, several times faster than
    ``ufunc.reduce`` on short contiguous rows, and ``a * b`` is never materialised. Its
    running sums are less accurate than numpy's pairwise ones on data far from zero, so
    it serves centred data (x̂, gradients), not the raw input's mean.
    """
    nd = len(shape)
    if axes != tuple(range(nd - len(axes), nd)):
        return lambda a, b=None: (a if b is None else a * b).mean(axis=axes, keepdims=True)
    k = math.prod(shape[nd - len(axes):])
    kept = shape[:nd - len(axes)] + (1,) * len(axes)

    def mean(a: Any, b: Any = None) -> Any:
        rows = a.reshape(-1, k)
        s = xp.einsum("ij->i", rows) if b is None else \
            xp.einsum("ij,ij->i", rows, b.reshape(-1, k))
        return (s / k).reshape(kept)

    return mean


def _normalise(x: Any, weight: Any, bias: Any, *, axes: tuple[int, ...],
               param_axes: tuple[int, ...], eps: float, stats: tuple[Any, Any] | None,
               activation: Callable) -> tuple[Any, Any, Any]:
    """Normalise ``x`` over ``axes``; ``weight`` and ``bias`` span ``param_axes`` of x.

    ``stats=None`` uses (and differentiates through) the mean and biased variance of x;
    ``stats=(mean, var)`` uses those as constants. Returns ``(y, mean, var)``, the
    statistics shaped to broadcast against x. ``activation`` must be in ``FUSABLE``.
    """
    xd = data(x)
    xp = array_module(xd)
    shape = tuple(n if i in param_axes else 1 for i, n in enumerate(xd.shape))
    mean = _mean_over(xd.shape, axes, xp)
    if stats is None:
        mu = xd.mean(axis=axes, keepdims=True)  # pairwise: exact enough for offset data
        xhat = xd - mu
        var = mean(xhat, xhat)
    else:
        mu, var = (data(s).reshape(shape) for s in stats)
        xhat = xd - mu
    invstd = 1 / xp.sqrt(var + eps)
    xhat *= invstd
    w = None if weight is None else data(weight).reshape(shape)
    y = xhat
    if w is not None:
        y = xhat * w
        y += data(bias).reshape(shape)
    if activation is not identity:
        y = activation(y)
    tx, tw, tb = x.__class__ is Tracked, weight.__class__ is Tracked, bias.__class__ is Tracked
    if not (tx or tw or tb):
        return y, mu, var
    dact = FUSABLE[activation]
    other = tuple(i for i in range(xd.ndim) if i not in param_axes)

    def vjp(g: Any) -> tuple:
        if dact is not None:
            g = dact(xp, y, g)
        # One full-size buffer serves g * x̂ (for the weight), then g * w * x̂, then dx:
        # the large temporaries, not the arithmetic, dominate this pass.
        buf = g * xhat if tw or (tx and stats is None) else None
        gw = buf.sum(axis=other).reshape(data(weight).shape) if tw else None
        gb = g.sum(axis=other).reshape(data(bias).shape) if tb else None
        if not tx:
            return None, gw, gb
        if stats is not None:  # constant statistics: dx = g * w / sqrt(var + eps)
            return g * (invstd if w is None else w * invstd), gw, gb
        # The statistics depend on x too: dx = (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)) / σ, ĝ = g w.
        if w is not None:
            buf *= w
        mean_gx = mean(buf)
        gxhat = g if w is None else g * w
        mean_g = mean(gxhat)
        xp.multiply(xhat, mean_gx, out=buf)
        xp.subtract(gxhat, buf, out=buf)
        buf -= mean_g
        buf *= invstd
        return buf, gw, gb

    return record(y, (x, weight, bias), vjp), mu, var


def _apply(x: Any, weight: Any, bias: Any, activation: Callable, **kw: Any) -> tuple:
    """``_normalise`` with any activation: fused when it can be, applied after otherwise."""
    if FUSABLE.get(activation, _UNFUSED) is _UNFUSED:
        y, mu, var = _normalise(x, weight, bias, activation=identity, **kw)
        return activation(y), mu, var
    return _normalise(x, weight, bias, activation=activation, **kw)


def _check_positive_int(layer: str, name: str, v: Any) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{layer}: {name} must be a positive integer; got {v!r}")


def _check_common(layer: str, activation: Any, eps: Any) -> None:
    if not callable(activation):
        raise ValueError(f"{layer}: activation must be callable; got {activation!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a positive number; got {eps!r}")


def _act_repr(activation: Callable) -> str:
    if activation is identity:
        return ""
    return ", " + member_name(activation)


class BatchNorm(ModalLayer):
    """``BatchNorm(channels, activation=identity, *, eps=1e-5, momentum=0.1, affine=True,
    track_stats=True, active=None)`` over axis 1 of (N, C), (N, C, L), (N, C, H, W) or
    (N, C, D, H, W) input: statistics run over every axis but the channel axis.

    Training (inside ``gradient``, or under ``trainmode``) normalises with the batch's
    mean and biased variance and updates ``running_mean`` / ``running_var`` in place::

        running_mean = (1 - momentum) * running_mean + momentum * batch_mean
        running_var  = (1 - momentum) * running_var  + momentum * batch_var * m / (m - 1)

    with m values per channel (the unbiased estimate). This is PyTorch's ``momentum=0.1``
    and also Flux's (``BatchNorm(…; momentum=0.1f0)`` updates the same way); Keras and
    TensorFlow call ``1 - momentum`` their momentum (0.99 there is 0.01 here). Test mode
    normalises with the running statistics. ``track_stats=False`` keeps none and always
    uses the batch's. ``weight`` (Flux's γ) and ``bias`` (β) have shape (C,), absent
    without ``affine``; the running statistics are state, not parameters: they get no
    gradient and no optimiser leaf.
    """

    nontrainable = frozenset({"running_mean", "running_var"})

    def __init__(self, channels: int, activation: Callable = identity, *, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True, track_stats: bool = True,
                 active: bool | None = None, dtype: Any = np.float32) -> None:
        _check_positive_int("BatchNorm", "channels", channels)
        _check_common("BatchNorm", activation, eps)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be a number in [0, 1]; got {momentum!r} "
                             "(a cumulative average, PyTorch's momentum=None, is not supported)")
        check_active("BatchNorm", active)
        self.channels = int(channels)
        self.weight = np.ones(channels, dtype=dtype) if affine else None
        self.bias = np.zeros(channels, dtype=dtype) if affine else None
        self.running_mean = np.zeros(channels, dtype=dtype) if track_stats else None
        self.running_var = np.ones(channels, dtype=dtype) if track_stats else None
        self.activation = activation
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.active = active

    def __call__(self, x: Any) -> Any:
        like = self.weight if self.weight is not None else self.running_mean
        c = self.channels
        x = check_input(self, x, ndim=(2, 3, 4, 5), features=c, axis=1,
                        like=None if like is None else data(like),
                        what=f"input (N, {c}), (N, {c}, L), (N, {c}, H, W) or (N, {c}, D, H, W)")
        shape = data(x).shape
        axes = (0, *range(2, len(shape)))
        training = self.training()
        use_batch = training or self.running_mean is None
        m = math.prod(shape[a] for a in axes)
        if use_batch and m < 2:
            raise ShapeError(f"{self!r} needs more than one value per channel to compute batch "
                             f"statistics; got input of shape {shape}")
        stats = None if use_batch else (self.running_mean, self.running_var)
        y, mu, var = _apply(x, self.weight, self.bias, self.activation, axes=axes,
                            param_axes=(1,), eps=self.eps, stats=stats)
        if training and self.running_mean is not None:
            self._update_stats(mu.reshape(c), var.reshape(c), m)
        return y

    def _update_stats(self, mu: Any, var: Any, m: int) -> None:
        rm, rv, mom = self.running_mean, self.running_var, self.momentum
        rm *= 1 - mom
        rm += (mom * mu).astype(rm.dtype, copy=False)
        rv *= 1 - mom
        rv += (mom * m / (m - 1) * var).astype(rv.dtype, copy=False)

    def __repr__(self) -> str:
        opts = "" if self.weight is not None else ", affine=False"
        opts += "" if self.running_mean is not None else ", track_stats=False"
        opts += "" if self.active is None else f", active={self.active}"
        return f"BatchNorm({self.channels}{_act_repr(self.activation)}{opts})"


class LayerNorm(Layer):
    """``LayerNorm(size, activation=identity, *, eps=1e-5, affine=True)``: normalise each
    sample over its trailing dimensions ``size`` (an int or a tuple), as PyTorch's
    ``normalized_shape``. Flux normalises over the *leading* ``size`` of its column-major
    arrays, which are the same (feature) axes as the trailing ones here.

    ``weight`` and ``bias`` have shape ``size`` (absent without ``affine``). Input is
    (..., *size) with any number of leading axes. There is no running state.
    """

    def __init__(self, size: int | tuple[int, ...], activation: Callable = identity, *,
                 eps: float = 1e-5, affine: bool = True, dtype: Any = np.float32) -> None:
        dims = (size,) if not isinstance(size, (tuple, list)) else tuple(size)
        if not dims:
            raise ValueError("LayerNorm: size must name at least one dimension; got ()")
        for n in dims:
            _check_positive_int("LayerNorm", "size", n)
        _check_common("LayerNorm", activation, eps)
        self.size = tuple(int(n) for n in dims)
        self.weight = np.ones(self.size, dtype=dtype) if affine else None
        self.bias = np.zeros(self.size, dtype=dtype) if affine else None
        self.activation = activation
        self.eps = float(eps)

    def __call__(self, x: Any) -> Any:
        k = len(self.size)
        what = f"input (..., {', '.join(map(str, self.size))})"
        x = check_input(self, x, ndim=range(k, MAX_RANK + 1), features=None, axis=0,
                        like=None if self.weight is None else data(self.weight), what=what)
        shape = data(x).shape
        if shape[len(shape) - k:] != self.size:
            raise ShapeError(f"{self!r} expects {what}; got an array of shape {shape}")
        axes = tuple(range(len(shape) - k, len(shape)))
        return _apply(x, self.weight, self.bias, self.activation, axes=axes, param_axes=axes,
                      eps=self.eps, stats=None)[0]

    def __repr__(self) -> str:
        size = str(self.size[0]) if len(self.size) == 1 else str(self.size)
        opts = "" if self.weight is not None else ", affine=False"
        return f"LayerNorm({size}{_act_repr(self.activation)}{opts})"
