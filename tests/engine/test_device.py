"""Device selection: the CPU always, a GPU when cupy sees one, a clear error otherwise."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from kiln_engine import Chain, Dense, DeviceError
from kiln_engine._backend import array_module, cupy_or_none, device_of, parse_device
from kiln_engine.device import cpu, gpu, gpu_count, to_device


def test_cpu_keeps_numpy_arrays_and_copies_the_tree():
    model = Chain(Dense(3, 2))
    moved = cpu(model)
    assert moved is not model
    w = moved.layers[0].weight
    assert isinstance(w, np.ndarray) and device_of(w) == "cpu" and array_module(w) is np
    np.testing.assert_array_equal(w, model.layers[0].weight)


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "", "cpu:0:1", 3])
def test_unknown_device_names_are_rejected(bad):
    with pytest.raises(DeviceError, match="device must be"):
        parse_device(bad)


@pytest.mark.skipif(cupy_or_none() is not None, reason="this machine has a usable GPU")
def test_asking_for_a_gpu_without_one_is_a_clear_error():
    with pytest.raises(DeviceError, match="no GPU is usable here"):
        gpu(Chain(Dense(3, 2)))
    with pytest.raises(DeviceError, match="no GPU is usable here"):
        to_device(np.ones(3), "cuda:0")


def test_gpu_count_is_what_cupy_sees_and_0_without_it(backend, monkeypatch):
    expected = 0 if backend.name == "numpy" else backend.xp.cuda.runtime.getDeviceCount()
    if backend.name == "numpy":
        monkeypatch.setitem(sys.modules, "cupy", None)  # as if not installed
    assert gpu_count() == expected and (expected > 0) == (backend.name != "numpy")


def test_model_round_trips_through_the_gpu(device):
    model = Chain(Dense(3, 2, np.tanh))
    on_gpu = gpu(model)
    assert device_of(on_gpu.layers[0].weight) == "cuda:0"
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    out = on_gpu(array_module(on_gpu.layers[0].weight).asarray(x))
    np.testing.assert_allclose(out.get(), model(x), rtol=1e-5)
    np.testing.assert_array_equal(cpu(on_gpu).layers[0].weight, model.layers[0].weight)
