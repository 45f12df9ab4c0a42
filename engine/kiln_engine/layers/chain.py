"""Chain: layers applied in sequence, positional or named."""

from __future__ import annotations

from typing import Any

from .._tree import Layers
from ._base import Layer, ShapeError, members_repr

__all__ = ["Chain"]


class Chain(Layer):
    """``Chain(l1, l2, ...)`` or ``Chain(enc=..., dec=...)``: applies each layer in turn.

    ``.layers`` is indexed by position (``model.layers[0]``) and, when named, by
    attribute (``model.layers.enc``). Plain functions (``softmax``) may be members.
    A shape error inside names the member's path (``layers.enc.layers.0``).
    """

    def __init__(self, *layers: Any, **named: Any) -> None:
        if layers and named:
            raise ValueError("Chain: give the layers either all by position or all by name")
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        members = tuple(named.values()) if named else tuple(layers)
        for i, m in enumerate(members):
            if not callable(m):
                key = list(named)[i] if named else i
                raise ValueError(f"Chain: member {key!r} must be a layer or function; got "
                                 f"{type(m).__name__}")
        self.layers = Layers(members, tuple(named) if named else None)

    def __call__(self, x: Any) -> Any:
        names = self.layers.names
        for i, layer in enumerate(self.layers):
            try:
                x = layer(x)
            except ShapeError as e:
                key = names[i] if names else i
                e.path = f"layers.{key}" + (f".{e.path}" if e.path else "")
                raise
        return x

    def __getitem__(self, key: int | str | slice) -> Any:
        item = self.layers[key]
        if not isinstance(key, slice):
            return item
        return Chain(**dict(zip(item.names, item))) if item.names else Chain(*item)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"Chain({members_repr(self.layers)})"
