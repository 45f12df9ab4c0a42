"""The tree helpers: dotted paths, lookup with near-miss hints, leaves, params, map_arrays,
and the Layers container's indexing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from kiln_engine import (
    Chain,
    Dense,
    Layer,
    Layers,
    PathError,
    getpath,
    leaves,
    params,
    paths,
    relu,
    softmax,
)
from kiln_engine._tree import map_arrays


class Scaled(Layer):
    """A layer with one parameter and one non-trainable state array."""

    nontrainable = frozenset({"mean"})

    def __init__(self, n: int) -> None:
        self.scale = np.full(n, 2.0)
        self.mean = np.zeros(n)

    def __call__(self, x: Any) -> Any:
        return (x - self.mean) * self.scale


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def named() -> Chain:
    return Chain(enc=Dense(3, 4, relu, rng=rng()), norm=Scaled(4),
                 dec=Dense(4, 2, bias=False, rng=rng()), out=softmax)


def test_paths_are_dotted_parents_first_and_skip_configuration():
    # Every Chain member has a path, a plain function too (so paths match indexing), but
    # configuration fields (activation, the missing bias) do not.
    m = named()
    assert paths(m) == [
        "", "layers", "layers.enc", "layers.enc.weight", "layers.enc.bias",
        "layers.norm", "layers.norm.scale", "layers.norm.mean",
        "layers.dec", "layers.dec.weight", "layers.out",
    ]
    assert getpath(m, "layers.out") is softmax
    assert paths(Chain(Dense(2, 2), Dense(2, 1))) == [
        "", "layers", "layers.0", "layers.0.weight", "layers.0.bias",
        "layers.1", "layers.1.weight", "layers.1.bias",
    ]


def test_getpath_finds_every_path_it_lists():
    m = named()
    assert getpath(m, "") is m
    assert getpath(m, "layers.enc") is m.layers.enc
    assert getpath(m, "layers.enc.weight") is m.layers.enc.weight
    assert getpath(m, "layers.norm.mean") is m.layers.norm.mean
    for p in paths(m):
        getpath(m, p)  # no error for any listed path
    positional = Chain(Dense(2, 2), Dense(2, 1))
    assert getpath(positional, "layers.1.bias") is positional.layers[1].bias


def test_getpath_walks_plain_containers():
    a, b = np.ones(2), np.zeros(3)
    tree = {"x": [a, (b, "config")], "n": 3}
    assert getpath(tree, "x.0") is a
    assert getpath(tree, "x.1.0") is b
    assert paths(tree) == ["", "x", "x.0", "x.1", "x.1.0"]


@pytest.mark.parametrize("bad, where, near", [
    ("layers.enc.wieght", "layers.enc has children ['bias', 'weight']", "'layers.enc.weight'"),
    ("layers.ecn", "layers has children ['dec', 'enc', 'norm', 'out']", "'layers.enc'"),
    ("layres.dec.weight", "the root has children ['layers']", "'layers.dec.weight'"),
])
def test_unknown_path_names_where_it_failed_and_the_nearest_paths(bad, where, near):
    with pytest.raises(PathError) as e:
        getpath(named(), bad)
    msg = str(e.value)
    assert repr(bad) in msg and where in msg and f"did you mean {near}" in msg
    assert isinstance(e.value, KeyError)


def test_unknown_path_with_nothing_near_gives_no_guess():
    with pytest.raises(PathError) as e:
        getpath(named(), "zzzzzzzz")
    assert "did you mean" not in str(e.value)
    assert "the root has children ['layers']" in str(e.value)


def test_getpath_rejects_a_path_that_is_not_a_string():
    with pytest.raises(PathError, match="dotted string"):
        getpath(named(), ["layers", "enc"])


def test_leaves_are_in_field_order_and_skip_state_unless_asked():
    m = named()
    assert [p for p, _ in leaves(m)] == [
        "layers.enc.weight", "layers.enc.bias", "layers.norm.scale", "layers.dec.weight"]
    everything = leaves(m, trainable=False)
    assert [p for p, _ in everything] == [
        "layers.enc.weight", "layers.enc.bias", "layers.norm.scale", "layers.norm.mean",
        "layers.dec.weight"]
    assert all(x is getpath(m, p) for p, x in everything)


def tied() -> Chain:
    """Two Dense layers sharing one weight, and one layer object used twice."""
    a, b = Dense(3, 3, rng=rng()), Dense(3, 3, rng=rng())
    b.weight = a.weight
    c = Dense(3, 3, rng=rng())
    return Chain(a, b, c, c)


def test_tied_arrays_appear_at_each_path_but_once_in_params():
    m = tied()
    found = leaves(m)
    assert len(found) == 8
    assert found[0][1] is found[2][1]  # layers.0.weight is layers.1.weight
    assert found[4][1] is found[6][1] and found[5][1] is found[7][1]  # the layer used twice
    ps = params(m)
    expected = [m[0].weight, m[0].bias, m[1].bias, m[2].weight, m[2].bias]
    assert len(ps) == len(expected) and all(p is q for p, q in zip(ps, expected))


def test_map_arrays_maps_each_array_once_and_keeps_ties():
    m = tied()
    calls = []

    def double(x: np.ndarray) -> np.ndarray:
        calls.append(x)
        return x * 2

    out = map_arrays(double, m)
    assert len(calls) == len(params(m))
    assert out[0].weight is out[1].weight
    assert out[2].weight is out[3].weight
    np.testing.assert_array_equal(out[0].weight, m[0].weight * 2)
    assert out is not m and out[0] is not m[0]
    np.testing.assert_array_equal(m[0].bias, out[0].bias / 2)  # the original is untouched


def test_map_arrays_leaves_state_alone_unless_asked():
    m = named()
    state = m.layers.norm.mean
    out = map_arrays(lambda x: x + 1, m)
    assert out.layers.norm.mean is state
    np.testing.assert_array_equal(out.layers.norm.scale, m.layers.norm.scale + 1)
    out_all = map_arrays(lambda x: x + 1, m, trainable=False)
    np.testing.assert_array_equal(out_all.layers.norm.mean, state + 1)
    assert out.layers.out is softmax and out.layers.names == m.layers.names


def test_layers_index_by_position_name_attribute_and_slice():
    m = named()
    enc, norm, dec = m.layers.enc, m.layers.norm, m.layers.dec
    assert m.layers[0] is enc and m.layers[-1] is softmax
    assert m.layers["norm"] is norm and m[2] is dec and m["dec"] is dec
    assert list(m.layers) == [enc, norm, dec, softmax] and len(m) == 4
    part = m.layers[1:3]
    assert isinstance(part, Layers) and part.names == ("norm", "dec") and part.dec is dec
    sub = m[:2]
    assert isinstance(sub, Chain) and sub.layers.names == ("enc", "norm") and sub[0] is enc
    positional = Chain(enc, dec)
    assert positional.layers.names is None and positional.layers[1] is dec


def test_layers_errors_name_the_valid_names():
    m = named()
    with pytest.raises(AttributeError, match=r"no layer named 'enk'; names are \['enc'"):
        _ = m.layers.enk
    with pytest.raises(AttributeError, match="positional only"):
        _ = Chain(Dense(2, 2)).layers.enc
    with pytest.raises(AttributeError, match="immutable"):
        m.layers.enc = Dense(3, 4)
