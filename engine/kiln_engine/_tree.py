"""Models, gradients and optimiser state are trees; this module walks them.

A tree is made of nodes (subclasses of :class:`Node`: layers, the ``Layers`` container
of a Chain, gradient ``Tangent`` records), tuples, lists and dicts, with arrays at the
leaves. A node's children are its fields that hold arrays or other trees; every other
field (sizes, activation functions, flags) is configuration. One set of helpers here
serves gradients, optimiser state, device moves, serialisation and path lookup.

Paths are dotted strings: ``layers.enc``, ``layers.0.weight``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from ._tape import Tracked

__all__ = [
    "Layers",
    "Node",
    "PathError",
    "Tangent",
    "children",
    "fmap",
    "getpath",
    "is_array",
    "is_tree",
    "leaves",
    "map_arrays",
    "near_paths",
    "params",
    "paths",
]


# Exact types checked first: tree walks run on every gradient call, so the common case
# must cost one set lookup. Subclasses (np.memmap) and cupy arrays take the slow path.
_ARRAY_TYPES = {np.ndarray, Tracked}
# Field types that are always configuration, never a subtree.
_CONFIG_TYPES = {int, float, str, bool, type(None), type(len), type(lambda: 0), np.ufunc}


def is_array(x: Any) -> bool:
    """True for numpy arrays, cupy arrays and arrays tracked by an active gradient."""
    t = type(x)
    return t in _ARRAY_TYPES or isinstance(x, np.ndarray) or t.__module__.startswith("cupy")


def is_tree(x: Any) -> bool:
    """True where ``x`` holds at least one array (so it is a child, not configuration)."""
    t = type(x)
    if t in _ARRAY_TYPES or isinstance(x, Node):
        return True
    if t in _CONFIG_TYPES:
        return False
    if t is tuple or t is list:
        return any(is_tree(e) for e in x)
    if t is dict:
        return any(is_tree(e) for e in x.values())
    return is_array(x)


class Node:
    """Base of every tree node. Fields holding arrays or trees are children."""

    #: Array fields that carry state but are not trained (BatchNorm's running statistics).
    nontrainable: ClassVar[frozenset[str]] = frozenset()

    def _children(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.__dict__.items()
                if type(v) in _ARRAY_TYPES or (type(v) not in _CONFIG_TYPES and is_tree(v))]

    def _replace(self, new: dict[str, Any]) -> Node:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__.update(new)
        return clone


class Layers(Node):
    """The sequence inside a Chain or Parallel: indexed by position, and by name when named."""

    def __init__(self, items: tuple | list, names: tuple[str, ...] | None = None) -> None:
        self.__dict__["_items"] = tuple(items)
        self.__dict__["_names"] = tuple(names) if names is not None else None

    def _children(self) -> list[tuple[str, Any]]:
        keys = self._names or [str(i) for i in range(len(self._items))]
        return list(zip(keys, self._items))

    def _replace(self, new: dict[str, Any]) -> Layers:
        keys = self._names or [str(i) for i in range(len(self._items))]
        clone = object.__new__(Layers)
        clone.__dict__["_items"] = tuple(new.get(k, item) for k, item in zip(keys, self._items))
        clone.__dict__["_names"] = self._names
        return clone

    @property
    def names(self) -> tuple[str, ...] | None:
        """The names of a named sequence, else None."""
        return self._names

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self.__getattr__(key)
        if isinstance(key, slice):
            names = self._names[key] if self._names else None
            return Layers(self._items[key], names)
        return self._items[key]

    def __getattr__(self, name: str) -> Any:
        names = self.__dict__.get("_names")
        if names and name in names:
            return self._items[names.index(name)]
        raise AttributeError(
            f"no layer named {name!r}; names are {list(names) if names else 'positional only'}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Layers is immutable; build a new Chain instead")

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Layers)
            and self._names == other._names
            and len(self._items) == len(other._items)
            and all(a is b or a == b for a, b in zip(self._items, other._items))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._names:
            inner = ", ".join(f"{n}={v!r}" for n, v in zip(self._names, self._items))
        else:
            inner = ", ".join(repr(v) for v in self._items)
        return f"Layers({inner})"


class Tangent(Node):
    """The gradient of a layer: the layer's children by name, None where nothing flowed."""

    def __init__(self, kind: str, fields: dict[str, Any]) -> None:
        self.__dict__["_kind"] = kind
        self.__dict__["_fields"] = dict(fields)

    def _children(self) -> list[tuple[str, Any]]:
        return list(self._fields.items())

    def _replace(self, new: dict[str, Any]) -> Tangent:
        return Tangent(self._kind, {**self._fields, **new})

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("_fields")
        if fields is None:  # copy and pickle look up methods on an instance not yet filled
            raise AttributeError(name)
        if name in fields:
            return fields[name]
        raise AttributeError(
            f"the gradient of a {self._kind} has no field {name!r}; it has {list(fields)}"
        )

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def keys(self) -> list[str]:
        """Field names, in the layer's order."""
        return list(self._fields)

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            return f"array{tuple(v.shape)}" if is_array(v) else repr(v)

        inner = ", ".join(f"{k}={short(v)}" for k, v in self._fields.items())
        return f"Tangent[{self._kind}]({inner})"


