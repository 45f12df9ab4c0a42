"""Array backend: numpy on the CPU, cupy on a GPU.

Everything else in the engine is written once against the numpy API and asks this
module which array module (``xp``) owns an array. The places where numpy and cupy
differ are here, each one helper:

- scatter-add (``np.add.at``; ``cupyx.scatter_add`` on the GPU): :func:`scatter_add`;
- windows over an array (``sliding_window_view``, ``as_strided``, both under
  ``xp.lib.stride_tricks`` in both libraries but named once): :func:`sliding_window_view`;
- random streams: generators stay numpy's on the host (they seed, checkpoint and resume
  the same everywhere); a device stream is seeded from them: :func:`uniform`;
- flags: cupy arrays have no ``writeable`` flag (they always are): :func:`writeable`;
- host copies: :func:`to_host` for arrays, :func:`to_float` for a scalar such as the loss
  (on a GPU it waits for the device, so it is called once a step, not in a loop).

In-place ufuncs (``xp.maximum(y, 0, out=y)``, ``xp.multiply(s, c, out=s)``) take ``out=``
alike in both and are called on ``xp`` directly; the one in-place form cupy lacks before
v12, ``ufunc.at``, is :func:`scatter_add`. Fused CUDA kernels live in ``kernels/``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = [
    "DeviceError", "array_module", "cupy_or_none", "device_of", "parse_device", "scatter_add",
    "sliding_window_view", "to_device", "to_float", "to_host", "uniform", "writeable",
]


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


def _on_device(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def array_module(x: Any) -> Any:
    """numpy or cupy, whichever owns ``x`` (numpy for anything that is not a cupy array)."""
    if type(x) is np.ndarray:
        return np
    if _on_device(x):
        import cupy

        return cupy
    return np


def device_of(x: Any) -> str:
    """"cpu" or "cuda:N" for an array."""
    if _on_device(x):
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
        return to_host(x)
    import cupy

    if isinstance(x, np.ndarray) or _on_device(x):
        with cupy.cuda.Device(index):
            return cupy.asarray(x)
    return x


def to_host(x: Any) -> Any:
    """A numpy copy of a device array; a numpy array (or anything else) as it is."""
    return x.get() if _on_device(x) else x


def to_float(x: Any) -> float:
    """A scalar (a loss, a metric: a number, a numpy scalar or a one-element array of either
    kind) as a Python float. For a device array this copies it to the host, waiting for
    the GPU to finish the work that makes it: the one synchronisation of a training step."""
    return float(x)


def writeable(x: Any) -> bool:
    """Whether ``x`` may be written in place (a cupy array always may; numpy views of
    broadcasts and windows may not)."""
    return getattr(x.flags, "writeable", True)


def scatter_add(out: Any, index: Any, values: Any) -> None:
    """``out[index] += values`` where repeated indices add up (``np.add.at``)."""
    if array_module(out) is np:
        np.add.at(out, index, values)
    else:
        import cupyx

        cupyx.scatter_add(out, index, values)


def sliding_window_view(x: Any, window: tuple[int, ...], axis: tuple[int, ...]) -> Any:
    """A read-only view of every ``window`` of ``x`` over ``axis`` (nothing is copied)."""
    return array_module(x).lib.stride_tricks.sliding_window_view(x, window, axis=axis)


def uniform(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, xp: Any) -> Any:
    """U[0, 1) samples of ``dtype`` (float32, else float64) on the device of ``xp``.

    On the CPU they are drawn from ``rng``; on a GPU from a device generator seeded by one
    draw of ``rng``, so ``rng`` (a host generator, which checkpoints save) still fixes them.
    """
    dtype = np.float32 if dtype == np.float32 else np.float64
    if xp is np:
        return rng.random(shape, dtype=dtype)
    return xp.random.default_rng(int(rng.integers(2**63))).random(shape, dtype=dtype)
