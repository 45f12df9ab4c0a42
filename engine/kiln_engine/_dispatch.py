"""Make tracked arrays behave like numpy arrays: operators, methods and numpy's protocols.

``np.exp(x)`` on a tracked ``x`` reaches ``Tracked.__array_ufunc__``; ``np.sum(x)``
reaches ``Tracked.__array_function__``. Both look the function up in a table of
differentiable primitives; a function with no derivative raises an error naming it.
Non-differentiable queries (comparisons, ``isfinite``, ``shape``) run on the plain data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _ops as ops
from ._backend import array_module
from ._tape import Tracked

_UFUNCS = {
    np.add: ops.add,
    np.subtract: ops.sub,
    np.multiply: ops.mul,
    np.true_divide: ops.div,
    np.power: ops.power,
    np.float_power: ops.power,
    np.maximum: ops.maximum,
    np.minimum: ops.minimum,
    np.fmax: ops.maximum,
    np.fmin: ops.minimum,
    np.matmul: ops.matmul,
    np.negative: ops.negative,
    np.positive: ops.positive,
    np.exp: ops.exp,
    np.expm1: ops.expm1,
    np.log: ops.log,
    np.log1p: ops.log1p,
    np.log2: ops.log2,
    np.log10: ops.log10,
    np.sqrt: ops.sqrt,
    np.square: ops.square,
    np.absolute: ops.abs_,
    np.sin: ops.sin,
    np.cos: ops.cos,
    np.tan: ops.tan,
    np.arctan: ops.arctan,
    np.arcsin: ops.arcsin,
    np.arccos: ops.arccos,
    np.sinh: ops.sinh,
    np.cosh: ops.cosh,
    np.tanh: ops.tanh,
    np.arctanh: ops.arctanh,
    np.reciprocal: ops.reciprocal,
}

# Ufuncs whose result carries no gradient: computed on the plain data.
_CONSTANT_UFUNCS = {
    np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal,
    np.isfinite, np.isnan, np.isinf, np.sign, np.floor, np.ceil, np.rint, np.trunc,
    np.logical_and, np.logical_or, np.logical_not, np.logical_xor, np.signbit,
    np.floor_divide, np.remainder,
}


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


_FUNCTIONS = {
    np.sum: lambda a, k: ops.sum_(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False)),
    np.mean: lambda a, k: ops.mean(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False)),
    np.max: lambda a, k: ops.max_(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False)),
    np.amax: lambda a, k: ops.max_(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False)),
    np.min: lambda a, k: ops.min_(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False)),
    np.amin: lambda a, k: ops.min_(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False)),
    np.var: lambda a, k: ops.var(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False),
                                 k.get("ddof", 0)),
    np.std: lambda a, k: ops.std(a[0], _arg(a, k, 1, "axis"), k.get("keepdims", False),
                                 k.get("ddof", 0)),
    np.reshape: lambda a, k: ops.reshape(a[0], _arg(a, k, 1, "shape", k.get("newshape"))),
    np.transpose: lambda a, k: ops.transpose(a[0], _arg(a, k, 1, "axes")),
    np.swapaxes: lambda a, k: ops.swapaxes(a[0], _arg(a, k, 1, "axis1"), _arg(a, k, 2, "axis2")),
    np.expand_dims: lambda a, k: ops.expand_dims(a[0], _arg(a, k, 1, "axis")),
    np.squeeze: lambda a, k: ops.squeeze(a[0], _arg(a, k, 1, "axis")),
    np.ravel: lambda a, k: ops.reshape(a[0], -1),
    np.broadcast_to: lambda a, k: ops.broadcast_to(a[0], _arg(a, k, 1, "shape")),
    np.concatenate: lambda a, k: ops.concatenate(a[0], _arg(a, k, 1, "axis", 0)),
    np.stack: lambda a, k: ops.stack(a[0], _arg(a, k, 1, "axis", 0)),
    np.where: lambda a, k: ops.where(a[0], a[1], a[2]),
    np.clip: lambda a, k: ops.clip(a[0], _arg(a, k, 1, "a_min", k.get("min")),
                                   _arg(a, k, 2, "a_max", k.get("max"))),
    np.dot: lambda a, k: ops.dot(a[0], a[1]),
    np.einsum: lambda a, k: ops.einsum(a[0], *a[1:]),
    np.pad: lambda a, k: ops.pad(a[0], _arg(a, k, 1, "pad_width"),
                                 _arg(a, k, 2, "mode", "constant"),
                                 **{n: v for n, v in k.items() if n not in ("pad_width", "mode")}),
    np.abs: lambda a, k: ops.abs_(a[0]),
    np.shape: lambda a, k: ops.data(a[0]).shape,
    np.ndim: lambda a, k: ops.data(a[0]).ndim,
    np.size: lambda a, k: ops.data(a[0]).size,
}
# Queries with no gradient: the same function of the array's own module, on the plain data.
for _name in ("isfinite", "all", "any", "argmax", "argmin", "zeros_like", "ones_like"):
    _FUNCTIONS[getattr(np, _name)] = (lambda n: lambda a, k: getattr(
        array_module(ops.data(a[0])), n)(ops.data(a[0]), *a[1:], **k))(_name)


def _unwrap(x: Any) -> Any:
    return x.data if isinstance(x, Tracked) else x


def _array_ufunc(self: Tracked, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    name = f"np.{ufunc.__name__}"
    if method != "__call__":
        raise TypeError(f"{name}.{method} is not differentiable in Kiln; use a reduction such "
                        "as np.sum, np.max or np.mean")
    if kwargs.get("out") is not None:
        raise TypeError(f"{name}(..., out=...) would overwrite an array whose gradient is being "
                        "taken; drop the out= argument")
    if ufunc in _CONSTANT_UFUNCS:
        plain = [_unwrap(x) for x in inputs]
        xp = array_module(next((x for x in plain if hasattr(x, "dtype")), plain[0]))
        return getattr(xp, ufunc.__name__)(*plain, **kwargs)
    fn = _UFUNCS.get(ufunc)
    if fn is None:
        raise TypeError(f"{name} has no derivative in Kiln, so it cannot be applied to an array "
                        "whose gradient is being taken")
    return fn(*inputs)


def _array_function(self: Tracked, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
    fn = _FUNCTIONS.get(func)
    if fn is None:
        raise TypeError(f"np.{func.__name__} has no derivative in Kiln, so it cannot be applied to "
                        "an array whose gradient is being taken")
    return fn(args, kwargs)


def _install() -> None:
    """Give Tracked its operators, methods and numpy protocols."""
    T = Tracked
    T.__array_ufunc__ = _array_ufunc
    T.__array_function__ = _array_function
    T.__add__ = lambda s, o: ops.add(s, o)
    T.__radd__ = lambda s, o: ops.add(o, s)
    T.__sub__ = lambda s, o: ops.sub(s, o)
    T.__rsub__ = lambda s, o: ops.sub(o, s)
    T.__mul__ = lambda s, o: ops.mul(s, o)
    T.__rmul__ = lambda s, o: ops.mul(o, s)
    T.__truediv__ = lambda s, o: ops.div(s, o)
    T.__rtruediv__ = lambda s, o: ops.div(o, s)
    T.__pow__ = lambda s, o: ops.power(s, o)
    T.__rpow__ = lambda s, o: ops.power(o, s)
    T.__matmul__ = lambda s, o: ops.matmul(s, o)
    T.__rmatmul__ = lambda s, o: ops.matmul(o, s)
    T.__neg__ = lambda s: ops.negative(s)
    T.__pos__ = lambda s: s
    T.__abs__ = lambda s: ops.abs_(s)
    T.__getitem__ = lambda s, i: ops.getitem(s, i)
    for name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        setattr(T, name, (lambda n: lambda s, o: getattr(s.data, n)(_unwrap(o)))(name))
    T.__hash__ = object.__hash__
    T.__bool__ = lambda s: bool(s.data)
    T.T = property(lambda s: ops.transpose(s))
    T.sum = lambda s, axis=None, keepdims=False: ops.sum_(s, axis, keepdims)
    T.mean = lambda s, axis=None, keepdims=False: ops.mean(s, axis, keepdims)
    T.max = lambda s, axis=None, keepdims=False: ops.max_(s, axis, keepdims)
    T.min = lambda s, axis=None, keepdims=False: ops.min_(s, axis, keepdims)
    T.var = lambda s, axis=None, keepdims=False, ddof=0: ops.var(s, axis, keepdims, ddof)
    T.std = lambda s, axis=None, keepdims=False, ddof=0: ops.std(s, axis, keepdims, ddof)
    T.reshape = lambda s, *shape: ops.reshape(s, *shape)
    T.transpose = lambda s, *axes: ops.transpose(s, (axes[0] if len(axes) == 1 else axes) or None)
    T.swapaxes = lambda s, a, b: ops.swapaxes(s, a, b)
    T.flatten = lambda s: ops.reshape(s, -1)
    T.ravel = lambda s: ops.reshape(s, -1)
    T.squeeze = lambda s, axis=None: ops.squeeze(s, axis)
    T.clip = lambda s, lo=None, hi=None: ops.clip(s, lo, hi)
    T.astype = lambda s, dtype: ops.astype(s, dtype)
    T.dot = lambda s, o: ops.dot(s, o)


_install()