def children(tree: Any) -> list[tuple[str, Any]]:
    """The (key, child) pairs of a tree node, tuple, list or dict; [] for a leaf."""
    if isinstance(tree, Node):
        return tree._children()
    t = type(tree)
    if t is tuple or t is list:
        return [(str(i), v) for i, v in enumerate(tree) if is_tree(v)]
    if t is dict:
        return [(str(k), v) for k, v in tree.items() if is_tree(v)]
    return []


def _rebuild(tree: Any, new: dict[str, Any]) -> Any:
    if isinstance(tree, Node):
        return tree._replace(new)
    t = type(tree)
    if t is tuple or t is list:
        return t(new.get(str(i), v) for i, v in enumerate(tree))
    return {k: new.get(str(k), v) for k, v in tree.items()}


def _is_trainable(parent: Any, key: str) -> bool:
    return not (isinstance(parent, Node) and key in type(parent).nontrainable)


def leaves(tree: Any, *, trainable: bool = True, prefix: str = "") -> list[tuple[str, Any]]:
    """Every array in ``tree`` with its dotted path, depth first in field order.

    With ``trainable=True`` the non-trainable fields (running statistics) are left out.
    A tied array appears once per place it is used.
    """
    if is_array(tree):
        return [(prefix, tree)]
    out: list[tuple[str, Any]] = []
    for key, child in children(tree):
        if trainable and not _is_trainable(tree, key):
            continue
        out.extend(leaves(child, trainable=trainable, prefix=f"{prefix}.{key}" if prefix else key))
    return out


def params(tree: Any) -> list[Any]:
    """The trainable arrays of a model, each once (tied arrays are not repeated).

    Inside ``gradient`` these are the tracked arrays, so a penalty such as
    ``sum((p ** 2).sum() for p in params(m))`` is differentiated.
    """
    seen: set[int] = set()
    out = []
    for _, x in leaves(tree):
        if id(x) not in seen:
            seen.add(id(x))
            out.append(x)
    return out


def map_arrays(fn: Callable[[Any], Any], tree: Any, *, trainable: bool = True) -> Any:
    """A copy of ``tree`` with every array replaced by ``fn(array)``; the original is untouched.

    An array that appears in several places (tied weights) is mapped once and the result
    shared. With ``trainable=True`` non-trainable fields keep the very same array object.
    """
    cache: dict[int, Any] = {}

    def go(node: Any) -> Any:
        if type(node) in _ARRAY_TYPES or is_array(node):
            key = id(node)
            if key not in cache:
                cache[key] = fn(node)
            return cache[key]
        kids = children(node)
        if not kids:
            return node
        skip = type(node).nontrainable if trainable and isinstance(node, Node) else ()
        return _rebuild(node, {k: go(c) for k, c in kids if k not in skip})

    return go(tree)


