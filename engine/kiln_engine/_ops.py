"""Differentiable primitives: each computes with plain numpy/cupy and registers one vjp.

Every function here accepts tracked arrays, plain arrays or Python numbers, and returns a
plain array when no argument is tracked (so the same code runs outside ``gradient``).
Composite functions (softmax, losses, layers) are built from these and have no backward
of their own, except the fused primitives that save memory and passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import array_module, scatter_add
from ._tape import Tracked, record

_T = Tracked


def data(x: Any) -> Any:
    """The plain array behind ``x`` (``x`` itself when it is not tracked)."""
    return x.data if x.__class__ is _T else x


def is_tracked(x: Any) -> bool:
    return x.__class__ is _T


def _any_tracked(*xs: Any) -> bool:
    for x in xs:
        if x.__class__ is _T:
            return True
    return False


def _xp(x: Any) -> Any:
    return array_module(data(x))


# ---------------------------------------------------------------- elementwise binary


def add(a: Any, b: Any) -> Any:
    out = data(a) + data(b)
    if a.__class__ is not _T and b.__class__ is not _T:
        return out
    return record(out, (a, b), _vjp_add)


def _vjp_add(g: Any) -> tuple:
    return g, g


def sub(a: Any, b: Any) -> Any:
    out = data(a) - data(b)
    if a.__class__ is not _T and b.__class__ is not _T:
        return out
    return record(out, (a, b), _vjp_sub)


def _vjp_sub(g: Any) -> tuple:
    return g, -g


def mul(a: Any, b: Any) -> Any:
    ad, bd = data(a), data(b)
    out = ad * bd
    if a.__class__ is not _T and b.__class__ is not _T:
        return out
    at, bt = a.__class__ is _T, b.__class__ is _T
    return record(out, (a, b), lambda g: (g * bd if at else None, g * ad if bt else None))


def div(a: Any, b: Any) -> Any:
    ad, bd = data(a), data(b)
    out = ad / bd
    if a.__class__ is not _T and b.__class__ is not _T:
        return out
    at, bt = a.__class__ is _T, b.__class__ is _T
    return record(
        out, (a, b), lambda g: (g / bd if at else None, -g * out / bd if bt else None)
    )


def power(a: Any, b: Any) -> Any:
    ad, bd = data(a), data(b)
    out = ad**bd
    if a.__class__ is not _T and b.__class__ is not _T:
        return out

    def vjp(g: Any) -> tuple:
        ga = gb = None
        if a.__class__ is _T:
            ga = g * bd * ad ** (bd - 1)
        if b.__class__ is _T:
            xp = array_module(out)
            safe = xp.where(ad > 0, ad, 1)
            gb = g * out * xp.log(safe)
        return ga, gb

    return record(out, (a, b), vjp)


def maximum(a: Any, b: Any) -> Any:
    ad, bd = data(a), data(b)
    xp = _xp(a if a.__class__ is _T or hasattr(a, "shape") else b)
    out = xp.maximum(ad, bd)
    if a.__class__ is not _T and b.__class__ is not _T:
        return out

    def vjp(g: Any) -> tuple:
        mask = ad >= bd  # ties send the gradient to the first argument
        return (g * mask if a.__class__ is _T else None, g * ~mask if b.__class__ is _T else None)

    return record(out, (a, b), vjp)


def minimum(a: Any, b: Any) -> Any:
    ad, bd = data(a), data(b)
    xp = _xp(a if a.__class__ is _T or hasattr(a, "shape") else b)
    out = xp.minimum(ad, bd)
    if a.__class__ is not _T and b.__class__ is not _T:
        return out

    def vjp(g: Any) -> tuple:
        mask = ad <= bd
        return (g * mask if a.__class__ is _T else None, g * ~mask if b.__class__ is _T else None)

    return record(out, (a, b), vjp)


# ---------------------------------------------------------------- elementwise unary


def _unary(fn_name: str, deriv: Any) -> Any:
    """A unary primitive whose vjp is ``g * deriv(x, out, xp)``."""

    def op(x: Any) -> Any:
        xd = data(x)
        xp = array_module(xd)
        out = getattr(xp, fn_name)(xd)
        if x.__class__ is not _T:
            return out
        return record(out, (x,), lambda g: (g * deriv(xd, out, xp),))

    op.__name__ = fn_name
    op.__doc__ = f"Differentiable ``{fn_name}``."
    return op


negative = _unary("negative", lambda x, y, xp: -1)
exp = _unary("exp", lambda x, y, xp: y)
expm1 = _unary("expm1", lambda x, y, xp: y + 1)
log = _unary("log", lambda x, y, xp: 1 / x)
log1p = _unary("log1p", lambda x, y, xp: 1 / (1 + x))
log2 = _unary("log2", lambda x, y, xp: 1 / (x * np.log(2)))
log10 = _unary("log10", lambda x, y, xp: 1 / (x * np.log(10)))
sqrt = _unary("sqrt", lambda x, y, xp: 0.5 / y)
square = _unary("square", lambda x, y, xp: 2 * x)
abs_ = _unary("abs", lambda x, y, xp: xp.sign(x))
sin = _unary("sin", lambda x, y, xp: xp.cos(x))
cos = _unary("cos", lambda x, y, xp: -xp.sin(x))
tan = _unary("tan", lambda x, y, xp: 1 + y * y)
arctan = _unary("arctan", lambda x, y, xp: 1 / (1 + x * x))
arcsin = _unary("arcsin", lambda x, y, xp: 1 / xp.sqrt(1 - x * x))
arccos = _unary("arccos", lambda x, y, xp: -1 / xp.sqrt(1 - x * x))
sinh = _unary("sinh", lambda x, y, xp: xp.cosh(x))
cosh = _unary("cosh", lambda x, y, xp: xp.sinh(x))
tanh = _unary("tanh", lambda x, y, xp: 1 - y * y)
arctanh = _unary("arctanh", lambda x, y, xp: 1 / (1 - x * x))
reciprocal = _unary("reciprocal", lambda x, y, xp: -y * y)
abs_.__name__ = "abs"


def positive(x: Any) -> Any:
    return x


def where(cond: Any, a: Any, b: Any) -> Any:
    """``xp.where`` with the gradient flowing to the branch each element took."""
    c = data(cond)
    xp = _xp(a if a.__class__ is _T or hasattr(a, "shape") else b)
    out = xp.where(c, data(a), data(b))
    if a.__class__ is not _T and b.__class__ is not _T:
        return out
    zero = out.dtype.type(0)
    return record(
        out,
        (a, b),
        lambda g: (
            xp.where(c, g, zero) if a.__class__ is _T else None,
            xp.where(c, zero, g) if b.__class__ is _T else None,
        ),
    )


def clip(x: Any, lo: Any = None, hi: Any = None) -> Any:
    """``xp.clip``; the gradient is zero where the value was clipped."""
    xd = data(x)
    xp = array_module(xd)
    out = xp.clip(xd, lo, hi)
    if x.__class__ is not _T:
        return out
    inside = xp.ones(xd.shape, dtype=bool)
    if lo is not None:
        inside &= xd >= lo
    if hi is not None:
        inside &= xd <= hi
    return record(out, (x,), lambda g: (g * inside,))


def astype(x: Any, dtype: Any) -> Any:
    """Cast; the gradient is cast back by the backward loop."""
    out = data(x).astype(dtype)
    if x.__class__ is not _T:
        return out
    return record(out, (x,), lambda g: (g,))


# ---------------------------------------------------------------- reductions


def _norm_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis)


def _grad_shape(shape: tuple, axis: Any, keepdims: bool) -> tuple | None:
    """The shape a reduced gradient takes to broadcast back over ``shape`` (None: as is)."""
    if keepdims or axis is None:
        return None
    axes = _norm_axis(axis, len(shape))
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_back(g: Any, shape: tuple, axis: Any, keepdims: bool) -> Any:
    """Give a reduced gradient back the reduced axes so it broadcasts over the input."""
    gshape = _grad_shape(shape, axis, keepdims)
    return g if gshape is None else g.reshape(gshape)


def sum_(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xd = data(x)
    out = xd.sum(axis=axis, keepdims=keepdims)
    if x.__class__ is not _T:
        return out
    return record(out, (x,), _spread_back(xd, axis, keepdims, 1))


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    xd = data(x)
    if x.__class__ is not _T:
        return xd.mean(axis=axis, keepdims=keepdims)
    # A sum and a division are what ndarray.mean computes for float32/64, without the
    # ~6 µs of Python it spends getting there: a small model is mostly overhead.
    fast = xd.size and xd.dtype.char in "fd"
    out = xd.sum(axis=axis, keepdims=keepdims) if fast else xd.mean(axis=axis, keepdims=keepdims)
    n = xd.size // max(out.size, 1) if xd.size else 1
    if fast:
        out = out / n
    return record(out, (x,), _spread_back(xd, axis, keepdims, n))


def _spread_back(xd: Any, axis: Any, keepdims: bool, n: int) -> Any:
    """The vjp of a sum (``n`` 1) or a mean (``n`` elements an output) of ``xd`` over
    ``axis``: the gradient, divided by ``n``, spread back over ``xd``'s shape."""
    if axis is None:
        return lambda g: (fill_like(xd, g if n == 1 else g / n),)
    xp = array_module(xd)
    return lambda g: (xp.broadcast_to(_expand_back(g if n == 1 else g / n, xd.shape, axis,
                                                   keepdims), xd.shape),)


