"""Reusing a model's tracked copy across gradient calls.

``gradient(f, model)`` hands ``f`` a copy of the model whose arrays are Tracked leaves,
then builds a gradient tree shaped like the model. Walking the tree twice per step cost
more than the whole forward pass of a small model, so the copy and a compiled builder
for the gradient tree are kept per model (per thread) and reused while the model is
unchanged. "Unchanged" is checked on every call: every node's fields (and every list's
or dict's items) must still be the very same objects, so assigning ``layer.weight = W``
or swapping a layer rebuilds the trace. In-place updates of arrays (what optimisers do)
keep it valid, since the Tracked leaves hold those same arrays.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from typing import Any

from ._backend import array_module, writeable
from ._tape import Tracked, _state
from ._tree import Layers, Node, Tangent, children, is_array, map_arrays

__all__ = ["build_gradient", "trace_model", "track_leaf"]


def track_leaf(x: Any) -> Any:
    """A Tracked leaf for a floating-point array; integer arrays stay constants."""
    return Tracked(x) if x.dtype.kind in "fc" else x


def _snapshot(tree: Any) -> list[tuple[Any, tuple]]:
    """(object, its field values) for every node, list and dict in the tree."""
    out: list[tuple[Any, tuple]] = []

    def go(node: Any) -> None:
        if is_array(node):
            return
        if isinstance(node, Node):
            out.append((node, tuple(node.__dict__.values())))
        elif type(node) is list:
            out.append((node, tuple(node)))
        elif type(node) is dict:
            out.append((node, (*node.keys(), *node.values())))
        for _, child in children(node):
            go(child)

    go(tree)
    return out


def _unchanged(snapshot: list[tuple[Any, tuple]]) -> bool:
    for obj, values in snapshot:
        if isinstance(obj, Node):
            current = tuple(obj.__dict__.values())
        elif type(obj) is list:
            current = tuple(obj)
        else:
            current = (*obj.keys(), *obj.values())
        if len(current) != len(values) or not all(map(operator.is_, current, values)):
            return False
    return True


def _grad_of(t: Tracked) -> Any:
    """A leaf's gradient as a writable, contiguous array (vjps may leave broadcast views)."""
    g = t.grad
    if g is None:
        return None
    xp = array_module(g)
    if g.ndim == 0 or not g.flags.c_contiguous or not writeable(g):
        return xp.array(g, copy=True)
    return g


def _compile(tracked: Any) -> Callable[[], Any]:
    """A function that builds the gradient tree of ``tracked`` from its leaves' ``.grad``."""
    if isinstance(tracked, Tracked):
        return lambda: _grad_of(tracked)
    kids = children(tracked)
    if not kids:
        return lambda: None
    skip = type(tracked).nontrainable if isinstance(tracked, Node) else ()
    keys = [k for k, _ in kids]
    subs = [(lambda: None) if k in skip else _compile(c) for k, c in kids]

    def values() -> list | None:
        vals = [s() for s in subs]
        return None if all(v is None for v in vals) else vals

    if isinstance(tracked, Layers):
        names = tracked.names
        return lambda: None if (v := values()) is None else Layers(v, names)
    if isinstance(tracked, Node):
        kind = type(tracked).__name__
        return lambda: None if (v := values()) is None else Tangent(kind, dict(zip(keys, v)))
    if type(tracked) is dict:
        original_keys = list(tracked)
        by_str = {str(k): k for k in original_keys}

        def build_dict() -> dict | None:
            v = values()
            if v is None:
                return None
            got = dict(zip(keys, v))
            return {by_str[s]: got.get(s) for s in by_str}

        return build_dict
    kind_t, n = type(tracked), len(tracked)

    def build_seq() -> Any:
        v = values()
        if v is None:
            return None
        got = dict(zip(keys, v))
        return kind_t(got.get(str(i)) for i in range(n))

    return build_seq


class _Trace:
    __slots__ = ("build", "busy", "leaves", "snapshot", "tracked")

    def __init__(self, model: Any) -> None:
        self.snapshot = _snapshot(model)
        self.tracked = map_arrays(track_leaf, model)
        self.leaves = [t for t in _tracked_leaves(self.tracked)]
        self.build = _compile(self.tracked)
        self.busy = False


def _tracked_leaves(tree: Any) -> list[Tracked]:
    seen: dict[int, Tracked] = {}

    def go(node: Any) -> None:
        if isinstance(node, Tracked):
            seen.setdefault(id(node), node)
            return
        for _, child in children(node):
            go(child)

    go(tree)
    return list(seen.values())


def _traces() -> weakref.WeakKeyDictionary:
    cache = getattr(_state, "traces", None)
    if cache is None:
        cache = _state.traces = weakref.WeakKeyDictionary()
    return cache


def trace_model(model: Any) -> tuple[Any, Callable[[], Any], Callable[[], None]]:
    """``(tracked copy, gradient builder, release)`` for a model, reused when unchanged."""
    try:
        cache = _traces()
        trace = cache.get(model)
    except TypeError:  # unhashable root: no reuse
        trace = _Trace(model)
        return trace.tracked, trace.build, lambda: None
    if trace is None or trace.busy or not _unchanged(trace.snapshot):
        if trace is not None and trace.busy:  # re-entrant use: a private trace
            fresh = _Trace(model)
            return fresh.tracked, fresh.build, lambda: None
        trace = cache[model] = _Trace(model)
    for leaf in trace.leaves:
        leaf.grad = None
    trace.busy = True

    def release() -> None:
        trace.busy = False

    return trace.tracked, trace.build, release


def build_gradient(tracked: Any) -> Any:
    """The gradient tree of a freshly tracked (uncached) argument."""
    return _compile(tracked)()
