"""Dropout and AlphaDropout: random masks while training, the identity otherwise.

Both are automatic by default (see ``mode``): they drop only inside ``gradient`` or
when forced with ``trainmode``. The mask is a constant of one tape node, so the
backward pass is one multiply.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import array_module, uniform
from .._ops import data, mul
from .._tape import Tracked, record
from ..activations import _SELU_ALPHA, _SELU_LAMBDA
from ..random import default_rng
from ._base import MAX_RANK, check_input
from .mode import ModalLayer, check_active

__all__ = ["AlphaDropout", "Dropout"]


# alpha' = -lambda * alpha is the value SELU saturates to, which AlphaDropout writes into
# dropped units.
_ALPHA_PRIME = -_SELU_LAMBDA * _SELU_ALPHA


class _Dropout(ModalLayer):
    """Shared parts: the probability, the generator, the mode and the input check."""

    def __init__(self, p: float, *, rng: np.random.Generator | None, active: bool | None,
                 allow_one: bool) -> None:
        name = type(self).__name__
        number = isinstance(p, (int, float)) and not isinstance(p, bool)
        if not number or not (0 <= p <= 1 if allow_one else 0 <= p < 1):
            bound = "0 <= p <= 1" if allow_one else "0 <= p < 1"
            raise ValueError(f"{name}: p must be a probability with {bound}; got {p!r}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ValueError(f"{name}: rng must be a numpy Generator; got {type(rng).__name__}")
        check_active(name, active)
        self.p = float(p)
        self.rng = rng
        self.active = active

    def _keep(self, xd: Any, shape: tuple[int, ...]) -> Any:
        """A boolean mask of ``shape``, True with probability 1 - p."""
        rng = self.rng if self.rng is not None else default_rng()
        return uniform(rng, shape, xd.dtype, array_module(xd)) >= self.p

    def _extra_repr(self) -> str:
        return "" if self.active is None else f", active={self.active}"


class Dropout(_Dropout):
    """``Dropout(p, *, dims=None, rng=None, active=None)``: zero each element with
    probability ``p`` and scale the rest by ``1 / (1 - p)`` while training, as Flux does.

    ``dims`` are the axes along which the mask varies (default all); along the other axes
    one draw is shared. With NCHW images, ``dims=(0, 1)`` drops whole channels per sample
    (PyTorch's Dropout2d). ``rng`` defaults to Kiln's global generator at call time.
    """

    def __init__(self, p: float, *, dims: int | tuple[int, ...] | None = None,
                 rng: np.random.Generator | None = None, active: bool | None = None) -> None:
        super().__init__(p, rng=rng, active=active, allow_one=True)
        if dims is not None:
            dims = (dims,) if isinstance(dims, int) and not isinstance(dims, bool) else dims
            if not isinstance(dims, tuple) or not dims or not all(
                    isinstance(d, int) and not isinstance(d, bool) for d in dims):
                raise ValueError(f"Dropout: dims must be an int or a tuple of ints; got {dims!r}")
        self.dims = dims

    def __call__(self, x: Any) -> Any:
        low = 0 if self.dims is None else max(d + 1 if d >= 0 else -d for d in self.dims)
        x = check_input(self, x, ndim=range(low, MAX_RANK + 1), features=None, axis=0,
                        like=None, what=f"an array with at least {low} dimensions")
        if self.p == 0 or not self.training():
            return x
        xd = data(x)
        shape = xd.shape
        if self.dims is not None:
            axes = {d % xd.ndim for d in self.dims}
            shape = tuple(n if i in axes else 1 for i, n in enumerate(shape))
        mask = self._keep(xd, shape).astype(xd.dtype)
        if self.p < 1:
            mask *= xd.dtype.type(1 / (1 - self.p))
        return mul(x, mask)

    def __repr__(self) -> str:
        dims = "" if self.dims is None else f", dims={self.dims}"
        return f"Dropout({self.p:g}{dims}{self._extra_repr()})"


class AlphaDropout(_Dropout):
    """``AlphaDropout(p, *, rng=None, active=None)``: dropout for SELU networks.

    Dropped units take SELU's saturation value and the result is rescaled so that an
    input of mean 0 and variance 1 keeps them (Klambauer et al. 2017; Flux's
    AlphaDropout, PyTorch's alpha_dropout). ``p`` must be below 1.
    """

    def __init__(self, p: float, *, rng: np.random.Generator | None = None,
                 active: bool | None = None) -> None:
        super().__init__(p, rng=rng, active=active, allow_one=False)

    def __call__(self, x: Any) -> Any:
        x = check_input(self, x, ndim=range(MAX_RANK + 1), features=None, axis=0,
                        like=None, what="an array")
        if self.p == 0 or not self.training():
            return x
        xd = data(x)
        p = self.p
        a = 1 / math.sqrt((1 - p) * (1 + p * _ALPHA_PRIME**2))
        b = -a * _ALPHA_PRIME * p
        keep = self._keep(xd, xd.shape)
        scale = keep * xd.dtype.type(a)  # d y / d x: a where kept, 0 where dropped
        y = xd * scale
        y += array_module(xd).where(keep, xd.dtype.type(b), xd.dtype.type(a * _ALPHA_PRIME + b))
        if x.__class__ is not Tracked:
            return y
        return record(y, (x,), lambda g: (g * scale,))

    def __repr__(self) -> str:
        return f"AlphaDropout({self.p:g}{self._extra_repr()})"
