"""A stand-in for cupy where there is no GPU: numpy arrays playing device arrays.

The ``backend`` fixture's "fake" half puts :data:`cupy` and :data:`cupyx` in
``sys.modules`` for one test, so the engine's GPU branches run here: ``array_module`` of
a fake array is this module, ``to_device`` / ``device_of`` / checkpoints move them as they
move cupy arrays, and each fused kernel runs as its numpy twin, found by name in
``kiln_engine.kernels``. It is as strict as cupy where routing is concerned:

- a ufunc refuses a plain numpy array among its operands, and so does every function but
  the constructors (``asarray`` copies host data over): cupy's TypeError;
- reductions and scalar indexing give 0-d device arrays, as cupy's do;
- ``flags`` has no ``writeable``;
- a kernel checks its call against its declaration (arrays where arrays are declared,
  scalars where scalars are), and a raw kernel, which indexes flat memory, refuses an
  array that is not C-contiguous or not of the dtype it was compiled for.

It is not cupy: the numbers are numpy's, and nothing is compiled (test_kernels_nvcc.py
compiles the sources; on a GPU the cupy half runs them).
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any

import numpy as np
from kiln_engine import kernels


class ndarray(np.ndarray):  # cupy's name
    """A numpy array marked as living on the fake device."""

    __module__ = "cupy"  # what array_module, device_of and is_array look at

    def get(self) -> np.ndarray:
        return np.array(self.view(np.ndarray), copy=True)

    @property
    def device(self) -> Any:
        return _DEVICE

    @property
    def flags(self) -> Any:  # cupy's flags: no writeable
        f = self.view(np.ndarray).flags
        return types.SimpleNamespace(c_contiguous=f.c_contiguous, f_contiguous=f.f_contiguous,
                                     owndata=f.owndata)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, out: Any = None,
                        **kwargs: Any) -> Any:
        for x in inputs:
            if not isinstance(x, (ndarray, np.generic, int, float, bool, complex)) \
                    and not isinstance(x, np.ndarray):
                return NotImplemented  # a Tracked operand: its own __array_ufunc__ runs
        _refuse_host(inputs, {"out": out})
        if out is not None:
            kwargs["out"] = tuple(_host(o) for o in out)
        result = getattr(ufunc, method)(*(_host(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        if not all(issubclass(t, np.ndarray) for t in types_):
            return NotImplemented  # a Tracked argument: its own __array_function__ runs
        return _function(func)(*args, **kwargs)  # np.f(device array) is cupy's f

    def __getitem__(self, index: Any) -> Any:
        return _wrap(super().__getitem__(_unwrap(index)))


class _Device:
    id = 0

    def __init__(self, index: int = 0) -> None:
        self.id = index

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


_DEVICE = _Device()


def _host(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, ndarray) else x


def _unwrap(x: Any) -> Any:
    if isinstance(x, ndarray):
        return x.view(np.ndarray)
    if isinstance(x, (tuple, list)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x: Any) -> Any:
    if isinstance(x, ndarray):
        return x
    if isinstance(x, np.ndarray):
        return x.view(ndarray)
    if isinstance(x, np.generic):
        return np.asarray(x).view(ndarray)
    if isinstance(x, (tuple, list)):
        return type(x)(_wrap(v) for v in x)
    if isinstance(x, np.random.Generator):
        return _Proxy(x)
    return x


def _refuse_host(args: Any, kwargs: dict) -> None:
    """cupy's TypeError for a numpy array where a device array must be."""
    def walk(v: Any) -> None:
        if type(v) is np.ndarray:
            raise TypeError(f"Unsupported type {type(v)} (a host array where cupy wants a "
                            "device array)")
        if isinstance(v, (tuple, list)):
            for e in v:
                walk(e)

    walk(args)
    walk(list(kwargs.values()))


_CONSTRUCTORS = {"asarray", "array", "asanyarray", "ascontiguousarray"}


def _function(f: Any, *, strict: bool = True) -> Any:
    @functools.wraps(f)
    def call(*args: Any, **kwargs: Any) -> Any:
        if strict:
            _refuse_host(args, kwargs)
        return _wrap(f(*_unwrap(args), **_unwrap(kwargs)))

    return call


