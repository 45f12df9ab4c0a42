"""Reverse-mode autodiff on a tape.

Inside ``gradient(f, *args)`` the differentiable inputs are wrapped as :class:`Tracked`
arrays. Every primitive applied to a tracked array computes its result with plain
numpy/cupy and appends one node to the tape, holding its parents and one small vjp
closure. The tape is already in topological order, so the backward pass is one loop
over it in reverse: no graph sort, no recursion, a reproducible order of float sums.
Un-broadcasting and dtype casting happen once, in that loop, not in every vjp.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Tracked", "backprop", "in_gradient", "record"]


class _State(threading.local):
    tape: list | None = None


_state = _State()


class Tracked:
    """An array whose gradient is being taken. ``.data`` is the plain numpy/cupy array.

    It behaves like a numpy array inside the function passed to ``gradient``: operators,
    methods (``.sum()``, ``.T``, ``.reshape``, indexing) and numpy functions through
    numpy's dispatch protocols all record onto the tape.
    """

    __slots__ = ("data", "grad", "parents", "vjp")
    __array_priority__ = 1000.0

    def __init__(self, data: Any) -> None:
        self.data = data
        self.grad = None
        self.parents = ()
        self.vjp = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def __float__(self) -> float:
        return float(self.data)

    def item(self) -> Any:
        """The value of a one-element array as a Python number (no gradient)."""
        return self.data.item()

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        raise TypeError(
            "a tracked array cannot be converted to a plain array inside gradient(): the "
            "conversion would silently drop its gradient. Use x.data for a constant copy, "
            "or a numpy function Kiln differentiates."
        )

    def __repr__(self) -> str:
        return f"Tracked({self.data!r})"


def in_gradient() -> bool:
    """True while a ``gradient`` call is recording (Dropout and BatchNorm train then)."""
    return _state.tape is not None


def record(data: Any, parents: tuple, vjp: Callable[[Any], tuple]) -> Any:
    """Wrap a primitive's result and put it on the active tape.

    ``vjp(g)`` returns one gradient per parent (None where none flows or the parent is a
    constant); shapes may be broadcast, the backward loop reduces them. Outside
    ``gradient`` there is no tape and the plain result is returned.
    """
    tape = _state.tape
    if tape is None:
        return data
    t = Tracked.__new__(Tracked)
    t.data = data
    t.grad = None
    t.parents = parents
    t.vjp = vjp
    tape.append(t)
    return t


def unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` down to ``shape``, undoing numpy broadcasting."""
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def backprop(tape: list, root: Tracked, seed: Any) -> None:
    """Run the tape backwards from ``root`` with gradient ``seed``, filling ``.grad``."""
    root.grad = seed
    for node in reversed(tape):
        g = node.grad
        if g is None:
            continue
        grads = node.vjp(g)
        node.grad = None  # intermediate gradients are freed as soon as they are used
        node.vjp = None
        for p, gp in zip(node.parents, grads):
            if gp is None or p.__class__ is not Tracked:
                continue
            pd = p.data
            if gp.shape != pd.shape:
                gp = unbroadcast(gp, pd.shape)
            if gp.dtype != pd.dtype:
                gp = gp.astype(pd.dtype)
            p.grad = gp if p.grad is None else p.grad + gp
    tape.clear()


class _Recording:
    """Context manager that makes a fresh tape active (nested calls keep their own)."""

    __slots__ = ("prev", "tape")

    def __enter__(self) -> list:
        self.prev = _state.tape
        self.tape = []
        _state.tape = self.tape
        return self.tape

    def __exit__(self, *exc: object) -> None:
        _state.tape = self.prev


def recording() -> _Recording:
    """A fresh active tape for the duration of a ``with`` block."""
    return _Recording()
