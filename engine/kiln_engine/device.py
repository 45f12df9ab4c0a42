"""Moving whole models (and any tree of arrays) between the CPU and a GPU."""

from __future__ import annotations

from typing import Any

from . import _backend
from ._backend import parse_device
from ._tree import map_arrays

__all__ = ["cpu", "gpu", "gpu_count", "parse_device", "to_device"]


def to_device(tree: Any, device: str) -> Any:
    """A copy of ``tree`` with every array (running statistics too) on ``device``.

    ``device`` is "cpu", "cuda" or "cuda:N". Asking for a GPU where none is usable raises
    DeviceError before anything is copied.
    """
    _backend.parse_device(device)
    return map_arrays(lambda x: _backend.to_device(x, device), tree, trainable=False)


def cpu(tree: Any) -> Any:
    """``to_device(tree, "cpu")``, as Flux's ``cpu``."""
    return to_device(tree, "cpu")


def gpu(tree: Any) -> Any:
    """``to_device(tree, "cuda")``, as Flux's ``gpu`` (but an error, not a no-op, without one)."""
    return to_device(tree, "cuda")


def gpu_count() -> int:
    """How many GPUs are usable here: 0 without CuPy, a driver or a device."""
    cupy = _backend.cupy_or_none()
    return 0 if cupy is None else cupy.cuda.runtime.getDeviceCount()
