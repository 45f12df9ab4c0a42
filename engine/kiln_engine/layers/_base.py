"""The Layer base class and the errors layers raise on bad input."""

from __future__ import annotations

from typing import Any

from .._ops import astype, data
from .._tree import Layers, Node

__all__ = ["MAX_RANK", "Layer", "ShapeError", "check_input", "member_name", "members_repr"]

#: numpy's limit on the number of dimensions: ``range(k, MAX_RANK + 1)`` means "rank k or more".
MAX_RANK = 64


class ShapeError(ValueError):
    """An input whose shape or dtype does not fit a layer.

    The message names the layer, what it expected and what it got; ``path`` is filled in
    by enclosing containers on the way out (``layers.enc.layers.0``).
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class Layer(Node):
    """A model building block: a callable tree node whose array fields are its parameters.

    Fields are plain attributes (``layer.weight = W`` is allowed); the tree helpers find
    the arrays among them. Subclasses implement ``__call__`` and ``__repr__``.
    """

    def __call__(self, x: Any) -> Any:  # pragma: no cover - every layer overrides it
        raise NotImplementedError


def check_input(layer: Layer, x: Any, *, ndim: int | tuple[int, ...] | range,
                features: int | None, axis: int, like: Any, what: str) -> Any:
    """Validate ``x`` for ``layer`` and cast it to the dtype of its parameter ``like``.

    ``ndim`` is the allowed rank(s), ``features`` the size expected on ``axis``.
    Raises ShapeError naming the layer, what was expected and what was found.
    """
    d = data(x)
    if not hasattr(d, "shape") or not hasattr(d, "dtype"):
        raise ShapeError(f"{layer!r} expects an array; got {type(x).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if d.ndim not in allowed:
        raise ShapeError(f"{layer!r} expects {what}; got an array of shape {tuple(d.shape)}")
    if features is not None and d.shape[axis] != features:
        raise ShapeError(
            f"{layer!r} expects {features} features on axis {axis} ({what}); got shape "
            f"{tuple(d.shape)}"
        )
    if d.dtype.kind != "f":
        raise ShapeError(f"{layer!r} expects floating-point input; got {d.dtype} "
                         f"(cast it with x.astype(np.float32))")
    if like is not None and d.dtype != like.dtype:
        return astype(x, like.dtype)
    return x


def member_name(v: Any) -> str:
    """How a member layer or function (an activation, a connection) shows in a layer's repr."""
    return repr(v) if isinstance(v, Layer) else getattr(v, "__name__", repr(v))


def members_repr(layers: Layers) -> str:
    """The members of a Chain or Parallel, ``name=…`` when named, comma-separated."""
    if layers.names:
        return ", ".join(f"{n}={member_name(v)}" for n, v in zip(layers.names, layers))
    return ", ".join(member_name(v) for v in layers)
