"""Embedding: a lookup table of learned vectors, indexed by integer tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import array_module, scatter_add
from .._ops import data
from .._tape import Tracked, record
from ..random import default_rng
from ._base import Layer, ShapeError

__all__ = ["Embedding"]


def _scatter_rows(index: Any, rows: Any, n: int) -> Any:
    """An (n, dim) array whose row i is the sum of the ``rows`` at positions where
    ``index == i`` (the vjp of a row lookup; repeated tokens add up)."""
    xp = array_module(rows)
    out = xp.zeros((n, rows.shape[1]), dtype=rows.dtype)
    if index.size == 0:
        return out
    if xp is not np:  # on a GPU, atomic adds beat a sort
        scatter_add(out, index, rows)
        return out
    # Sorting and summing runs of equal tokens is about twice as fast as np.add.at.
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_index[1:] != sorted_index[:-1])))
    out[sorted_index[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


class Embedding(Layer):
    """``Embedding(vocab, dim, *, init=None, dtype=float32, rng=None)``: maps integer
    indices of any shape (...) in ``0 .. vocab-1`` to vectors, giving (..., dim).

    ``weight`` has shape (vocab, dim), row i being token i's vector: PyTorch's layout,
    so ``x @ weight.T`` ties it to an output layer in batch-first code. Flux stores the
    transpose, (dim, vocab), for its column-major batches. The default initialiser is
    N(0, 1), as in both; ``init(vocab, dim, rng=, dtype=)`` replaces it.
    """

    def __init__(self, vocab: int, dim: int, *, init: Callable | None = None,
                 dtype: Any = np.float32, rng: np.random.Generator | None = None) -> None:
        for name, v in (("vocab", vocab), ("dim", dim)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Embedding: {name} must be a positive integer; got {v!r}")
        if init is None:
            g = rng if rng is not None else default_rng()
            self.weight = g.standard_normal((vocab, dim)).astype(dtype)
        else:
            self.weight = init(vocab, dim, rng=rng, dtype=dtype)

    @property
    def vocab(self) -> int:
        return data(self.weight).shape[0]

    @property
    def dim(self) -> int:
        return data(self.weight).shape[1]

    def _indices(self, x: Any, xp: Any) -> Any:
        """``x`` as an integer array on the weight's device, checked against the vocabulary."""
        if isinstance(x, Tracked):
            raise ShapeError(f"{self!r} expects integer indices; got a tracked {x.dtype} array "
                             "(indices carry no gradient)")
        idx = np.asarray(x) if isinstance(x, (int, np.integer, list, tuple)) else x
        if not hasattr(idx, "dtype") or idx.dtype.kind not in "iu":
            found = f"dtype {idx.dtype}" if hasattr(idx, "dtype") else type(x).__name__
            raise ShapeError(f"{self!r} expects integer indices (token ids); got {found}")
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.vocab:
                bad = lo if lo < 0 else hi
                raise ShapeError(f"{self!r} expects indices in 0..{self.vocab - 1}; got {bad}")
        return xp.asarray(idx)

    def __call__(self, x: Any) -> Any:
        w = self.weight
        wd = data(w)
        xp = array_module(wd)
        idx = self._indices(x, xp)
        out = xp.take(wd, idx, axis=0)
        if w.__class__ is not Tracked:
            return out
        vocab, dim = wd.shape
        flat = idx.reshape(-1)
        return record(out, (w,), lambda g: (_scatter_rows(flat, g.reshape(-1, dim), vocab),))

    def __repr__(self) -> str:
        return f"Embedding({self.vocab} => {self.dim})"
