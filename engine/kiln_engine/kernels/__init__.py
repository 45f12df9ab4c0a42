"""Fused CUDA kernels, as CuPy kernel sources, each with its numpy twin.

A kernel is a :class:`Elementwise` (a ``cupy.ElementwiseKernel``: parameters, one
operation per element, a preamble) or a :class:`Raw` (a ``cupy.RawKernel``: a whole
``extern "C" __global__`` function over ``T``, instantiated per dtype by a typedef). Each
holds its **twin**: the same computation written in numpy, taking the same arguments in
the same order and writing its outputs in place, with the same operations in the same
order per element. On the CPU the tests hold each twin to the engine's reference path
(the optimiser rules, Dense, the fused cross-entropy) and compile every source with
nvcc; on a GPU they hold each compiled kernel to its twin.

The CuPy objects are built lazily, on the first launch, and only where cupy imports:
importing this package never needs a GPU. One module per family: ``optimisers``,
``dense``, ``xent``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["C_TYPES", "EXACT", "KERNELS", "Elementwise", "Raw", "compiled", "families"]

#: The C type CuPy substitutes for each dtype a kernel is built for.
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: NVRTC options of every kernel: no multiply-add contraction (``a * b + c`` rounded twice,
#: as numpy rounds it; division and square root are IEEE-exact by default), so that a
#: kernel's arithmetic is its twin's.
EXACT = ("--fmad=false",)


@dataclass(frozen=True)
class Elementwise:
    """A ``cupy.ElementwiseKernel``: ``in_params`` / ``out_params`` as CuPy spells them
    ("T g, T eta" / "T x"; an output is written in place when the caller passes it),
    ``operation`` run per element, and ``scalars``, the parameters passed as scalars
    (CuPy tells them from arrays at the call; the source alone cannot)."""

    name: str
    in_params: str
    out_params: str
    operation: str
    twin: Callable[..., Any]
    scalars: frozenset[str] = frozenset()
    preamble: str = ""
    options: tuple[str, ...] = EXACT

    def build(self, cupy: Any, dtype: Any) -> Any:
        return cupy.ElementwiseKernel(self.in_params, self.out_params, self.operation,
                                      self.name, preamble=self.preamble, options=self.options)


@dataclass(frozen=True)
class Raw:
    """A ``cupy.RawKernel``: ``body`` defines ``extern "C" __global__ void <name>(...)``
    over the type ``T``; :meth:`source` prefixes the typedef for one dtype."""

    name: str
    body: str
    twin: Callable[..., Any]
    options: tuple[str, ...] = EXACT

    def source(self, dtype: Any) -> str:
        return f"typedef {C_TYPES[np.dtype(dtype)]} T;\n{self.body}"

    def build(self, cupy: Any, dtype: Any) -> Any:
        return cupy.RawKernel(self.source(dtype), self.name, options=self.options)


#: Every kernel by name, filled in by the family modules as they are imported.
KERNELS: dict[str, Elementwise | Raw] = {}


def register(kernel: Elementwise | Raw) -> Elementwise | Raw:
    """Add ``kernel`` to :data:`KERNELS` (names are unique: CuPy and the tests find it by
    name)."""
    if kernel.name in KERNELS:
        raise ValueError(f"two kernels are named {kernel.name!r}")
    KERNELS[kernel.name] = kernel
    return kernel


def families() -> dict[str, Elementwise | Raw]:
    """:data:`KERNELS` with every family imported."""
    from . import dense, optimisers, xent  # noqa: F401

    return KERNELS


@functools.cache
def _build(cupy: Any, kernel: Elementwise | Raw, key: str) -> Any:
    return kernel.build(cupy, key)


def compiled(kernel: Elementwise | Raw, xp: Any, dtype: Any) -> Any:
    """``kernel`` as a CuPy object of ``xp`` (cupy) for ``dtype``: built on first use,
    then cached (an ElementwiseKernel compiles per dtype itself, on its first call)."""
    key = "any" if isinstance(kernel, Elementwise) else np.dtype(dtype).name
    return _build(xp, kernel, key)