def fill_like(a: Any, value: Any) -> Any:
    """A fresh array shaped like ``a`` holding ``value``, a one-element array: the
    gradient of a full reduction. Filling is cheaper than ``broadcast_to`` for small
    arrays (a few µs of Python) and later steps need a real array anyway."""
    out = array_module(a).empty(a.shape, dtype=a.dtype)
    out.fill(value.reshape(()))
    return out


def _extreme(name: str) -> Any:
    def op(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        xd = data(x)
        out = getattr(xd, name)(axis=axis, keepdims=keepdims)
        if x.__class__ is not _T:
            return out

        def vjp(g: Any) -> tuple:
            o = _expand_back(out, xd.shape, axis, keepdims)
            hit = xd == o
            count = hit.sum(axis=axis, keepdims=True)  # ties share the gradient
            return (_expand_back(g, xd.shape, axis, keepdims) * hit / count,)

        return record(out, (x,), vjp)

    op.__name__ = name
    op.__doc__ = f"Differentiable ``{name}``; tied extremes share the gradient equally."
    return op


max_ = _extreme("max")
min_ = _extreme("min")


def var(x: Any, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Any:
    """Variance as a composite of differentiable primitives."""
    mu = mean(x, axis=axis, keepdims=True)
    d = sub(x, mu)
    sq = sum_(mul(d, d), axis=axis, keepdims=keepdims)
    n = 1
    for a in _norm_axis(axis, data(x).ndim):
        n *= data(x).shape[a]
    return div(sq, n - ddof)


def std(x: Any, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Any:
    return sqrt(var(x, axis=axis, keepdims=keepdims, ddof=ddof))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """Numerically stable ``log(sum(exp(x)))`` as one primitive."""
    xd = data(x)
    xp = array_module(xd)
    m = xd.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    e = xp.exp(xd - m)
    s = e.sum(axis=axis, keepdims=True)
    out_k = xp.log(s) + m
    out = out_k if keepdims else out_k.reshape([n for i, n in enumerate(out_k.shape)
                                                if i not in _norm_axis(axis, xd.ndim)])
    if x.__class__ is not _T:
        return out
    return record(out, (x,), lambda g: (_expand_back(g, xd.shape, axis, keepdims) * (e / s),))


# ---------------------------------------------------------------- shape


def reshape(x: Any, *shape: Any) -> Any:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    xd = data(x)
    out = xd.reshape(shape)
    if x.__class__ is not _T:
        return out
    old = xd.shape
    return record(out, (x,), lambda g: (g.reshape(old),))


def transpose(x: Any, axes: Any = None) -> Any:
    xd = data(x)
    out = xd.transpose(axes) if axes is not None else xd.T
    if x.__class__ is not _T:
        return out
    if axes is None:
        return record(out, (x,), lambda g: (g.T,))
    inv = tuple(int(i) for i in np.argsort(axes))
    return record(out, (x,), lambda g: (g.transpose(inv),))


def swapaxes(x: Any, a: int, b: int) -> Any:
    axes = list(range(data(x).ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, tuple(axes))


def broadcast_to(x: Any, shape: tuple) -> Any:
    xd = data(x)
    out = array_module(xd).broadcast_to(xd, shape)
    if x.__class__ is not _T:
        return out
    return record(out, (x,), lambda g: (g,))


def expand_dims(x: Any, axis: Any) -> Any:
    xd = data(x)
    out = array_module(xd).expand_dims(xd, axis)
    return reshape(x, out.shape) if x.__class__ is _T else out


def squeeze(x: Any, axis: Any = None) -> Any:
    xd = data(x)
    out = xd.squeeze(axis)
    return reshape(x, out.shape) if x.__class__ is _T else out


def _has_advanced(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    for i in items:
        if isinstance(i, (list, Tracked)) or hasattr(i, "dtype"):
            return True
    return False


def getitem(x: Any, index: Any) -> Any:
    if isinstance(index, Tracked):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tracked) else i for i in index)
    xd = data(x)
    out = xd[index]
    if x.__class__ is not _T:
        return out
    advanced = _has_advanced(index)

    def vjp(g: Any) -> tuple:
        xp = array_module(g)
        gx = xp.zeros(xd.shape, dtype=g.dtype)
        if advanced:  # repeated indices must add up
            scatter_add(gx, index, g)
        else:
            gx[index] = g
        return (gx,)

    return record(out, (x,), vjp)


def concatenate(xs: Any, axis: int = 0) -> Any:
    ds = [data(x) for x in xs]
    xp = array_module(ds[0])
    out = xp.concatenate(ds, axis=axis)
    if not _any_tracked(*xs):
        return out
    ax = axis % out.ndim
    bounds = [int(b) for b in np.cumsum([d.shape[ax] for d in ds])[:-1]]

    def vjp(g: Any) -> tuple:
        return tuple(xp.split(g, bounds, axis=ax))

    return record(out, tuple(xs), vjp)


def stack(xs: Any, axis: int = 0) -> Any:
    ds = [data(x) for x in xs]
    xp = array_module(ds[0])
    out = xp.stack(ds, axis=axis)
    if not _any_tracked(*xs):
        return out
    ax = axis % out.ndim
    return record(
        out, tuple(xs), lambda g: tuple(xp.take(g, i, axis=ax) for i in range(len(ds)))
    )


def pad(x: Any, pad_width: Any, mode: str = "constant", **kw: Any) -> Any:
    """Constant padding (the only mode with a simple vjp)."""
    if mode != "constant":
        raise TypeError(f"np.pad: only mode='constant' is differentiable in Kiln; got {mode!r}")
    xd = data(x)
    xp = array_module(xd)
    out = xp.pad(xd, pad_width, mode="constant", **kw)
    if x.__class__ is not _T:
        return out
    widths = np.broadcast_to(np.asarray(pad_width, dtype=int), (xd.ndim, 2))
    sl = tuple(slice(int(lo), int(lo) + n) for (lo, _), n in zip(widths, xd.shape))
    return record(out, (x,), lambda g: (g[sl],))


# ---------------------------------------------------------------- linear algebra


def matmul(a: Any, b: Any) -> Any:
    ad, bd = data(a), data(b)
    out = ad @ bd
    if a.__class__ is not _T and b.__class__ is not _T:
        return out
    at, bt = a.__class__ is _T, b.__class__ is _T

    def vjp(g: Any) -> tuple:
        if ad.ndim == 1 and bd.ndim == 1:
            return (g * bd if at else None, g * ad if bt else None)
        A = ad[None, :] if ad.ndim == 1 else ad
        B = bd[:, None] if bd.ndim == 1 else bd
        G = g
        if ad.ndim == 1:
            G = G[..., None, :]
        if bd.ndim == 1:
            G = G[..., None]
        ga = gb = None
        if at:
            ga = G @ B.swapaxes(-1, -2)
            if ad.ndim == 1:
                ga = ga[..., 0, :]
        if bt:
            gb = A.swapaxes(-1, -2) @ G
            if bd.ndim == 1:
                gb = gb[..., 0]
        return ga, gb

    return record(out, (a, b), vjp)


def dot(a: Any, b: Any) -> Any:
    if data(a).ndim > 2 or data(b).ndim > 2:
        raise TypeError("np.dot of arrays above 2-d is not differentiable in Kiln; use matmul")
    if data(a).ndim == 0 or data(b).ndim == 0:
        return mul(a, b)
    return matmul(a, b)


def einsum(subscripts: str, *operands: Any) -> Any:
    """``einsum`` for explicit subscripts (``ij,jk->ik``); each vjp is another einsum."""
    if "->" not in subscripts or "." in subscripts:
        raise TypeError("np.einsum is differentiable in Kiln only with explicit '->' output "
                        "and no ellipsis")
    ins, outs = subscripts.replace(" ", "").split("->")
    terms = ins.split(",")
    ds = [data(o) for o in operands]
    xp = array_module(ds[0])
    out = xp.einsum(subscripts, *ds)
    if not _any_tracked(*operands):
        return out

    def vjp(g: Any) -> tuple:
        grads = []
        for i, op in enumerate(operands):
            if op.__class__ is not _T:
                grads.append(None)
                continue
            others = [t for j, t in enumerate(terms) if j != i]
            spec = ",".join([outs, *others]) + "->" + terms[i]
            rest = [d for j, d in enumerate(ds) if j != i]
            gi = xp.einsum(spec, g, *rest) if set(terms[i]) <= set(outs + "".join(others)) \
                else None
            if gi is None:  # an index summed away inside this operand: broadcast back
                keep = "".join(c for c in terms[i] if c in outs + "".join(others))
                gi = xp.einsum(",".join([outs, *others]) + "->" + keep, g, *rest)
                shape = [ds[i].shape[terms[i].index(c)] if c in keep else 1 for c in terms[i]]
                gi = xp.broadcast_to(gi.reshape(shape), ds[i].shape)
            grads.append(gi)
        return tuple(grads)

    return record(out, tuple(operands), vjp)
