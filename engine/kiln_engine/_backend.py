"""Array backend: numpy on the CPU, cupy on a GPU.

Everything else in the engine is written once against the numpy API and asks this
module which array module (``xp``) owns an array. Device-specific code lives here.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["DeviceError", "array_module", "cupy_or_none", "device_of", "to_device"]


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


def cupy_or_none() -> Any:
    """The cupy module if it is installed and sees a GPU, else None."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # cupy installed but no driver / no device
        return None
    return cupy


def array_module(x: Any) -> Any:
    """numpy or cupy, whichever owns ``x`` (numpy for anything that is not a cupy array)."""
    if type(x) is np.ndarray:
        return np
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def device_of(x: Any) -> str:
    """"cpu" or "cuda:N" for an array."""
    if type(x).__module__.startswith("cupy"):
        return f"cuda:{x.device.id}"
    return "cpu"


_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(?::(\d+))?$")


def parse_device(device: str) -> tuple[str, int]:
    """Split "cuda:1" into ("cuda", 1); raise DeviceError for anything unknown or absent."""
    m = _DEVICE_RE.match(device.strip().lower()) if isinstance(device, str) else None
    if m is None:
        raise DeviceError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "cpu":
        return "cpu", 0
    cupy = cupy_or_none()
    if cupy is None:
        raise DeviceError(
            f"device {device!r} was asked for, but no GPU is usable here: "
            "install kiln-engine[gpu] (cupy) on a machine with an NVIDIA GPU, or use 'cpu'"
        )
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise DeviceError(f"device {device!r} does not exist: this machine has {count} GPU(s)")
    return "cuda", index


def to_device(x: Any, device: str) -> Any:
    """Move one array to ``device`` ("cpu", "cuda", "cuda:N"); other values pass through."""
    kind, index = parse_device(device)
    if kind == "cpu":
        if type(x).__module__.startswith("cupy"):
            return x.get()
        return x
    import cupy

    if isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy"):
        with cupy.cuda.Device(index):
            return cupy.asarray(x)
    return x
