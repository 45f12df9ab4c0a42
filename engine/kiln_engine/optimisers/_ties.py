"""Arrays that share memory: which one a leaf belongs to, and its gradient from the others'.

numpy has no wrapper types: a tied autoencoder's decoder holds ``enc.weight.T``, a view of
the encoder's weight, where Flux holds ``transpose(W)`` and Optimisers.jl sees its parent.
Here the arrays of a model that share memory form a group; one of them holds every other
one's entries (the parent: it views nothing the others do not), and the group is one
parameter with one leaf, whose state is shaped like the parent. A view's gradient is
mapped into the parent's shape and added to the parent's, so the rule sees the summed
gradient once. Arrays that overlap without one holding the other cannot be one
parameter, nor two: they are refused, naming both paths.

Works on any array module with byte strides (numpy, cupy); overlap is exact on numpy
(``np.shares_memory``) and by address range elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_module

__all__ = ["as_parent_gradient", "memory_groups", "parent"]


def _ptr(x: Any) -> int:
    return x.ctypes.data if isinstance(x, np.ndarray) else int(x.data.ptr)


def _span(x: Any) -> tuple[int, int]:
    """The byte addresses ``[lo, hi)`` that ``x``'s entries lie in."""
    lo = hi = _ptr(x)
    if x.size == 0:
        return lo, lo
    for n, s in zip(x.shape, x.strides):
        lo += min(0, (n - 1) * s)
        hi += max(0, (n - 1) * s)
    return lo, hi + x.itemsize


def _axes(x: Any) -> list[tuple[int, int]]:
    """``(|stride|, size)`` of the axes longer than one, innermost first."""
    return sorted((abs(s), n) for n, s in zip(x.shape, x.strides) if n > 1)


def _nested(x: Any, dense: bool) -> bool:
    """No two indices of ``x`` reach the same entry; with ``dense``, nor does ``x`` skip any
    entry between its first and last (it is one block, in some order of its axes)."""
    step = x.itemsize
    for s, n in _axes(x):
        if s < step or (dense and s != step):
            return False
        step = s * n
    return True


def _permuted(p: Any, v: Any) -> bool:
    """``v`` is ``p`` with its axes in another order (``p.T``), size-one axes aside."""
    return (_ptr(p) == _ptr(v) and p.dtype == v.dtype and _axes(p) == _axes(v)
            and _nested(v, dense=False))


def _within(v: Any, p: Any) -> bool:
    """Every entry of ``v`` is an entry of ``p``, and ``v`` reaches each at most once."""
    if v is p or _permuted(p, v):
        return True
    if v.dtype != p.dtype or not _nested(p, dense=True) or not _nested(v, dense=False):
        return False
    (plo, phi), (vlo, vhi) = _span(p), _span(v)
    size = p.itemsize
    return (plo <= vlo and vhi <= phi and (vlo - plo) % size == 0
            and all(s % size == 0 for s in v.strides))


def _share(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.shares_memory(a, b))
    return True  # spans overlap (the caller's test): no exact test off numpy


def memory_groups(arrays: list[tuple[str, Any]]) -> list[list[tuple[str, Any]]]:
    """``(path, array)`` pairs of distinct arrays, grouped where they share memory.

    Groups keep the order of their first member; an array alone is a group of one.
    Arrays are sorted by address, so disjoint arrays cost no pairwise test.
    """
    root = list(range(len(arrays)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    spans = sorted((*_span(x), i) for i, (_, x) in enumerate(arrays) if x.size)
    for k, (_, hi, i) in enumerate(spans):
        k2 = k + 1
        while k2 < len(spans) and spans[k2][0] < hi:
            j = spans[k2][2]
            a, b = arrays[i][1], arrays[j][1]
            if type(a) is type(b) and _share(a, b):
                root[find(j)] = find(i)
            k2 += 1
    groups: dict[int, list[tuple[str, Any]]] = {}
    for i, item in enumerate(arrays):
        groups.setdefault(find(i), []).append(item)
    return list(groups.values())


def parent(group: list[tuple[str, Any]]) -> tuple[str, Any]:
    """The member of a memory group that holds every other member's entries: C-ordered
    first, then the first in path order (``W`` rather than ``W.T``)."""
    if len(group) == 1:
        return group[0]
    holders = [(p, x) for p, x in group if all(_within(y, x) for _, y in group)]
    if not holders:
        for p, x in group:
            for q, y in group:
                if not (_within(y, x) or _within(x, y)):
                    raise ValueError(
                        f"the parameters at {p!r} and {q!r} share memory, but neither is a "
                        f"view of the other; the optimiser can step them neither as one "
                        f"parameter nor as two (copy one, or make one a view of the other)")
        raise ValueError(f"the parameters at {[p for p, _ in group]} share memory, but none "
                         f"of them holds all the others' entries; make them views of one "
                         f"array that is itself a parameter")
    return next(((p, x) for p, x in holders if x.flags.c_contiguous), holders[0])


def as_parent_gradient(p: Any, v: Any, g: Any) -> Any:
    """The gradient ``g`` of the view ``v`` as a gradient of its parent ``p`` (zero at the
    entries of ``p`` that ``v`` does not reach)."""
    if v is p:
        return g
    if _permuted(p, v):
        inner = [k for k in range(v.ndim) if v.shape[k] > 1]
        where = {(abs(v.strides[k]), v.shape[k]): i for i, k in enumerate(inner)}
        order = [where[abs(s), n] for n, s in zip(p.shape, p.strides) if n > 1]
        return g.reshape([v.shape[k] for k in inner]).transpose(order).reshape(p.shape)
    xp = array_module(p)
    strided = xp.lib.stride_tricks.as_strided
    flat = xp.zeros(p.size, dtype=p.dtype)
    lo = _span(p)[0]
    at_v = strided(flat[(_ptr(v) - lo) // p.itemsize:], v.shape, v.strides)
    at_v += g
    return strided(flat[(_ptr(p) - lo) // p.itemsize:], p.shape, p.strides)
