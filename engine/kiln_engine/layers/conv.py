"""Conv and ConvTranspose on NCHW images: im2col plus matmuls, one fused tape node each.

Convolution here is cross-correlation, as in PyTorch's ``conv2d`` and Flux's ``CrossCor``
(Flux's ``Conv`` flips the kernel; Kiln's does not, so PyTorch weights load unchanged).

How it runs: every window of the input is copied into ``cols`` (a row per channel and
kernel offset, a column per output position, plus a row of ones for the bias) and a
matmul per group with the weight gives the output. The input gradient goes the other
way: a matmul, then ``fold`` adds the columns back with one strided add per kernel
offset. numpy pays a fixed cost per contiguous run it copies or adds, so the layout
follows the size of the image. Wide rows: per sample, in NCHW itself (one matmul per
image, no transposes). Short rows (small images, as deep in a CNN): batch innermost,
(C, H, W, N), where a run is a row times the batch and one matmul covers the batch, at
the price of transposing the input and the output. ConvTranspose is the same two moves
in the opposite order (its forward pass is a convolution's input gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._backend import array_module
from .._ops import data
from .._tape import Tracked, record
from ..activations import FUSABLE, identity, relu
from ..init import glorot_uniform
from ._base import Layer, ShapeError, check_input, member_name
from ._window import Pad, fold, out_size, pair, parse_pad, unfold

__all__ = ["Conv", "ConvTranspose", "conv", "conv_transpose"]

_UNFUSED = object()
_NO_PAD: Pad = (0, 0, 0, 0)


class _Layout(NamedTuple):
    """A matmul layout of NCHW arrays."""

    perm: tuple[int, ...]  # NCHW -> layout
    inverse: tuple[int, ...]  # layout -> NCHW
    spatial: tuple[int, int]  # the H and W axes in the layout
    channel: int  # the C axis in the layout; axes before it lead the matmul (one per sample)


_SAMPLES = _Layout((0, 1, 2, 3), (0, 1, 2, 3), (2, 3), 1)  # (N, C, H, W)
_BATCH_INNER = _Layout((1, 2, 3, 0), (3, 0, 1, 2), (1, 2), 0)  # (C, H, W, N)

#: Window rows shorter than this (in elements) make the batch-innermost layout pay off.
_SHORT_ROW = 20
#: Samples per block when copying into the batch-innermost layout.
_SAMPLES_PER_COPY = 8


def _layout(batch: int, width: int) -> _Layout:
    """The layout for ``batch`` images whose grid of windows is ``width`` wide.

    Measured on one core, forward and backward at batch 64: per sample is 1.7× faster
    for LeNet's first layer (24-wide rows), batch innermost 1.15-1.2× faster for 8- and
    18-wide rows of 16 channels; the two are even at 30.
    """
    return _BATCH_INNER if batch > 1 and width < _SHORT_ROW else _SAMPLES


def _crop(layout: _Layout, shape: Any, pad: Pad) -> tuple:
    """The index that removes ``pad`` from an array of ``shape`` in ``layout``."""
    index: list[Any] = [slice(None)] * 4
    sh, sw = layout.spatial
    index[sh] = slice(pad[0], shape[sh] - pad[1])
    index[sw] = slice(pad[2], shape[sw] - pad[3])
    return tuple(index)


def _to_layout(a: Any, layout: _Layout, pad: Pad,
               block: Callable[[slice], Any] | None = None) -> Any:
    """NCHW ``a`` as a contiguous array in ``layout``, zero-padded by ``pad``.

    With ``block``, what is copied for the samples in a slice ``s`` is ``block(s)`` (an
    activation's derivative times ``a[s]``), computed a few samples at a time while they
    are in cache. Into (C, H, W, N) the copy goes a few samples at a time on the CPU: a
    whole-batch transpose strides through memory by one image per element, up to 4×
    slower. On a GPU each copy is a kernel launch, so the whole batch goes in one.
    """
    xp = array_module(a)
    n = a.shape[0]
    if layout is _SAMPLES and not any(pad):
        return xp.ascontiguousarray(a if block is None else block(slice(0, n)))
    shape = [a.shape[i] for i in layout.perm]
    sh, sw = layout.spatial
    shape[sh] += pad[0] + pad[1]
    shape[sw] += pad[2] + pad[3]
    out = (xp.zeros if any(pad) else xp.empty)(shape, dtype=a.dtype)
    dest = out[_crop(layout, shape, pad)]
    index: list[Any] = [slice(None)] * 4
    step = _SAMPLES_PER_COPY if layout is _BATCH_INNER and xp is np else n
    for b in range(0, n, step):
        part = slice(b, b + step)
        index[layout.perm.index(0)] = part
        dest[tuple(index)] = (a[part] if block is None else block(part)).transpose(layout.perm)
    return out


def _from_layout(a: Any, layout: _Layout, pad: Pad = _NO_PAD, bias: Any = None,
                 relu: bool = False) -> Any:
    """A fresh ``a`` in ``layout`` as NCHW, cropping ``pad``, adding ``bias``, applying
    relu (fused with the copy when there is no bias); ``a`` itself when it already is
    NCHW, with relu in place."""
    xp = array_module(a)
    v = a[_crop(layout, a.shape, pad)].transpose(layout.inverse)
    if bias is None and v.flags.c_contiguous:
        if relu:
            xp.maximum(v, 0, out=v)
        return v
    out = xp.empty(v.shape, dtype=a.dtype)
    if bias is not None:
        xp.add(v, bias.reshape(-1, 1, 1), out=out)
        v = out
    if relu:
        xp.maximum(v, 0, out=out)
    elif v is not out:
        out[...] = v
    return out


def _im2col(a: Any, layout: _Layout, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int], groups: int,
            ones: bool) -> Any:
    """Every window of ``a`` (in ``layout``) copied as ([N,] groups, k, positions).

    k is channels per group × kernel offsets, plus a row of ones (a bias input) when
    ``ones``. Positions are (ho, wo) per sample, or (ho, wo, n) with the batch innermost.
    """
    xp = array_module(a)
    (kh, kw), cg = kernel, a.shape[layout.channel] // groups
    v = unfold(a, layout.spatial, kernel, stride, dilation, out_hw)
    if layout is _SAMPLES:  # (N, C, Ho, Wo, kh, kw) -> (N, G, Cg, kh, kw, Ho, Wo)
        v = v.reshape(v.shape[0], groups, cg, *v.shape[2:]).transpose(0, 1, 2, 5, 6, 3, 4)
        lead = v.shape[:1]
    else:  # (C, Ho, Wo, N, kh, kw) -> (G, Cg, kh, kw, Ho, Wo, N)
        v = v.reshape(groups, cg, *v.shape[1:]).transpose(0, 1, 5, 6, 2, 3, 4)
        lead = ()
    k = cg * kh * kw
    cols = xp.empty((*lead, groups, k + ones, int(np.prod(v.shape[len(lead) + 4:]))),
                    dtype=a.dtype)
    cols[..., :k, :].reshape(v.shape)[...] = v  # splitting axes: a view, never a copy
    if ones:
        cols[..., k, :] = 1
    return cols


def _weight_grad(g: Any, cols: Any) -> Any:
    """Per group, ``g`` (rows × positions) times ``cols`` (k × positions) transposed,
    summed over samples: (groups, rows, k).

    Computed as ``(cols @ g.T).T``: with the long positions axis inside both operands
    OpenBLAS runs this orientation 1.2-1.6× faster on the shapes of a small CNN.
    """
    prod = cols @ g.swapaxes(-1, -2)
    if prod.ndim == 4:
        prod = prod.sum(axis=0)
    return prod.swapaxes(-1, -2)


class _Geometry(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: Pad
    dilation: tuple[int, int]
    groups: int


def _geometry(owner: str, kernel: tuple[int, int], stride: Any, pad: Any, dilation: Any,
              groups: Any, transpose: bool) -> _Geometry:
    """Validated geometry. Conv's "same" gives ceil(in / stride), ConvTranspose's in * stride."""
    stride = pair(stride, "stride", owner)
    dilation = pair(dilation, "dilation", owner)
    if not (isinstance(groups, (int, np.integer)) and not isinstance(groups, bool) and groups > 0):
        raise ValueError(f"{owner}: groups must be a positive integer; got {groups!r}")
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if transpose:
        same = tuple(n - s for n, s in zip(span, stride))
        if pad == "same" and min(same) < 0:
            raise ValueError(f"{owner}: pad=\"same\" needs a dilated kernel {span} at least as "
                             f"large as the stride {stride}")
    else:
        same = tuple(n - 1 for n in span)
    return _Geometry(kernel, stride, parse_pad(pad, owner, same), dilation, int(groups))


def _output_padding(value: Any, g: _Geometry, owner: str) -> tuple[int, int]:
    """PyTorch's rule: extra rows and columns must be fewer than the stride or dilation."""
    op = pair(value, "output_padding", owner, minimum=0)
    if any(p >= max(s, d) for p, s, d in zip(op, g.stride, g.dilation)):
        raise ValueError(f"{owner}: output_padding {op} must be smaller than the stride "
                         f"{g.stride} or the dilation {g.dilation}")
    return op


def _check_channels(owner: str, in_: Any, out: Any, groups: int) -> None:
    for name, v in (("in", in_), ("out", out)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer; got {v!r}")
    if in_ % groups or out % groups:
        raise ValueError(f"{owner}: in ({in_}) and out ({out}) must both be divisible by "
                         f"groups ({groups})")


def _activate(y: Any, activation: Callable, record_node: Callable) -> Any:
    """Apply ``activation`` to the fresh output ``y``: fused into the node when it can be.

    relu is already applied, in the pass that made ``y``.
    """
    dact = FUSABLE.get(activation, _UNFUSED)
    if dact is _UNFUSED:
        return activation(record_node(y, None))
    if activation is not relu and activation is not identity:
        y = activation(y)
    return record_node(y, dact)


def _too_small(owner: str, hw: tuple[int, int], g: _Geometry) -> ShapeError:
    span = tuple(d * (k - 1) + 1 for k, d in zip(g.kernel, g.dilation))
    return ShapeError(f"{owner} needs input height and width of at least "
                      f"{span[0] - g.pad[0] - g.pad[1]} × {span[1] - g.pad[2] - g.pad[3]} "
                      f"(dilated kernel {span}, pad {g.pad}); got {hw[0]} × {hw[1]}")


def _layout_shape(layout: _Layout, nchw: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(nchw[i] for i in layout.perm)


def _conv(x: Any, weight: Any, bias: Any, activation: Callable, g: _Geometry,
          owner: str = "conv") -> Any:
    xd, wd = data(x), data(weight)
    n, _, h, w = xd.shape
    o, groups = wd.shape[0], g.groups
    ho = out_size(h, g.kernel[0], g.stride[0], g.dilation[0], g.pad[0], g.pad[1])
    wo = out_size(w, g.kernel[1], g.stride[1], g.dilation[1], g.pad[2], g.pad[3])
    if ho < 1 or wo < 1:
        raise _too_small(owner, (h, w), g)
    xp = array_module(xd)
    layout = _layout(n, wo)
    xl = _to_layout(xd, layout, g.pad)
    cols = _im2col(xl, layout, g.kernel, g.stride, g.dilation, (ho, wo), groups,
                   ones=bias is not None)
    w3 = wd.reshape(groups, o // groups, -1)
    k = w3.shape[2]
    if bias is not None:  # the bias is the weight of the row of ones
        w3 = xp.concatenate([w3, data(bias).reshape(groups, -1, 1)], axis=2)
    yl = (w3 @ cols).reshape(_layout_shape(layout, (n, o, ho, wo)))
    y = _from_layout(yl, layout, relu=activation is relu)
    tx, tw, tb = x.__class__ is Tracked, weight.__class__ is Tracked, bias.__class__ is Tracked
    lead, padded = cols.shape[:-2], xl.shape  # (samples..., groups); the padded input
    kept = cols if tw or tb else None  # only the weight gradient needs the columns

    def node(y: Any, dact: Callable | None) -> Any:
        if not (tx or tw or tb):
            return y

        def vjp(gy: Any) -> tuple:
            gl = _to_layout(gy, layout, _NO_PAD, None if dact is None else
                            lambda s: dact(xp, y[s], gy[s]))
            g3 = gl.reshape(*lead, o // groups, -1)
            gw = gb = gx = None
            if tw or tb:
                gwb = _weight_grad(g3, kept)
                gw = gwb[..., :k].reshape(wd.shape) if tw else None
                gb = gwb[..., k].reshape(o) if tb else None
            if tx:  # the columns' gradient, as (samples..., C, kh, kw, positions...)
                c = layout.channel
                gcols = wd.reshape(groups, o // groups, k).swapaxes(-1, -2) @ g3
                gcols = gcols.reshape(*lead[:-1], xd.shape[1], *g.kernel,
                                      *_layout_shape(layout, (n, 1, ho, wo))[c + 1:])
                gx = _from_layout(fold(gcols, padded, layout.spatial, (c + 1, c + 2),
                                       g.stride, g.dilation), layout, g.pad)
            return gx, gw, gb

        return record(y, (x, weight, bias), vjp)

    return _activate(y, activation, node)


def _conv_transpose(x: Any, weight: Any, bias: Any, activation: Callable, g: _Geometry,
                    output_padding: tuple[int, int], owner: str = "conv_transpose") -> Any:
    xd, wd = data(x), data(weight)
    n, c_in, h, w = xd.shape
    groups = g.groups
    c_out = wd.shape[1] * groups
    full = [(m - 1) * s + d * (k - 1) + 1 + p
            for m, s, d, k, p in zip((h, w), g.stride, g.dilation, g.kernel, output_padding)]
    if full[0] - g.pad[0] - g.pad[1] < 1 or full[1] - g.pad[2] - g.pad[3] < 1:
        raise ShapeError(f"{owner}: padding {g.pad} removes the whole {full[0]} × {full[1]} "
                         f"output of a {h} × {w} input")
    xp = array_module(xd)
    layout = _layout(n, w)
    c = layout.channel
    xl = _to_layout(xd, layout, _NO_PAD)
    x3 = xl.reshape(*xl.shape[:c], groups, c_in // groups, -1)
    w3 = wd.reshape(groups, c_in // groups, -1)
    gcols = (w3.swapaxes(-1, -2) @ x3).reshape(*xl.shape[:c], c_out, *g.kernel,
                                               *xl.shape[c + 1:])
    yfull = fold(gcols, _layout_shape(layout, (n, c_out, *full)), layout.spatial,
                 (c + 1, c + 2), g.stride, g.dilation)
    y = _from_layout(yfull, layout, g.pad, None if bias is None else data(bias),
                     relu=activation is relu)
    tx, tw, tb = x.__class__ is Tracked, weight.__class__ is Tracked, bias.__class__ is Tracked

    def node(y: Any, dact: Callable | None) -> Any:
        if not (tx or tw or tb):
            return y

        def vjp(gy: Any) -> tuple:
            gl = _to_layout(gy, layout, g.pad, None if dact is None else
                            lambda s: dact(xp, y[s], gy[s]))
            other_axes = tuple(i for i in range(4) if i != c)
            gb = gl.sum(axis=other_axes) if tb else None  # padding adds zeros
            cols = _im2col(gl, layout, g.kernel, g.stride, g.dilation, (h, w), groups,
                           ones=False)
            gw = _weight_grad(x3, cols).reshape(wd.shape) if tw else None
            gx = _from_layout((w3 @ cols).reshape(xl.shape), layout) if tx else None
            return gx, gw, gb

        return record(y, (x, weight, bias), vjp)

    return _activate(y, activation, node)


def conv(x: Any, weight: Any, bias: Any = None, activation: Callable = identity, *,
         stride: Any = 1, pad: Any = 0, dilation: Any = 1, groups: int = 1) -> Any:
    """``activation(conv2d(x, weight) + bias)`` as one tape node (PyTorch's ``conv2d``).

    ``x`` is (N, C, H, W), ``weight`` (out, C / groups, kh, kw), ``bias`` (out,) or None.
    ``pad`` is an int, a pair (height, width), (top, bottom, left, right) or "same".
    """
    kernel = tuple(data(weight).shape[2:])
    return _conv(x, weight, bias, activation,
                 _geometry("conv", kernel, stride, pad, dilation, groups, transpose=False))


def conv_transpose(x: Any, weight: Any, bias: Any = None, activation: Callable = identity, *,
                   stride: Any = 1, pad: Any = 0, dilation: Any = 1, groups: int = 1,
                   output_padding: Any = 0) -> Any:
    """The adjoint of ``conv`` as one tape node (PyTorch's ``conv_transpose2d``).

    ``weight`` is (C_in, out / groups, kh, kw), PyTorch's ConvTranspose2d layout.
    """
    kernel = tuple(data(weight).shape[2:])
    g = _geometry("conv_transpose", kernel, stride, pad, dilation, groups, transpose=True)
    return _conv_transpose(x, weight, bias, activation, g,
                           _output_padding(output_padding, g, "conv_transpose"))


class _ConvBase(Layer):
    """Shared construction, input checks and repr of Conv and ConvTranspose."""

    _transpose = False

    def __init__(self, kernel: Any, in_: int, out: int, activation: Callable, *, stride: Any,
                 pad: Any, dilation: Any, groups: int, bias: bool, init: Callable, dtype: Any,
                 rng: np.random.Generator | None) -> None:
        name = type(self).__name__
        kernel = pair(kernel, "kernel", name)
        self.geometry = _geometry(name, kernel, stride, pad, dilation, groups, self._transpose)
        _check_channels(name, in_, out, self.geometry.groups)
        if not callable(activation):
            raise ValueError(f"{name}: activation must be callable; got {activation!r}")
        groups = self.geometry.groups
        shape = (in_, out // groups) if self._transpose else (out, in_ // groups)
        self.weight = init(*shape, *kernel, rng=rng, dtype=dtype)
        self.bias = np.zeros(out, dtype=dtype) if bias else None
        self.activation = activation

    @property
    def in_channels(self) -> int:
        w = data(self.weight).shape
        return w[0] if self._transpose else w[1] * self.geometry.groups

    @property
    def out_channels(self) -> int:
        w = data(self.weight).shape
        return w[1] * self.geometry.groups if self._transpose else w[0]

    def _input(self, x: Any) -> Any:
        c = self.in_channels
        return check_input(self, x, ndim=4, features=c, axis=1, like=data(self.weight),
                           what=f"NCHW input (N, {c}, H, W)")

    def _options(self) -> str:
        g = self.geometry
        opts = [f"stride={g.stride}" if g.stride != (1, 1) else "",
                f"pad={g.pad}" if any(g.pad) else "",
                f"dilation={g.dilation}" if g.dilation != (1, 1) else "",
                f"groups={g.groups}" if g.groups != 1 else "",
                "bias=False" if self.bias is None else ""]
        return "".join(f", {o}" for o in opts if o)

    def __repr__(self) -> str:
        act = "" if self.activation is identity else f", {member_name(self.activation)}"
        return (f"{type(self).__name__}({self.geometry.kernel}, {self.in_channels} => "
                f"{self.out_channels}{act}{self._options()})")


class Conv(_ConvBase):
    """``Conv(kernel, in, out, activation=identity, *, stride=1, pad=0, dilation=1, groups=1,
    bias=True, init=glorot_uniform)``: 2-d convolution of NCHW images.

    Cross-correlation, like PyTorch's Conv2d and Flux's CrossCor (Flux's Conv flips the
    kernel). ``weight`` is (out, in / groups, kh, kw), ``bias`` (out,). ``kernel``,
    ``stride`` and ``dilation`` are an int or a (height, width) pair; ``pad`` is an int, a
    pair, (top, bottom, left, right), or "same" (Flux's SamePad: output size =
    ceil(input / stride); an odd total puts the extra row and column at the top and left).
    Input of another float dtype is cast to the weight's.
    """

    def __init__(self, kernel: Any, in_: int, out: int, activation: Callable = identity, *,
                 stride: Any = 1, pad: Any = 0, dilation: Any = 1, groups: int = 1,
                 bias: bool = True, init: Callable = glorot_uniform, dtype: Any = np.float32,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(kernel, in_, out, activation, stride=stride, pad=pad,
                         dilation=dilation, groups=groups, bias=bias, init=init, dtype=dtype,
                         rng=rng)

    def __call__(self, x: Any) -> Any:
        x = self._input(x)
        return _conv(x, self.weight, self.bias, self.activation, self.geometry,
                     repr(self))


class ConvTranspose(_ConvBase):
    """``ConvTranspose(kernel, in, out, activation=identity, *, stride=1, pad=0,
    output_padding=0, dilation=1, groups=1, bias=True, init=glorot_uniform)``.

    The adjoint of Conv (the gradient of a convolution with respect to its input), for
    upsampling. ``weight`` is (in, out / groups, kh, kw), PyTorch's ConvTranspose2d layout
    (Flux stores the same array as (kw, kh, out / groups, in)). The output size is
    PyTorch's: (in - 1) * stride - top - bottom + dilation * (kernel - 1) +
    output_padding + 1, with ``output_padding`` added at the bottom and right. ``pad="same"``
    gives in * stride, as Flux's SamePad does.
    """

    _transpose = True

    def __init__(self, kernel: Any, in_: int, out: int, activation: Callable = identity, *,
                 stride: Any = 1, pad: Any = 0, output_padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, init: Callable = glorot_uniform,
                 dtype: Any = np.float32, rng: np.random.Generator | None = None) -> None:
        super().__init__(kernel, in_, out, activation, stride=stride, pad=pad,
                         dilation=dilation, groups=groups, bias=bias, init=init, dtype=dtype,
                         rng=rng)
        self.output_padding = _output_padding(output_padding, self.geometry, "ConvTranspose")

    def __call__(self, x: Any) -> Any:
        x = self._input(x)
        return _conv_transpose(x, self.weight, self.bias, self.activation, self.geometry,
                               self.output_padding, repr(self))

    def _options(self) -> str:
        op = self.output_padding
        return super()._options() + (f", output_padding={op}" if any(op) else "")
