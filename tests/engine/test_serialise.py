"""Model specs (JSON, architecture only) and weights (safetensors / .npz, never pickle)."""

from __future__ import annotations

import io
import json
import pickle
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from typing import Any

import kiln_engine
import numpy as np
import pytest
import safetensors.numpy
from kiln_engine import Chain, Dense, Layer, SpecError, relu
from kiln_engine._backend import device_of
from kiln_engine._tree import params
from kiln_engine.serialise import (
    WeightsError,
    count_parameters,
    estimate_bytes,
    load_state_dict,
    load_weights,
    model_from_spec,
    model_to_spec,
    save_weights,
    state_dict,
    weights_to_bytes,
)
from kiln_engine.serialise.spec import LAYER_SPECS, LayerSpec, _parse, _planned, int_field


def dense(n_in: int, n_out: int, activation: str = "identity", *, bias: bool = True,
          dtype: str = "float32") -> dict:
    """A Dense spec with every field explicit, as model_to_spec writes it."""
    return {"type": "Dense", "in": n_in, "out": n_out, "activation": activation, "bias": bias,
            "dtype": dtype}


def normal(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda r: r.standard_normal(shape)


# One row per case: a spec in the canonical form model_to_spec writes, and an input.
# Every registered layer type must be the top-level type of at least one row.
def ints(high: int, *shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda r: r.integers(0, high, shape)


def norm(kind: str, **fields: Any) -> dict:
    base = {"activation": "identity", "eps": 1e-5, "affine": True, "dtype": "float32"}
    if kind == "BatchNorm":
        base |= {"momentum": 0.1, "track_stats": True, "active": None}
    return {"type": kind, **base, **fields}


def recurrent(kind: str, n_in: int, n_out: int, **fields: Any) -> dict:
    act = {"activation": "tanh"} if kind == "RNN" else {}
    return {"type": kind, "in": n_in, "out": n_out, **act, "bias": True, "dtype": "float32",
            **fields}


def conv(kind: str, kernel: list[int], n_in: int, n_out: int, **fields: Any) -> dict:
    base = {"type": kind, "kernel": kernel, "in": n_in, "out": n_out, "activation": "identity",
            "stride": [1, 1], "pad": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}
    extra = {"output_padding": [0, 0]} if kind == "ConvTranspose" else {}
    return {**base, **extra, "bias": True, "dtype": "float32", **fields}


def pool(kind: str, window: list[int], **fields: Any) -> dict:
    return {"type": kind, "window": window, "stride": window, "pad": [0, 0, 0, 0], **fields}


CONCAT = {"type": "concat", "axis": -1}

# One row per case: a spec in the canonical form model_to_spec writes, and an input.
# Every registered layer type must be the top-level type of at least one row.
CASES: dict[str, tuple[dict, Callable[[np.random.Generator], np.ndarray]]] = {
    "Dense": (dense(5, 3, "tanh"), normal(4, 5)),
    "Dense-nobias-f64": (dense(5, 2, "gelu", bias=False, dtype="float64"), normal(3, 5)),
    "Chain-positional": ({"type": "Chain", "layers": [dense(4, 6, "relu"), dense(6, 3),
                                                      "softmax"]}, normal(2, 4)),
    "Chain-named-nested": ({"type": "Chain", "layers": {
        "enc": {"type": "Chain", "layers": [dense(4, 8, "relu"), dense(8, 2, "sigmoid")]},
        "dec": dense(2, 4, dtype="float64")}}, normal(3, 4)),
    "Embedding": ({"type": "Embedding", "vocab": 7, "dim": 3, "dtype": "float32"},
                  ints(7, 2, 5)),
    "Dropout": ({"type": "Dropout", "p": 0.3, "dims": None, "active": None}, normal(2, 3)),
    "Dropout-dims-off": ({"type": "Dropout", "p": 0.5, "dims": [0, 1], "active": False},
                         normal(2, 3, 4)),
    "AlphaDropout": ({"type": "AlphaDropout", "p": 0.2, "active": None}, normal(4, 3)),
    "BatchNorm": (norm("BatchNorm", channels=3, activation="relu"), normal(2, 3, 4, 4)),
    "BatchNorm-stats-only-f64": (norm("BatchNorm", channels=2, affine=False, momentum=0.3,
                                      eps=1e-3, dtype="float64", active=False), normal(5, 2)),
    "LayerNorm": (norm("LayerNorm", size=[3, 4], activation="tanh"), normal(2, 3, 4)),
    "LayerNorm-plain": (norm("LayerNorm", size=5, affine=False), normal(2, 5)),
    "RNN": (recurrent("RNN", 3, 4, activation="relu"), normal(2, 5, 3)),
    "LSTM": (recurrent("LSTM", 3, 2, dtype="float64"), normal(2, 4, 3)),
    "GRU": (recurrent("GRU", 2, 3, bias=False), normal(3, 4, 2)),
    "SkipConnection": ({"type": "SkipConnection", "layer": dense(4, 4, "relu"),
                        "connection": "add"}, normal(2, 4)),
    "SkipConnection-concat": ({"type": "SkipConnection", "layer": {
        "type": "Chain", "layers": [dense(4, 2), "relu"]}, "connection": CONCAT}, normal(2, 4)),
    "Parallel": ({"type": "Parallel", "connection": {"type": "concat", "axis": 1},
                  "layers": {"a": dense(4, 2), "b": {"type": "Chain", "layers": [
                      dense(4, 3, "relu"), norm("LayerNorm", size=3)]}}}, normal(2, 4)),
    "Conv": (conv("Conv", [3, 3], 2, 4, activation="relu", pad=[1, 1, 1, 1]),
             normal(2, 2, 6, 6)),
    "Conv-grouped-f64": (conv("Conv", [2, 3], 4, 6, stride=[2, 1], dilation=[1, 2], groups=2,
                              bias=False, dtype="float64"), normal(1, 4, 7, 9)),
    "ConvTranspose": (conv("ConvTranspose", [3, 3], 4, 2, stride=[2, 2], pad=[1, 1, 1, 1],
                           output_padding=[1, 0], groups=2, activation="tanh"),
                      normal(2, 4, 3, 3)),
    "MaxPool": (pool("MaxPool", [2, 2]), normal(2, 3, 4, 4)),
    "MaxPool-strided-padded": (pool("MaxPool", [3, 2], stride=[1, 2], pad=[1, 0, 1, 1]),
                               normal(1, 2, 5, 5)),
    "MeanPool": (pool("MeanPool", [2, 3], stride=[2, 1]), normal(2, 1, 4, 6)),
    "GlobalMaxPool": ({"type": "GlobalMaxPool"}, normal(2, 3, 4, 4)),
    "GlobalMeanPool": ({"type": "GlobalMeanPool"}, normal(2, 3, 4, 4)),
    "Flatten": ({"type": "Flatten"}, normal(2, 3, 2, 2)),
    "CNN": ({"type": "Chain", "layers": {
        "features": {"type": "Chain", "layers": [
            conv("Conv", [3, 3], 1, 4, activation="relu"), norm("BatchNorm", channels=4),
            pool("MaxPool", [2, 2])]},
        "head": {"type": "Chain", "layers": [{"type": "Flatten"}, dense(64, 3), "logsoftmax"]}}},
        normal(2, 1, 10, 10)),
    "Parallel-mul": ({"type": "Parallel", "connection": "mul",
                      "layers": [dense(3, 3), "sigmoid"]}, normal(2, 3)),
}


def randomise(model: Any, seed: int) -> None:
    """Give every array (parameters and state) fresh values in (0.5, 1.5), in place."""
    r = np.random.default_rng(seed)
    for x in state_dict(model).values():
        x[...] = r.uniform(0.5, 1.5, x.shape)


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Same paths, shapes, dtypes and bytes (NaN payloads and -0.0 included)."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


# --- specs ------------------------------------------------------------------------------

def test_every_exported_layer_type_has_a_spec_and_a_round_trip_case():
    # Concrete layers (those that define a call) exported from kiln_engine or its layers.
    exported = {obj for module in (kiln_engine, kiln_engine.layers) for name in module.__all__
                if isinstance(obj := getattr(module, name), type)
                and issubclass(obj, Layer) and obj.__call__ is not Layer.__call__}
    assert {Dense, Chain} <= exported
    missing = sorted(c.__name__ for c in exported - set(LAYER_SPECS))
    assert not missing, f"layer types without a spec entry: {missing}"
    untested = {e.name for e in LAYER_SPECS.values()} - {s["type"] for s, _ in CASES.values()}
    assert not untested, f"layer types without a round-trip case: {sorted(untested)}"


@pytest.mark.parametrize("name", list(CASES))
def test_spec_round_trips_and_weights_carry_the_outputs(name):
    spec, make_input = CASES[name]
    model = model_from_spec(spec, rng=np.random.default_rng(0))
    assert json.loads(json.dumps(model_to_spec(model))) == spec  # plain JSON, no numpy types
    randomise(model, 1)
    x = make_input(np.random.default_rng(2))
    expected = model(x)
    for fmt in ("safetensors", "npz"):
        fresh = model_from_spec(model_to_spec(model), rng=np.random.default_rng(3))
        if state_dict(model):  # the weights, not the architecture alone, fix the outputs
            assert not np.array_equal(fresh(x), expected)
        load_weights(fresh, weights_to_bytes(model, fmt))
        assert_same_arrays(state_dict(fresh), state_dict(model))
        np.testing.assert_array_equal(fresh(x), expected)


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_count_and_bytes_from_the_spec_match_the_built_model(name):
    spec, _ = CASES[name]
    model = model_from_spec(spec)
    assert count_parameters(spec) == sum(p.size for p in params(model))
    assert estimate_bytes(spec) == sum(x.nbytes for x in state_dict(model).values())
    planned = {p: (shape, dtype) for p, shape, dtype, _, _ in _planned(_parse(spec, "model"))}
    built = {p: (x.shape, x.dtype.name) for p, x in state_dict(model).items()}
    assert planned == built


def test_omitted_fields_take_their_defaults():
    model = model_from_spec({"type": "Dense", "in": 2, "out": 3})
    assert model_to_spec(model) == dense(2, 3)
    assert model.weight.dtype == np.float32


def test_init_and_rng_choose_the_initial_weights():
    spec = {"type": "Dense", "in": 3, "out": 2, "init": "ones", "dtype": "float64"}
    np.testing.assert_array_equal(model_from_spec(spec).weight, np.ones((2, 3)))
    a, b = (model_from_spec(dense(3, 2), rng=np.random.default_rng(7)) for _ in range(2))
    np.testing.assert_array_equal(a.weight, b.weight)


@pytest.mark.parametrize("kernel, pad", [(3, [1, 1, 1, 1]), ([4, 2], [2, 1, 1, 0])])
def test_same_padding_is_written_out_as_numbers(kernel, pad):
    # Flux's SamePad: a total of kernel - 1 per axis, the larger half first.
    spec = {"type": "Conv", "kernel": kernel, "in": 1, "out": 1, "pad": "same"}
    model = model_from_spec(spec)
    assert model_to_spec(model)["pad"] == pad
    assert model(np.ones((1, 1, 5, 6), np.float32)).shape == (1, 1, 5, 6)


class Broken(Layer):
    def __init__(self, n: int) -> None:
        raise ValueError(f"Broken: n must be even; got {n}")


def test_a_constraint_only_the_constructor_knows_still_gives_a_spec_error(monkeypatch):
    entry = LayerSpec(Broken, (int_field("n", lambda m: 0),), lambda v, rng: Broken(v["n"]))
    monkeypatch.setitem(LAYER_SPECS, Broken, entry)
    with pytest.raises(SpecError) as e:
        model_from_spec({"type": "Chain", "layers": [dense(2, 2), {"type": "Broken", "n": 3}]})
    assert e.value.path == "model.layers[1]" and e.value.message == "Broken: n must be even; got 3"


NESTED_BAD_OUT = {"type": "Chain", "layers": {"enc": {"type": "Chain", "layers": [
    {"type": "Dense", "in": 3, "out": 0}]}}}


@pytest.mark.parametrize("spec, path, message", [
    (NESTED_BAD_OUT, "model.layers.enc.layers[0].out", "must be a positive integer; got 0"),
    ({"type": "Dens", "in": 1, "out": 1}, "model.type",
     f"one of {sorted(e.name for e in LAYER_SPECS.values())}"),
    ({"type": "Dens"}, "model.type", "did you mean 'Dense'"),
    ({"in": 2, "out": 3}, "model.type", "it is missing"),
    ({"type": 3}, "model.type", "got 3"),
    ({"type": "Chain", "layers": [{"type": "Dense", "in": 2, "out": 3, "size": 4}]},
     "model.layers[0].size", "unknown field; valid fields are ['activation', 'bias', 'dtype', "
     "'in', 'init', 'out', 'type']"),
    ({"type": "Dense", "in": "3", "out": 2}, "model.in", "must be a positive integer; got '3'"),
    ({"type": "Dense", "in": True, "out": 2}, "model.in", "must be a positive integer"),
    ({"type": "Dense", "in": 3}, "model.out", "is required"),
    ({"type": "Dense", "in": 3, "out": 2, "bias": 1}, "model.bias", "must be true or false"),
    ({"type": "Dense", "in": 3, "out": 2, "activation": "rleu"}, "model.activation",
     "must be one of"),
    ({"type": "Dense", "in": 3, "out": 2, "dtype": "float16"}, "model.dtype",
     "must be one of ['float32', 'float64']"),
    ({"type": "Dense", "in": 3, "out": 2, "init": "xavier"}, "model.init", "glorot_uniform"),
    ({"type": "Chain", "layers": 3}, "model.layers", "must be a list of layers or an object"),
    ({"type": "Chain"}, "model.layers", "is required"),
    ({"type": "Chain", "layers": [[1, 2]]}, "model.layers[0]", "must be an object"),
    ({"type": "Chain", "layers": ["nonsense"]}, "model.layers[0]", "an activation in"),
    ({"type": "Chain", "layers": {"a.b": dense(1, 1)}}, "model.layers.a.b",
     "must be an identifier"),
    ({"type": "Chain", "layers": {"0": dense(1, 1)}}, "model.layers.0", "must be an identifier"),
    ("Dense", "model", "must be an object"),
    ({"type": "Dropout", "p": 1.5}, "model.p", "must be in [0.0, 1.0]; got 1.5"),
    ({"type": "Dropout", "p": 0.1, "dims": "all"}, "model.dims", "null, an integer or"),
    ({"type": "Dropout", "p": 0.1, "dims": []}, "model.dims", "non-empty list"),
    ({"type": "Dropout", "p": 0.1, "active": "yes"}, "model.active", "true, false or null"),
    ({"type": "AlphaDropout", "p": 1}, "model.p", "must be in [0.0, 1.0); got 1"),
    ({"type": "BatchNorm", "channels": 3, "eps": 0}, "model.eps", "must be in (0.0, inf]"),
    ({"type": "BatchNorm", "channels": 3, "momentum": -0.1}, "model.momentum", "[0.0, 1.0]"),
    ({"type": "LayerNorm"}, "model.size", "is required"),
    ({"type": "LayerNorm", "size": [3, 0]}, "model.size", "positive integer or a non-empty"),
    ({"type": "Embedding", "vocab": 10, "dim": 4, "init": "glorot"}, "model.init", "'normal'"),
    ({"type": "LSTM", "in": 3, "out": 2, "activation": "relu"}, "model.activation",
     "unknown field"),
    ({"type": "GRU", "in": 3, "out": 2, "init_kernel": "x"}, "model.init_kernel", "orthogonal"),
    ({"type": "SkipConnection", "connection": "add"}, "model.layer", "is required"),
    ({"type": "SkipConnection", "layer": dense(2, 2), "connection": "sum"}, "model.connection",
     'must be "add", "mul", "concat"'),
    ({"type": "SkipConnection", "layer": dense(2, 2)}, "model.connection", "is required"),
    ({"type": "SkipConnection", "layer": dense(2, 2), "connection": {"type": "concat",
                                                                     "axis": "1"}},
     "model.connection.axis", "must be an integer >= -64"),
    ({"type": "SkipConnection", "layer": dense(2, 2), "connection": {"type": "concat",
                                                                     "dim": 1}},
     "model.connection.dim", "unknown field"),
    ({"type": "SkipConnection", "layer": {"type": "Dense", "in": 2, "out": -1},
      "connection": "add"}, "model.layer.out", "positive integer"),
    ({"type": "Parallel", "connection": "add", "layers": []}, "model.layers", "at least one"),
    ({"type": "Conv", "in": 3, "out": 4}, "model.kernel", "is required"),
    ({"type": "Conv", "kernel": [3, 3, 3], "in": 3, "out": 4}, "model.kernel",
     "must be a positive integer or a pair of them; got [3, 3, 3]"),
    ({"type": "Conv", "kernel": 3, "in": 3, "out": 4, "stride": [1, 0]}, "model.stride",
     "positive integer or a pair"),
    ({"type": "Conv", "kernel": 3, "in": 3, "out": 4, "pad": "valid"}, "model.pad",
     '[top, bottom, left, right] or "same"'),
    ({"type": "Conv", "kernel": 3, "in": 3, "out": 4, "pad": [1, -1]}, "model.pad",
     "non-negative"),
    ({"type": "Conv", "kernel": 3, "in": 3, "out": 4, "groups": 2}, "model.groups",
     "must divide both in (3) and out (4); got 2"),
    ({"type": "ConvTranspose", "kernel": 3, "in": 2, "out": 2, "output_padding": 1},
     "model.output_padding", "smaller than the stride [1, 1] or the dilation [1, 1]"),
    ({"type": "ConvTranspose", "kernel": 3, "in": 2, "out": 2, "stride": 4, "pad": "same"},
     "model.pad", "\"same\" needs a dilated kernel [3, 3] at least as large as the stride "
     "[4, 4]"),
    ({"type": "MaxPool", "window": 2, "pad": 2}, "model.pad",
     "smaller than the window [2, 2] on each side"),
    ({"type": "MeanPool", "window": 2, "stride": 0}, "model.stride", "positive integer"),
    ({"type": "Flatten", "dims": 1}, "model.dims", "unknown field; valid fields are ['type']"),
    ({"type": "Parallel", "connection": "add", "layers": [dense(2, 2)] * 3},
     "model.connection", "'add' joins two branches but there are 3 layers"),
    ({"type": "Parallel", "connection": CONCAT, "layers": {"a": dense(2, 2), "b": {
        "type": "Chain", "layers": [dense(2, 2), {"type": "BatchNorm"}]}}},
     "model.layers.b.layers[1].channels", "is required"),
])
def test_a_bad_spec_names_the_path_of_the_bad_field(spec, path, message):
    with pytest.raises(SpecError) as e:
        model_from_spec(spec)
    assert e.value.path == path and message in e.value.message
    assert str(e.value).startswith(f"{path}: ")
    with pytest.raises(SpecError):
        count_parameters(spec)


def test_the_spec_path_prefix_is_the_callers():
    with pytest.raises(SpecError) as e:
        model_from_spec(NESTED_BAD_OUT, "job.model")
    assert e.value.path == "job.model.layers.enc.layers[0].out"


class Custom(Layer):
    def __call__(self, x: Any) -> Any:
        return x


@pytest.mark.parametrize("model, path, message", [
    (Chain(Dense(2, 2), Custom()), "model.layers[1]", "Custom has no spec"),
    (Chain(a=Dense(2, 2, lambda x: x)), "model.layers.a.activation", "has no spec name"),
    (Chain(Dense(2, 2), np.negative), "model.layers[1]", "negative"),
    (np.ones(3), "model", "must be a layer"),
    (kiln_engine.SkipConnection(Dense(2, 2), lambda y, x: y - x), "model.connection",
     "'<lambda>' has no spec"),
    (kiln_engine.Parallel(np.maximum, Dense(2, 2), Dense(2, 2)), "model.connection",
     "'maximum' has no spec"),
])
def test_a_model_part_without_a_spec_names_its_path(model, path, message):
    with pytest.raises(SpecError) as e:
        model_to_spec(model)
    assert e.value.path == path and message in e.value.message


# --- sizes and limits -------------------------------------------------------------------

HUGE = {"type": "Chain", "layers": {"small": dense(10, 10),
                                    "huge": {"type": "Dense", "in": 10**6, "out": 10**6}}}


def test_a_huge_spec_is_counted_and_refused_without_allocating():
    tracemalloc.start()
    start = time.perf_counter()
    try:
        assert count_parameters(HUGE) == 10**12 + 10**6 + 110
        assert estimate_bytes(HUGE) == 4 * (10**12 + 10**6 + 110)
        with pytest.raises(SpecError) as e:
            model_from_spec(HUGE, max_parameters=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1 << 20
    assert e.value.path == "model"
    assert "1,000,001,000,110 parameters" in e.value.message
    assert "limit of 1,000,000,000" in e.value.message
    assert "largest layer is model.layers.huge" in e.value.message


def test_the_limit_is_inclusive():
    spec = dense(10, 10)
    assert isinstance(model_from_spec(spec, max_parameters=110), Dense)
    with pytest.raises(SpecError, match="110 parameters, more than the limit of 109"):
        model_from_spec(spec, max_parameters=109)
    with pytest.raises(ValueError, match="max_parameters"):
        model_from_spec(spec, max_parameters=-1)


# --- weights ----------------------------------------------------------------------------

class Scaled(Layer):
    """One parameter and one non-trainable state array, like BatchNorm's statistics."""

    nontrainable = frozenset({"mean"})

    def __init__(self, n: int, dtype: Any = np.float64) -> None:
        self.scale = np.ones(n, dtype)
        self.mean = np.zeros(n, dtype)

    def __call__(self, x: Any) -> Any:
        return (x - self.mean) * self.scale


def tied_model(seed: int) -> Chain:
    """float32 and float64 arrays, state, and a weight shared by two layers."""
    r = np.random.default_rng(seed)
    a = Dense(3, 3, relu, rng=r)
    b = Dense(3, 3, rng=r)
    b.weight = a.weight
    return Chain(a=a, b=b, s=Scaled(3), c=Dense(3, 2, dtype=np.float64, rng=r))


def special_values(model: Any) -> None:
    """NaN with a payload, -0.0, infinities and subnormals: only a bit-exact copy keeps them."""
    for x in state_dict(model).values():
        flat = x.reshape(-1)
        ints = flat.view(np.uint32 if x.dtype == np.float32 else np.uint64)
        flat[:] = np.random.default_rng(x.size).standard_normal(x.size)
        flat[0] = -0.0
        if x.size > 1:
            ints[1] = 0x7FC0_1234 if x.dtype == np.float32 else 0x7FF8_0000_0000_1234
        if x.size > 2:
            flat[2] = np.finfo(x.dtype).smallest_subnormal


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_weights_round_trip_bit_exactly_with_state_and_ties(fmt):
    model = tied_model(0)
    special_values(model)
    blob = weights_to_bytes(model, fmt)
    fresh = tied_model(1)
    fresh.layers.b.weight = np.array(fresh.layers.a.weight)  # untied before loading
    load_weights(fresh, blob)
    assert_same_arrays(state_dict(fresh), state_dict(model))
    assert fresh.layers.a.weight is fresh.layers.b.weight  # tied again
    assert fresh.layers.c.weight.dtype == np.float64
    assert "layers.s.mean" in state_dict(fresh)


def stored_keys(blob: bytes) -> set[str]:
    if blob[:2] == b"PK":
        return {n.removesuffix(".npy") for n in zipfile.ZipFile(io.BytesIO(blob)).namelist()}
    return set(safetensors.numpy.load(blob))


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_a_tied_array_is_stored_once(fmt):
    keys = stored_keys(weights_to_bytes(tied_model(0), fmt))
    assert "layers.a.weight" in keys and "layers.b.weight" not in keys
    assert "layers.b.bias" in keys


def test_files_are_standard_and_readable_by_their_own_libraries():
    model = tied_model(0)
    plain = {k: np.asarray(v) for k, v in safetensors.numpy.load(weights_to_bytes(model)).items()}
    np.testing.assert_array_equal(plain["layers.c.weight"], model.layers.c.weight)
    with np.load(io.BytesIO(weights_to_bytes(model, "npz")), allow_pickle=False) as z:
        np.testing.assert_array_equal(z["layers.s.mean"], model.layers.s.mean)


def test_save_and_load_through_paths_and_file_objects(tmp_path):
    model = tied_model(0)
    special_values(model)
    save_weights(model, tmp_path / "w.npz")
    save_weights(model, tmp_path / "w.safetensors")
    assert (tmp_path / "w.npz").read_bytes()[:2] == b"PK"
    assert (tmp_path / "w.safetensors").read_bytes() == weights_to_bytes(model)
    buf = io.BytesIO()
    save_weights(model, buf, format="npz")
    for source in (tmp_path / "w.npz", str(tmp_path / "w.safetensors"), buf.getvalue(),
                   io.BytesIO(buf.getvalue())):
        fresh = tied_model(1)
        load_weights(fresh, source)
        assert_same_arrays(state_dict(fresh), state_dict(model))
    with pytest.raises(ValueError, match="format must be one of"):
        weights_to_bytes(model, "pickle")


def test_state_dict_holds_the_live_arrays_and_loading_copies():
    model = tied_model(0)
    sd = state_dict(model)
    assert list(sd) == ["layers.a.weight", "layers.a.bias", "layers.b.weight", "layers.b.bias",
                        "layers.s.scale", "layers.s.mean", "layers.c.weight", "layers.c.bias"]
    assert sd["layers.s.mean"] is model.layers.s.mean
    fresh = tied_model(1)
    load_state_dict(fresh, sd)
    assert fresh.layers.a.weight is not model.layers.a.weight
    assert fresh.layers.a.weight is fresh.layers.b.weight
    sd["layers.c.bias"][...] = 7  # the source changes later: the loaded model does not
    assert not np.any(fresh.layers.c.bias == 7)


def snapshot(model: Any) -> dict[str, tuple[int, bytes]]:
    return {k: (id(x), x.tobytes()) for k, x in state_dict(model).items()}


@pytest.mark.parametrize("change, paths, message", [
    (lambda sd: sd.pop("layers.s.mean"), ["layers.s.mean"],
     "layers.s.mean: missing (expected shape (3,) float64)"),
    (lambda sd: sd.update(extra=np.ones(2)), ["extra"], "extra: unexpected"),
    (lambda sd: sd.update({"layers.c.weight": np.ones((3, 2))}), ["layers.c.weight"],
     "layers.c.weight: expected shape (2, 3) float64; found shape (3, 2) float64"),
    (lambda sd: sd.update({"layers.c.bias": np.ones(2, np.float32)}), ["layers.c.bias"],
     "layers.c.bias: expected shape (2,) float64; found shape (2,) float32"),
    (lambda sd: sd.update({"layers.a.bias": [0.0, 1.0, 2.0]}), ["layers.a.bias"],
     "layers.a.bias: expected an array; found list"),
])
def test_weights_that_do_not_fit_name_the_path_and_change_nothing(change, paths, message):
    model = tied_model(0)
    before = snapshot(model)
    sd = {k: np.array(v) for k, v in state_dict(tied_model(1)).items()}
    sd["layers.a.weight"] += 1  # a valid change that must not be applied either
    change(sd)
    with pytest.raises(WeightsError) as e:
        load_state_dict(model, sd)
    assert message in str(e.value) and e.value.paths == paths
    assert snapshot(model) == before


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_a_file_for_another_architecture_names_the_paths_and_changes_nothing(fmt):
    model = model_from_spec({"type": "Chain", "layers": [dense(4, 8), dense(8, 2)]})
    before = snapshot(model)
    other = model_from_spec({"type": "Chain", "layers": [dense(4, 6), dense(6, 2)]})
    with pytest.raises(WeightsError) as e:
        load_weights(model, weights_to_bytes(other, fmt))
    assert e.value.paths == ["layers.0.weight", "layers.0.bias", "layers.1.weight"]
    assert "layers.0.weight: expected shape (8, 4) float32; found shape (6, 4) float32" \
        in str(e.value)
    assert snapshot(model) == before


def test_every_problem_is_listed_at_once():
    model = tied_model(0)
    sd = dict(state_dict(tied_model(1)))
    del sd["layers.a.bias"]
    sd["layers.c.bias"] = np.ones(5)
    with pytest.raises(WeightsError) as e:
        load_state_dict(model, sd)
    assert "2 problems" in str(e.value)
    assert e.value.paths == ["layers.a.bias", "layers.c.bias"]


# --- files that are not weights ---------------------------------------------------------

UNPICKLED: list[str] = []


def record_unpickling(tag: str) -> None:
    UNPICKLED.append(tag)


class Trap:
    """Unpickling this runs code: it records that it happened."""

    def __reduce__(self) -> tuple:
        return (record_unpickling, ("unpickled",))


def test_a_pickled_npz_member_is_refused_without_unpickling():
    model = tied_model(0)
    sd = {k: np.array(v) for k, v in state_dict(model).items()}
    sd["layers.a.bias"] = np.array([Trap()], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **sd)  # numpy pickles the object array
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=True) as z:
        z["layers.a.bias"]  # the trap works where pickle is allowed
    assert UNPICKLED == ["unpickled"]
    UNPICKLED.clear()
    before = snapshot(model)
    with pytest.raises(WeightsError, match="holds Python objects") as e:
        load_weights(model, buf.getvalue())
    assert UNPICKLED == []
    assert e.value.paths == ["layers.a.bias"]
    assert snapshot(model) == before


def damaged(fmt: str) -> list[bytes]:
    """Truncated, bit-flipped and foreign files."""
    good = weights_to_bytes(tied_model(0), fmt)
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF  # inside the data: npz's CRC catches it
    npy = io.BytesIO()
    np.save(npy, np.ones(3))
    out = [good[:n] for n in (0, 4, 8, 50, len(good) // 2, len(good) - 1)]
    out += [b"\x00" * 64, pickle.dumps({"layers.a.bias": np.ones(3)}), npy.getvalue()]
    return out + ([bytes(flipped)] if fmt == "npz" else [])


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_a_truncated_or_foreign_file_gives_a_clear_error_and_changes_nothing(fmt):
    model = tied_model(0)
    before = snapshot(model)
    for blob in damaged(fmt):
        with pytest.raises(WeightsError, match=r"not a readable .*\(\d[\d,]* bytes"):
            load_weights(model, blob)
        assert snapshot(model) == before


@pytest.mark.parametrize("tied, message", [
    (json.dumps({"layers.b.weight": "layers.x.weight"}), "ties 'layers.b.weight' to "
     "'layers.x.weight', which it does not hold"),
    ("{not json", "not JSON"),
    (json.dumps(["layers.b.weight"]), "must map paths to paths"),
])
def test_a_bad_record_of_tied_arrays_is_refused(tied, message):
    sd = {k: np.array(v) for k, v in state_dict(tied_model(0)).items()}
    del sd["layers.b.weight"]
    blob = safetensors.numpy.save(sd, metadata={"__kiln_tied__": tied})
    with pytest.raises(WeightsError, match=message):
        load_weights(tied_model(1), blob)


def test_loaded_arrays_are_writable_and_contiguous():
    model = tied_model(0)
    model.layers.c.weight = np.asfortranarray(model.layers.c.weight)
    for fmt in ("safetensors", "npz"):
        fresh = tied_model(1)
        load_weights(fresh, weights_to_bytes(model, fmt))
        for path, x in state_dict(fresh).items():
            assert x.flags.writeable and x.flags.c_contiguous, path
        np.testing.assert_array_equal(fresh.layers.c.weight, model.layers.c.weight)


def test_weights_go_back_to_the_models_device(device):
    model = kiln_engine.gpu(tied_model(0))
    blob = weights_to_bytes(model)
    fresh = kiln_engine.gpu(tied_model(1))
    load_weights(fresh, blob)
    for path, x in state_dict(fresh).items():
        assert device_of(x) == "cuda:0", path
        assert x.tobytes() == state_dict(model)[path].get().tobytes(), path
    assert fresh.layers.a.weight is fresh.layers.b.weight
    load_state_dict(fresh, state_dict(tied_model(2)))  # host arrays onto the GPU model
    assert device_of(fresh.layers.c.bias) == "cuda:0"


def test_deeply_nested_spec_is_refused_not_recursed():
    from kiln_engine.serialise.spec import MAX_NESTING

    spec = {"type": "Dense", "in": 2, "out": 2}
    for _ in range(5 * MAX_NESTING):
        spec = {"type": "Chain", "layers": [spec]}
    with pytest.raises(SpecError, match="nested more than"):
        model_from_spec(spec)
    shallow = {"type": "Dense", "in": 2, "out": 2}
    for _ in range(MAX_NESTING // 2):
        shallow = {"type": "Chain", "layers": [shallow]}
    assert model_from_spec(shallow) is not None
