"""The device a worker trains on: ``--device`` (read as the engine reads a device, and
checked to exist here before anything is registered), what the worker registers of it
(the server's DeviceInfo: which jobs it may claim, and what GET /v1/workers shows), and
``--gpus``, the GPUs of a host that get a worker each.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from kiln_engine.device import gpu_count, parse_device

__all__ = ["Device", "describe_device", "parse_gpus"]


class Device(NamedTuple):
    """A device a worker trains on: as the engine is given it, and as it is registered."""

    id: str  # "cpu" or "cuda:N"
    info: dict[str, Any]  # the server's DeviceInfo


def describe_device(device: str) -> Device:
    """``device`` ("cpu", "cuda", "cuda:N") with what the worker registers of it: the
    GPU's model and memory (from CuPy), or the host's architecture, cores and memory.
    DeviceError, saying why, for a device this machine cannot provide."""
    kind, index = parse_device(device)
    if kind == "cpu":
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return Device("cpu", {"kind": "cpu", "name": os.uname().machine,
                              "cores": os.cpu_count(), "memory_bytes": pages * page})
    import cupy  # parse_device found it, seeing this GPU

    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return Device(f"cuda:{index}", {
        "kind": "cuda", "index": index,
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "memory_bytes": int(props["totalGlobalMem"])})


def parse_gpus(text: str) -> list[int]:
    """``--gpus 0,1,3``: the GPU numbers, each once; ``--gpus all``: every GPU this machine
    shows (a container given all of a host's GPUs runs a worker on each). ValueError
    naming the flag if neither."""
    if text.strip().lower() == "all":
        if not (count := gpu_count()):
            raise ValueError("--gpus all: no GPU is usable here: install kiln-engine[gpu] "
                             "(cupy) on a machine with an NVIDIA GPU")
        return list(range(count))
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"--gpus must list GPU numbers, e.g. 0,1, or be all; got {text!r}")
    gpus = [int(p) for p in parts]
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus names a GPU twice: {text!r}")
    return gpus
