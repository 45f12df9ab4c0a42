"""Training and test mode: layers that behave differently while training.

Dropout and BatchNorm are *automatic* by default, as in Flux: they train (drop units,
use and update batch statistics) only while ``gradient`` records, and act as in
inference everywhere else. ``trainmode(model)`` / ``testmode(model)`` force every such
layer in a whole tree on or off, in place, like Flux's ``trainmode!`` / ``testmode!``;
``mode=None`` hands them back to the automatic behaviour (Flux's ``:auto``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._tape import in_gradient
from .._tree import children
from ._base import Layer

__all__ = ["ModalLayer", "check_active", "testmode", "trainmode"]


class ModalLayer(Layer):
    """A layer with a training and a test behaviour, chosen by its ``active`` field.

    ``active`` is None (automatic: train inside ``gradient``), True (always train) or
    False (never train). ``trainmode`` and ``testmode`` set it across a tree.
    """

    active: bool | None = None

    def training(self) -> bool:
        """Whether this call should use the training behaviour."""
        return in_gradient() if self.active is None else self.active


def check_active(owner: str, active: Any, name: str = "active") -> None:
    """Raise ValueError unless ``active`` is True, False or None (automatic)."""
    if active is not None and not isinstance(active, bool):
        raise ValueError(f"{owner}: {name} must be True, False or None (automatic); got "
                         f"{active!r}")


def _nodes(tree: Any) -> Iterator[Any]:
    yield tree
    for _, child in children(tree):
        yield from _nodes(child)


def _set_active(model: Any, active: bool | None) -> None:
    for node in _nodes(model):
        if isinstance(node, ModalLayer):
            node.active = active


def trainmode(model: Any, mode: bool | None = True) -> Any:
    """Force every Dropout / BatchNorm in ``model`` to train (``mode=True``), to test
    (``False``) or back to automatic (``None``), in place; returns ``model``."""
    check_active("trainmode", mode, "mode")
    _set_active(model, mode)
    return model


def testmode(model: Any, mode: bool | None = True) -> Any:
    """Force every Dropout / BatchNorm in ``model`` to test (``mode=True``), to train
    (``False``) or back to automatic (``None``), in place; returns ``model``."""
    check_active("testmode", mode, "mode")
    _set_active(model, None if mode is None else not mode)
    return model


# A name starting with "test" would be collected by pytest from any test module that
# imports it; this marks it as not a test.
testmode.__test__ = False  # type: ignore[attr-defined]
