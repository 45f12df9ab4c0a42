"""trainables and destructure, as in Optimisers.jl: a model's parameters as a list or a vector."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_module
from .._ops import astype, data, getitem, reshape
from .._tree import leaves, map_arrays

__all__ = ["Restructure", "destructure", "trainables"]


def trainables(model: Any, *, path: bool = False) -> list:
    """The trainable floating-point arrays of ``model``, each once (tied arrays not repeated).

    With ``path=True``, ``(path, array)`` pairs, each array at the first path it appears.
    """
    seen: set[int] = set()
    out = []
    for p, x in leaves(model):
        if data(x).dtype.kind in "fc" and id(x) not in seen:
            seen.add(id(x))
            out.append((p, x) if path else x)
    return out


class Restructure:
    """Rebuilds the model from a flat vector: ``re(flat)`` is a copy holding slices of it.

    Differentiable: inside ``gradient`` a tracked ``flat`` gives a model whose arrays are
    tracked pieces of it. Each piece is cast back to its array's dtype; tied arrays share.
    """

    def __init__(self, model: Any, layout: dict[int, tuple[int, tuple, Any]], length: int) -> None:
        self.model = model
        self.layout = layout
        self.length = length

    def __call__(self, flat: Any) -> Any:
        d = data(flat)
        if not hasattr(d, "shape") or tuple(d.shape) != (self.length,):
            got = tuple(d.shape) if hasattr(d, "shape") else type(flat).__name__
            raise ValueError(f"Restructure: expected a flat vector of shape ({self.length},) as "
                             f"destructure made; got {got}")

        def piece(x: Any) -> Any:
            if id(x) not in self.layout:
                return x
            offset, shape, dtype = self.layout[id(x)]
            size = int(np.prod(shape, dtype=np.int64))
            out = reshape(getitem(flat, slice(offset, offset + size)), shape)
            return astype(out, dtype) if d.dtype != dtype else out

        return map_arrays(piece, self.model)

    def __repr__(self) -> str:
        return f"Restructure({type(self.model).__name__}, ..., {self.length})"


def destructure(model: Any) -> tuple[Any, Restructure]:
    """``(flat, re)``: every trainable array concatenated into one vector, and its inverse.

    ``flat`` has the arrays' common dtype; ``re(flat)`` builds a new model (the original is
    untouched). Tied arrays appear once.
    """
    arrays = trainables(model)
    layout: dict[int, tuple[int, tuple, Any]] = {}
    offset = 0
    for x in arrays:
        layout[id(x)] = (offset, tuple(x.shape), x.dtype)
        offset += x.size
    if not arrays:
        return np.zeros(0, dtype=np.float32), Restructure(model, layout, 0)
    xp = array_module(arrays[0])
    dtype = np.result_type(*(x.dtype for x in arrays))
    flat = xp.concatenate([x.reshape(-1).astype(dtype, copy=False) for x in arrays])
    return flat, Restructure(model, layout, offset)
