"""``gradient`` and ``withgradient``: Zygote's explicit API over the tape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _dispatch  # noqa: F401  (gives Tracked its operators)
from ._backend import array_module, to_float
from ._tape import Tracked, backprop, recording
from ._trace import build_gradient, trace_model, track_leaf
from ._tree import Node, children, is_array, map_arrays

__all__ = ["GradientError", "gradient", "withgradient"]


class GradientError(ValueError):
    """``gradient`` was called with a function or arguments it cannot differentiate."""


def _track(arg: Any) -> tuple[Any, Callable[[], Any], Callable[[], None]]:
    """``(tracked argument, gradient builder, release)`` for one argument of ``f``."""
    if isinstance(arg, Tracked):
        raise GradientError("nested gradient() calls are not supported (no higher-order "
                            "gradients): an argument is already being differentiated")
    if isinstance(arg, Node):
        return trace_model(arg)
    if is_array(arg):
        if arg.dtype.kind not in "fc":
            return arg, _none, _noop
        leaf = Tracked(arg)
        return leaf, lambda: build_gradient(leaf), _noop
    if isinstance(arg, float):
        leaf = Tracked(np.float64(arg))
        return leaf, lambda: None if leaf.grad is None else to_float(leaf.grad), _noop
    if children(arg):
        tracked = map_arrays(track_leaf, arg)
        return tracked, lambda: build_gradient(tracked), _noop
    return arg, _none, _noop


def _none() -> None:
    return None


def _noop() -> None:
    pass


def _scalar_root(out: Any) -> Any:
    d = out.data if isinstance(out, Tracked) else out
    if isinstance(d, (int, float)) or np.isscalar(d):
        return d
    if is_array(d):
        if d.size != 1:
            raise GradientError(
                "gradient(f, ...): f must return a scalar loss (a number or a one-element "
                f"array); it returned an array of shape {tuple(d.shape)}. Reduce it first, "
                "e.g. with .mean() or .sum()"
            )
        if d.dtype.kind not in "fc":
            raise GradientError(f"gradient(f, ...): f returned a {d.dtype} value; a loss must "
                                "be a floating-point number")
        return d
    raise GradientError(f"gradient(f, ...): f must return a scalar loss; it returned "
                        f"{type(out).__name__}")


def withgradient(f: Callable[..., Any], *args: Any) -> tuple[Any, tuple]:
    """``(value, grads)``: ``f(*args)`` and one gradient per argument, shaped like it.

    ``grads[i]`` is an array for an array argument, a tree of ``Tangent`` records for a
    model (``grads[0].layers.dec.layers[0].weight``), a float for a float argument, and
    None wherever nothing flowed (integer arrays, unused parameters, configuration).
    """
    if not callable(f):
        raise GradientError(f"gradient(f, ...): f must be callable; got {type(f).__name__}")
    traced = [_track(a) for a in args]
    try:
        with recording() as tape:
            out = f(*[t[0] for t in traced])
        value = _scalar_root(out)
        if isinstance(out, Tracked):
            d = out.data
            backprop(tape, out, array_module(d).ones(d.shape, dtype=d.dtype))
        grads = tuple(build() for _, build, _ in traced)
    finally:
        for _, _, release in traced:
            release()
    if is_array(value):
        value = value.reshape(())[()] if array_module(value) is np else value.reshape(())
    return value, grads


def gradient(f: Callable[..., Any], *args: Any) -> tuple:
    """One gradient per argument of ``f``, shaped like it (see :func:`withgradient`)."""
    return withgradient(f, *args)[1]
