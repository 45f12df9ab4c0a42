"""SkipConnection and Parallel: Flux's containers for branching models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._ops import concatenate, data
from .._tree import Layers
from ._base import Layer, ShapeError, member_name, members_repr

__all__ = ["Parallel", "SkipConnection", "concat"]


@contextmanager
def _member(path: str) -> Iterator[None]:
    """Prefix the path of a ShapeError raised inside a member with the member's path."""
    try:
        yield
    except ShapeError as e:
        e.path = path + (f".{e.path}" if e.path else "")
        raise


def concat(axis: int = -1) -> Callable[..., Any]:
    """A connection joining its arguments along ``axis`` (default the feature axis, last,
    which is Flux's ``vcat`` in batch-first layout)."""
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ValueError(f"concat: axis must be an int; got {axis!r}")

    def join(*xs: Any) -> Any:
        shapes = [tuple(data(x).shape) for x in xs]
        first = shapes[0]
        ok = -len(first) <= axis < len(first) and all(
            len(s) == len(first) and all(a == b for i, (a, b) in enumerate(zip(s, first))
                                         if i != axis % len(first)) for s in shapes)
        if not ok:
            raise ShapeError(f"concat({axis}) needs arrays of one rank that agree on every axis "
                             f"but {axis}; got shapes {shapes}")
        return concatenate(xs, axis=axis)

    join.__name__ = join.__qualname__ = f"concat({axis})"
    return join


class SkipConnection(Layer):
    """``SkipConnection(layer, connection)``: ``connection(layer(x), x)``.

    ``connection`` takes the layer's output and the input, e.g. ``operator.add`` for a
    residual block or ``concat(1)`` to stack channels (DenseNet style).
    """

    def __init__(self, layer: Callable, connection: Callable[[Any, Any], Any]) -> None:
        if not callable(layer):
            raise ValueError(f"SkipConnection: layer must be a layer or function; got "
                             f"{type(layer).__name__}")
        if not callable(connection):
            raise ValueError(f"SkipConnection: connection must be callable; got "
                             f"{type(connection).__name__}")
        self.layer = layer
        self.connection = connection

    def __call__(self, x: Any) -> Any:
        with _member("layer"):
            y = self.layer(x)
        with _member("connection"):
            return self.connection(y, x)

    def __repr__(self) -> str:
        return f"SkipConnection({member_name(self.layer)}, {member_name(self.connection)})"


class Parallel(Layer):
    """``Parallel(connection, *layers)`` or ``Parallel(connection, a=..., b=...)``.

    With one input every layer sees it; with several inputs (or one tuple of them) layer
    i sees input i, and a single layer is applied to each. The outputs are combined by
    ``connection(y1, y2, ...)``, e.g. ``concat(-1)`` or ``operator.add``. Members live in
    ``.layers`` (paths ``layers.0`` or ``layers.a``), as in Chain.
    """

    def __init__(self, connection: Callable[..., Any], *layers: Any, **named: Any) -> None:
        if not callable(connection):
            raise ValueError(f"Parallel: connection must be callable; got "
                             f"{type(connection).__name__}")
        if layers and named:
            raise ValueError("Parallel: give the layers either all by position or all by name")
        members = tuple(named.values()) if named else layers
        if not members:
            raise ValueError("Parallel: needs at least one layer")
        keys = list(named) if named else list(range(len(members)))
        for key, m in zip(keys, members):
            if not callable(m):
                raise ValueError(f"Parallel: member {key!r} must be a layer or function; got "
                                 f"{type(m).__name__}")
        self.connection = connection
        self.layers = Layers(members, tuple(named) if named else None)

    def __call__(self, *xs: Any) -> Any:
        if len(xs) == 1 and isinstance(xs[0], tuple):
            xs = xs[0]
        n = len(self.layers)
        if not xs:
            raise ValueError(f"{self!r} called with no input")
        if len(xs) == 1:
            xs = xs * n
        elif n == 1:
            return self._combine([self._run(0, x) for x in xs])
        elif len(xs) != n:
            raise ValueError(f"{self!r} has {n} layers but got {len(xs)} inputs; give one "
                             f"input for all layers or one per layer")
        return self._combine([self._run(i, x) for i, x in enumerate(xs)])

    def _run(self, i: int, x: Any) -> Any:
        names = self.layers.names
        with _member(f"layers.{names[i] if names else i}"):
            return self.layers[i](x)

    def _combine(self, ys: list) -> Any:
        with _member("connection"):
            return self.connection(*ys)

    def __repr__(self) -> str:
        return f"Parallel({member_name(self.connection)}, {members_repr(self.layers)})"
