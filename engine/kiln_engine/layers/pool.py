"""Pooling layers on NCHW images, and Flatten.

Windows that tile the image (stride = window, no padding: ``MaxPool(2)``) take a fast
path: the k×k strided slices of the input are combined elementwise, and the backward pass
writes the gradient straight into the same slices, with no scatter. Other windows go
through ``unfold`` / ``fold``. A maximum's gradient goes to the first maximal element of
its window in row-major order, as in PyTorch and NNlib.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_module
from .._ops import data, mean, reshape
from .._tape import Tracked, record
from ._base import Layer, ShapeError, check_input
from ._window import Pad, fold, out_size, pair, parse_pad, unfold

__all__ = ["Flatten", "GlobalMaxPool", "GlobalMeanPool", "MaxPool", "MeanPool", "maxpool",
           "meanpool"]


def _tiles(a: Any, window: tuple[int, int], out_hw: tuple[int, int]) -> list[Any]:
    """The k×k strided views of ``a`` that hold each window's element (i, j), row-major."""
    (kh, kw), (ho, wo) = window, out_hw
    return [a[:, :, i:i + kh * (ho - 1) + 1:kh, j:j + kw * (wo - 1) + 1:kw]
            for i in range(kh) for j in range(kw)]


def _grad_buffer(xd: Any, window: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """An array for the input gradient; zeroed only where no window reaches (floor mode)."""
    xp = array_module(xd)
    covered = out_hw[0] * window[0] == xd.shape[2] and out_hw[1] * window[1] == xd.shape[3]
    return (xp.empty_like if covered else xp.zeros_like)(xd)


def _padded(xd: Any, pad: Pad, fill: float) -> Any:
    if not any(pad):
        return xd
    xp = array_module(xd)
    t, b, left, right = pad
    return xp.pad(xd, ((0, 0), (0, 0), (t, b), (left, right)), constant_values=fill)


def _unpad(a: Any, pad: Pad) -> Any:
    t, b, left, right = pad
    return a[:, :, t:a.shape[2] - b, left:a.shape[3] - right]


def _max_tiled(x: Any, xd: Any, window: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """Max over tiles as a knockout tournament of pairwise maxima.

    Each match keeps ``right > left`` as a mask, so a tie goes to the earlier tile and the
    backward pass routes the gradient down the tree: the first maximum gets all of it.
    """
    xp = array_module(xd)
    level = _tiles(xd, window, out_hw)
    rounds = []
    while len(level) > 1:
        pairs = range(0, len(level) - 1, 2)
        rounds.append([level[i + 1] > level[i] for i in pairs])
        level = [xp.maximum(level[i], level[i + 1]) for i in pairs] + level[len(pairs) * 2:]
    out = level[0] if rounds else level[0].copy()
    if x.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        gx = _grad_buffer(xd, window, out_hw)
        views = _tiles(gx, window, out_hw)
        grads = [g]
        for depth, right_won in enumerate(reversed(rounds)):
            last = depth == len(rounds) - 1
            halves = []
            for i, right in enumerate(right_won):
                k = len(halves)
                gr = xp.multiply(grads[i], right, out=views[k + 1] if last else None)
                halves += [xp.subtract(grads[i], gr, out=views[k] if last else None), gr]
            grads = halves + grads[len(right_won):]  # an odd tile out passes through
        for view, gk in zip(views, grads):
            if gk is not view:
                view[...] = gk
        return (gx,)

    return record(out, (x,), vjp)


def _max_general(x: Any, xd: Any, window: tuple[int, int], stride: tuple[int, int], pad: Pad,
                 out_hw: tuple[int, int]) -> Any:
    xp = array_module(xd)
    xpad = _padded(xd, pad, -np.inf)
    cols = unfold(xpad, (2, 3), window, stride, (1, 1), out_hw)
    cols = cols.reshape(*cols.shape[:4], -1)  # a copy: (N, C, Ho, Wo, kh * kw)
    first = cols.argmax(axis=-1)[..., None]  # argmax picks the first maximum
    out = xp.take_along_axis(cols, first, axis=-1)[..., 0]
    if x.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        hit = xp.arange(cols.shape[-1]) == first
        gcols = (hit * g[..., None]).reshape(*g.shape, *window)
        return (_unpad(fold(gcols, xpad.shape, (2, 3), (4, 5), stride, (1, 1)), pad),)

    return record(out, (x,), vjp)


def _mean_tiled(x: Any, xd: Any, window: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    tiles = _tiles(xd, window, out_hw)
    out = tiles[0].copy()
    for tile in tiles[1:]:
        out += tile
    scale = xd.dtype.type(1 / len(tiles))
    out *= scale
    if x.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        gx = _grad_buffer(xd, window, out_hw)
        gs = g * scale
        for tile in _tiles(gx, window, out_hw):
            tile[...] = gs
        return (gx,)

    return record(out, (x,), vjp)


def _mean_general(x: Any, xd: Any, window: tuple[int, int], stride: tuple[int, int], pad: Pad,
                  out_hw: tuple[int, int]) -> Any:
    xp = array_module(xd)
    xpad = _padded(xd, pad, 0)
    cols = unfold(xpad, (2, 3), window, stride, (1, 1), out_hw)
    scale = xd.dtype.type(1 / (window[0] * window[1]))
    out = cols.sum(axis=(-2, -1)) * scale
    if x.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        gcols = xp.broadcast_to((g * scale)[..., None, None], cols.shape)
        return (_unpad(fold(gcols, xpad.shape, (2, 3), (4, 5), stride, (1, 1)), pad),)

    return record(out, (x,), vjp)


def _pool(kind: str, x: Any, window: tuple[int, int], stride: tuple[int, int], pad: Pad,
          owner: str) -> Any:
    xd = data(x)
    h, w = xd.shape[2:]
    out_hw = (out_size(h, window[0], stride[0], 1, pad[0], pad[1]),
              out_size(w, window[1], stride[1], 1, pad[2], pad[3]))
    if min(out_hw) < 1:
        raise ShapeError(f"{owner} needs input height and width of at least "
                         f"{window[0] - pad[0] - pad[1]} × {window[1] - pad[2] - pad[3]}; "
                         f"got {h} × {w}")
    if stride == window and not any(pad):
        fast = _max_tiled if kind == "max" else _mean_tiled
        return fast(x, xd, window, out_hw)
    general = _max_general if kind == "max" else _mean_general
    return general(x, xd, window, stride, pad, out_hw)


def _pool_args(owner: str, window: Any, stride: Any, pad: Any) -> tuple:
    """Validated (window, stride, pad); every pad must be smaller than the window."""
    window = pair(window, "window", owner)
    stride = window if stride is None else pair(stride, "stride", owner)
    pad = parse_pad(pad, owner, same=(window[0] - 1, window[1] - 1))
    if max(pad[:2]) >= window[0] or max(pad[2:]) >= window[1]:
        raise ValueError(f"{owner}: pad {pad} must be smaller than the window {window} on "
                         f"each side, or some windows would hold only padding")
    return window, stride, pad


def maxpool(x: Any, window: Any, *, stride: Any = None, pad: Any = 0) -> Any:
    """The maximum of each window of NCHW ``x`` (PyTorch's ``max_pool2d``; pad is -inf)."""
    return _pool("max", x, *_pool_args("maxpool", window, stride, pad), "maxpool")


def meanpool(x: Any, window: Any, *, stride: Any = None, pad: Any = 0) -> Any:
    """The mean of each window of NCHW ``x``, padding zeros included (PyTorch's
    ``avg_pool2d`` with ``count_include_pad=True``)."""
    return _pool("mean", x, *_pool_args("meanpool", window, stride, pad), "meanpool")


class _Pool(Layer):
    """Shared construction, checks and repr of MaxPool and MeanPool."""

    _kind = ""

    def __init__(self, window: Any, *, stride: Any = None, pad: Any = 0) -> None:
        self.window, self.stride, self.pad = _pool_args(type(self).__name__, window, stride, pad)

    def __call__(self, x: Any) -> Any:
        x = _check_image(self, x)
        return _pool(self._kind, x, self.window, self.stride, self.pad, repr(self))

    def __repr__(self) -> str:
        opts = ("" if self.stride == self.window else f", stride={self.stride}") + \
            (f", pad={self.pad}" if any(self.pad) else "")
        return f"{type(self).__name__}({self.window}{opts})"


class MaxPool(_Pool):
    """``MaxPool(window, *, stride=window, pad=0)``: the maximum of each window.

    ``window`` and ``stride`` are an int or a (height, width) pair; ``pad`` is an int, a
    pair, (top, bottom, left, right) or "same" (output size = ceil(input / stride)),
    padding with -inf. Sizes round down, as in PyTorch and Flux.
    """

    _kind = "max"


class MeanPool(_Pool):
    """``MeanPool(window, *, stride=window, pad=0)``: the mean of each window.

    Padding zeros count in the mean, as in Flux and PyTorch's ``avg_pool2d`` with its
    default ``count_include_pad=True``. Arguments as for MaxPool.
    """

    _kind = "mean"


def _check_image(layer: Layer, x: Any) -> Any:
    return check_input(layer, x, ndim=4, features=None, axis=1, like=None,
                       what="NCHW input (N, C, H, W)")


class GlobalMaxPool(Layer):
    """The maximum of each channel: (N, C, H, W) -> (N, C, 1, 1), as in Flux."""

    def __call__(self, x: Any) -> Any:
        x = _check_image(self, x)
        xd = data(x)
        xp = array_module(xd)
        n, c, h, w = xd.shape
        flat = xd.reshape(n, c, h * w)
        first = flat.argmax(axis=-1)[..., None]
        out = xp.take_along_axis(flat, first, axis=-1).reshape(n, c, 1, 1)
        if x.__class__ is not Tracked:
            return out

        def vjp(g: Any) -> tuple:
            hit = xp.arange(h * w) == first
            return ((hit * g.reshape(n, c, 1)).reshape(xd.shape),)

        return record(out, (x,), vjp)

    def __repr__(self) -> str:
        return "GlobalMaxPool()"


class GlobalMeanPool(Layer):
    """The mean of each channel: (N, C, H, W) -> (N, C, 1, 1), as in Flux."""

    def __call__(self, x: Any) -> Any:
        return mean(_check_image(self, x), axis=(2, 3), keepdims=True)

    def __repr__(self) -> str:
        return "GlobalMeanPool()"


class Flatten(Layer):
    """(N, ...) -> (N, -1): every sample as one feature vector (Flux's ``flatten``)."""

    def __call__(self, x: Any) -> Any:
        x = check_input(self, x, ndim=(2, 3, 4, 5), features=None, axis=0, like=None,
                        what="an array of rank 2 to 5, batch first")
        return reshape(x, (data(x).shape[0], -1))

    def __repr__(self) -> str:
        return "Flatten()"