def _asarray(a: Any, dtype: Any = None, order: Any = None) -> Any:
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return _wrap(np.array(a, dtype=dtype, order=order or "K", copy=True))  # host to device


class _Proxy:
    """An object (a random generator) whose methods return device arrays."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        return _function(attr) if callable(attr) else attr


class _Module(types.ModuleType):
    """A numpy module whose functions take and give fake device arrays."""

    def __init__(self, name: str, source: Any) -> None:
        super().__init__(name)
        self._source = source

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._source, name)
        if isinstance(attr, types.ModuleType):
            return _Module(f"{self.__name__}.{name}", attr)
        if isinstance(attr, np.ufunc) or (callable(attr) and not isinstance(attr, type)):
            return _function(attr, strict=name not in _CONSTRUCTORS)
        return attr


_PARAM = re.compile(r"^(raw\s+)?(\w+)\s+(\w+)$")


def _params(spec: str) -> list[tuple[bool, str, str]]:
    """(raw, type, name) for each parameter of a CuPy parameter list."""
    out = []
    for p in spec.split(","):
        m = _PARAM.match(p.strip())
        assert m, f"cannot read the kernel parameter {p!r}"
        out.append((bool(m.group(1)), m.group(2), m.group(3)))
    return out


class ElementwiseKernel:
    """Runs the twin of the registered kernel of this name, after checking the call."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str,
                 **kw: Any) -> None:
        self.spec = kernels.KERNELS[name]
        assert (in_params, out_params, operation) == (
            self.spec.in_params, self.spec.out_params, self.spec.operation), \
            f"{name}: built from other sources than the registered kernel"
        self.params = _params(in_params) + _params(out_params)

    def __call__(self, *args: Any, **kw: Any) -> Any:
        name = self.spec.name
        assert len(args) == len(self.params), \
            f"{name}: {len(args)} arguments for {len(self.params)} parameters"
        for (_, _, pname), a in zip(self.params, args):
            scalar = pname in self.spec.scalars
            assert scalar != isinstance(a, np.ndarray), \
                f"{name}: {pname} must be {'a scalar' if scalar else 'an array'}; got {a!r:.60}"
            assert scalar or isinstance(a, ndarray), f"{name}: {pname} is a host array"
        self.spec.twin(*_unwrap(args))
        n_out = len(_params(self.spec.out_params))
        outs = args[-n_out:]
        return outs[0] if n_out == 1 else outs


class RawKernel:
    """Runs the twin of the registered raw kernel of this name, after checking the call."""

    def __init__(self, code: str, name: str, **kw: Any) -> None:
        self.spec = kernels.KERNELS[name]
        self.dtype = np.dtype({"float": np.float32, "double": np.float64}[
            re.match(r"typedef (\w+) T;", code).group(1)])
        assert code == self.spec.source(self.dtype), f"{name}: not the registered source"

    def __call__(self, grid: tuple, block: tuple, args: tuple, **kw: Any) -> None:
        name = self.spec.name
        assert all(isinstance(v, int) and v > 0 for v in (*grid, *block)), (grid, block)
        for a in args:
            if isinstance(a, np.ndarray):
                assert isinstance(a, ndarray), f"{name}: a host array among its arguments"
                assert a.flags.c_contiguous, f"{name}: a raw kernel got a strided array"
                assert a.dtype.kind != "f" or a.dtype == self.dtype, \
                    f"{name}: a {a.dtype} array in the {self.dtype} build"
        self.spec.twin(*_unwrap(args))


def _scatter_add(a: Any, slices: Any, value: Any) -> None:
    _refuse_host((a, value), {})  # index arrays may be numpy's, as in cupy's indexing
    np.add.at(_host(a), _unwrap(slices), _unwrap(value))


cupy = _Module("cupy", np)
cupy.ndarray = ndarray
cupy.asarray = _asarray
cupy.ElementwiseKernel = ElementwiseKernel
cupy.RawKernel = RawKernel
cupy.cuda = types.SimpleNamespace(
    Device=_Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))

cupyx = types.ModuleType("cupyx")
cupyx.scatter_add = _scatter_add
