"""The engine's tests run once per array backend: the ``backend`` fixture (and ``xp``).

- "numpy": the CPU.
- "cupy": a real GPU through CuPy (marked ``gpu``: ``pytest -m gpu`` runs this half
  alone). Skipped with the reason where CuPy sees no GPU, unless KILN_REQUIRE_GPU=1,
  where that is a failure (as KILN_REQUIRE_TORCH does for the torch oracle).
- "fake": ``fake_cupy``, numpy arrays playing device arrays, so that the GPU branches
  (device moves, checkpoints across devices, the kernels' launch code with their numpy
  twins) run on every machine.

A test moves its inputs with ``backend.put`` (arrays, models, any tree) and brings
results back with ``backend.host`` before comparing them with numpy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from kiln_engine._backend import cupy_or_none, to_host
from kiln_engine._tree import map_arrays
from kiln_engine.device import to_device

from ..conftest import _missing
from . import fake_cupy


@dataclass(frozen=True)
class Backend:
    """One array backend: its module ``xp`` and the device its arrays live on."""

    name: str
    xp: Any
    device: str

    def put(self, tree: Any) -> Any:
        """``tree`` (an array, a model, a tuple of them) with its arrays on this device."""
        return to_device(tree, self.device)

    def host(self, tree: Any) -> Any:
        """``tree`` with its arrays as numpy arrays (a 0-d array for a device scalar)."""
        return map_arrays(to_host, tree, trainable=False)

    @property
    def on_device(self) -> bool:
        return self.device != "cpu"


BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu), "fake"]


def _use(name: str) -> Iterator[Backend]:
    if name == "numpy":
        yield Backend("numpy", np, "cpu")
    elif name == "cupy":
        cupy = cupy_or_none()
        if cupy is None:
            _missing("CuPy sees no GPU here", "KILN_REQUIRE_GPU",
                     "the CuPy half runs where an NVIDIA GPU and cupy-cuda12x or -13x are; "
                     "bench/gpu_check.sh runs it")
        yield Backend("cupy", cupy, "cuda")
    else:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "cupy", fake_cupy.cupy)
            mp.setitem(sys.modules, "cupyx", fake_cupy.cupyx)
            yield Backend("fake", fake_cupy.cupy, "cuda")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _use(request.param)


@pytest.fixture(params=BACKENDS[1:])
def device(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The device halves of ``backend`` alone, for what only runs there (the kernels)."""
    yield from _use(request.param)


@pytest.fixture
def xp(backend: Backend) -> Any:
    """The array module of ``backend``."""
    return backend.xp
