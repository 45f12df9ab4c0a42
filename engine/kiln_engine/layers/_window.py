"""Sliding-window geometry and the two memory moves that convolution and pooling share.

``unfold`` views every window of an array (numpy's ``sliding_window_view``, no copy); the
caller copies the view in the axis order its matmul or reduction wants. ``fold`` is its
adjoint: it adds each window's values back where they came from, as one strided add per
kernel offset, so the adds run over long rows instead of scattering element by element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_module, sliding_window_view

__all__ = ["Pad", "fold", "out_size", "pair", "parse_pad", "same_pad", "unfold"]

#: Padding of an image's (top, bottom, left, right) edges.
Pad = tuple[int, int, int, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pair(value: Any, name: str, owner: str, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints >= ``minimum`` as (height, width); ``owner`` names the layer."""
    items = (value, value) if _is_int(value) else value
    if not isinstance(items, (tuple, list)) or len(items) != 2 \
            or not all(_is_int(v) and v >= minimum for v in items):
        kind = "positive integer" if minimum == 1 else f"integer >= {minimum}"
        raise ValueError(f"{owner}: {name} must be a {kind} or a pair of them; got {value!r}")
    return int(items[0]), int(items[1])


def same_pad(total: tuple[int, int]) -> Pad:
    """Split a total padding per axis as Flux's SamePad does: the larger half first."""
    (th, tw) = total
    return (th - th // 2, th // 2, tw - tw // 2, tw // 2)


def parse_pad(pad: Any, owner: str, same: tuple[int, int] | None = None) -> Pad:
    """``pad`` as (top, bottom, left, right).

    It may be an int (all four edges), a pair (height, width), a 4-tuple, or "same" when
    ``same`` (the total padding per axis that keeps the size) is given.
    """
    if isinstance(pad, str) and pad == "same" and same is not None:
        return same_pad(same)
    edges = pad
    if _is_int(pad):
        edges = (pad,) * 4
    elif isinstance(pad, (tuple, list)) and len(pad) == 2:
        edges = (pad[0], pad[0], pad[1], pad[1])
    if not isinstance(edges, (tuple, list)) or len(edges) != 4 \
            or not all(_is_int(p) and p >= 0 for p in edges):
        same_ok = ' or "same"' if same is not None else ""
        raise ValueError(f"{owner}: pad must be a non-negative integer, a pair, a 4-tuple "
                         f"(top, bottom, left, right){same_ok}; got {pad!r}")
    return tuple(int(p) for p in edges)  # type: ignore[return-value]


def out_size(size: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """Windows along one axis (PyTorch's floor mode); below 1 when the input is too small."""
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def unfold(x: Any, axes: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """A view of every window of ``x`` over its two spatial ``axes``.

    The spatial axes become the window positions (out_hw) and two axes (kh, kw) are
    appended, as ``sliding_window_view`` lays them out. Nothing is copied.
    """
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    v = sliding_window_view(x, span, axes)
    index = [slice(None)] * v.ndim
    index[axes[0]] = slice(0, sh * (ho - 1) + 1, sh)
    index[axes[1]] = slice(0, sw * (wo - 1) + 1, sw)
    index[-2], index[-1] = slice(None, None, dh), slice(None, None, dw)
    return v[tuple(index)]


def fold(cols: Any, shape: tuple[int, ...], axes: tuple[int, int], window_axes: tuple[int, int],
         stride: tuple[int, int], dilation: tuple[int, int]) -> Any:
    """The adjoint of ``unfold``: a zero array of ``shape`` plus every window added back.

    ``cols`` holds the window positions on ``axes`` (after removing ``window_axes``) and
    the kernel offsets on ``window_axes``; its other axes match ``shape``'s. One strided
    add per kernel offset.
    """
    xp = array_module(cols)
    out = xp.zeros(shape, dtype=cols.dtype)
    kh, kw = cols.shape[window_axes[0]], cols.shape[window_axes[1]]
    rest = [n for a, n in enumerate(cols.shape) if a not in window_axes]
    ho, wo = rest[axes[0]], rest[axes[1]]
    (sh, sw), (dh, dw) = stride, dilation
    index: list[Any] = [slice(None)] * len(shape)
    pick: list[Any] = [slice(None)] * cols.ndim
    for i in range(kh):
        index[axes[0]] = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
        pick[window_axes[0]] = i
        for j in range(kw):
            index[axes[1]] = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            pick[window_axes[1]] = j
            out[tuple(index)] += cols[tuple(pick)]
    return out
