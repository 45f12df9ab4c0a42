"""``gradient`` and ``withgradient``: Zygote's explicit API over the tape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _dispatch  # noqa: F401  (gives Tracked its operators)
from ._backend import array_module
from ._tape import Tracked, backprop, recording
from ._tree import Layers, Node, Tangent, _is_trainable, children, is_array, map_arrays

__all__ = ["GradientError", "gradient", "withgradient"]


class GradientError(ValueError):
    """``gradient`` was called with a function or arguments it cannot differentiate."""


def _is_float_array(x: Any) -> bool:
    return is_array(x) and x.dtype.kind in "fc"


def _leaf(x: Any) -> Any:
    return Tracked(x) if x.dtype.kind in "fc" else x


def _track(arg: Any) -> Any:
    """Wrap every differentiable array in ``arg`` (an array, a float, a model or a container)."""
    if isinstance(arg, Tracked):
        raise GradientError("nested gradient() calls are not supported (no higher-order "
                            "gradients): an argument is already being differentiated")
    if is_array(arg):
        return _leaf(arg)
    if isinstance(arg, float):
        return Tracked(np.float64(arg))
    if children(arg):
        return map_arrays(lambda x: _leaf(x) if not isinstance(x, Tracked) else x, arg)
    return arg


def _grad_of(t: Any) -> Any:
    g = t.grad
    if g is None:
        return None
    return array_module(g).asarray(g) if g.ndim == 0 else g


def _collect(original: Any, tracked: Any) -> Any:
    """The gradient tree for one argument, shaped like it; None where nothing flowed."""
    if isinstance(tracked, Tracked):
        g = _grad_of(tracked)
        if isinstance(original, float):
            return None if g is None else float(g)
        return g
    kids = children(tracked)
    if not kids:
        return None
    grads = {
        k: (_collect(None, c) if _is_trainable(tracked, k) else None) for k, c in kids
    }
    if all(g is None for g in grads.values()):
        return None
    if isinstance(tracked, Layers):
        return Layers([grads[k] for k, _ in kids], tracked.names)
    if isinstance(tracked, Node):
        return Tangent(type(tracked).__name__, grads)
    t = type(tracked)
    if t is dict:
        return {k: grads.get(str(k)) for k in tracked}
    return t(grads.get(str(i)) for i in range(len(tracked)))


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
    with recording() as tape:
        tracked = [_track(a) for a in args]
        out = f(*tracked)
    value = _scalar_root(out)
    if isinstance(out, Tracked):
        d = out.data
        seed = array_module(d).ones(d.shape, dtype=d.dtype)
        backprop(tape, out, seed)
    grads = tuple(_collect(a, t) for a, t in zip(args, tracked))
    if is_array(value):
        value = value.reshape(())[()] if array_module(value) is np else value.reshape(())
    return value, grads


def gradient(f: Callable[..., Any], *args: Any) -> tuple:
    """One gradient per argument of ``f``, shaped like it (see :func:`withgradient`)."""
    return withgradient(f, *args)[1]