def fmap(f: Callable[..., Any], model: Any, *trees: Any) -> Any:
    """Functors' ``fmap``: ``f(x, *ys)`` at every array ``x`` of ``model``, where ``ys`` are
    what ``trees`` hold at ``x``'s path; a copy of ``model`` holding what ``f`` returned.

    The Flux guide's manual update, with ``grads = gradient(loss, model)[0]``::

        fmap(lambda p, g: np.subtract(p, eta * g, out=p), model, grads)

    Where a tree holds None or nothing at a path (no gradient flowed there), the arrays
    below it are kept as they are and ``f`` is not called. A state tree from ``setup``
    may be one of ``trees``: ``f`` then gets the :class:`Leaf` at each array.
    ``f`` is called once per distinct ``(x, *ys)`` (by identity): a tied array with one
    gradient per place it is used gets a call for each, but one call, its result shared,
    when ``trees`` hold the same at both places (or there are none).
    """
    cache: dict[tuple[int, ...], Any] = {}

    def go(node: Any, ys: list[Any], path: str) -> Any:
        if is_array(node):
            key = (id(node), *map(id, ys))
            if key not in cache:
                cache[key] = f(node, *ys)
            return cache[key]
        kids = children(node)
        if not kids:
            return node
        for y in ys:
            if is_array(y):
                raise ValueError(f"fmap: a tree holds an array at {path or 'the root'!r}, "
                                 f"where the model has a {type(node).__name__}")
        subs = [dict(children(y)) for y in ys]
        new = {}
        for key, child in kids:
            below = [sub.get(key) for sub in subs]
            if all(b is not None for b in below):
                new[key] = go(child, below, f"{path}.{key}" if path else key)
        return _rebuild(node, new)

    return go(model, list(trees), "")


def paths(tree: Any, *, prefix: str = "") -> list[str]:
    """Every subtree's dotted path, parents before children (the root is '')."""
    out = [prefix]
    for key, child in children(tree):
        out.extend(paths(child, prefix=f"{prefix}.{key}" if prefix else key))
    return out


#: Path segments that only step into a layer's sublayers (``Chain.layers``,
#: ``Parallel.layers``, ``SkipConnection.layer``): people leave them out (``enc`` for
#: ``layers.enc``), so :func:`near_paths` matches paths without them.
CONTAINER_SEGMENTS = frozenset({"layers", "layer"})


def _without_containers(path: str) -> str:
    return ".".join(p for p in path.split(".") if p not in CONTAINER_SEGMENTS)


def near_paths(path: str, valid: list[str], n: int = 3) -> list[str]:
    """The paths of ``valid`` that ``path`` most likely meant (at most ``n``, best first).

    Those equal to it once the container segments are left out of both come first
    (``enc.0`` means ``layers.enc.layers.0``); failing those, close spellings of it, with
    and without the container segments (``layers.encc``, ``encc``).
    """
    if not isinstance(path, str):
        return []
    bare, last = _without_containers(path), path.rsplit(".", 1)[-1]
    same = [p for p in valid if p and _without_containers(p) == bare]
    if same:  # 'layers.enc' for 'enc', rather than its container 'layers.enc.layers' too
        return ([p for p in same if p.rsplit(".", 1)[-1] == last] or same)[:n]
    by_bare: dict[str, str] = {}
    for p in valid:
        by_bare.setdefault(_without_containers(p), p)
    near = [by_bare[b] for b in difflib.get_close_matches(bare, list(by_bare), n=n, cutoff=0.6)]
    for p in difflib.get_close_matches(path, valid, n=n, cutoff=0.6):
        if p not in near:
            near.append(p)
    return near[:n]


class PathError(KeyError):
    """A dotted path that names nothing in the tree; the message names the nearest valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def getpath(tree: Any, path: str) -> Any:
    """The subtree at a dotted path (``''`` is the whole tree)."""
    if not isinstance(path, str):
        raise PathError(f"a path must be a dotted string such as 'layers.0.weight'; got {path!r}")
    node = tree
    if path == "":
        return node
    walked = []
    for part in path.split("."):
        found = dict(children(node))
        if part not in found:
            valid = [p for p in paths(tree) if p]
            near = near_paths(path, valid)
            here = ".".join(walked) or "the root"
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise PathError(
                f"no subtree at path {path!r}: {here} has children {sorted(found) or 'none'}{hint}"
            )
        node = found[part]
        walked.append(part)
    return node
