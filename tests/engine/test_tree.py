"""The tree helpers: dotted paths, lookup with near-miss hints, leaves, params, map_arrays,
fmap, and the Layers container's indexing."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from kiln_engine import (
    Chain,
    Dense,
    Layer,
    Layers,
    PathError,
    Tangent,
    fmap,
    getpath,
    gradient,
    leaves,
    params,
    paths,
    relu,
    setup,
    softmax,
    update,
)
from kiln_engine._tree import map_arrays
from kiln_engine.optimisers import Descent, Leaf


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


def _guide_model():
    """A Chain whose second layer gets no gradient: its Tangent holds None there."""
    r = rng()
    model = Chain(enc=Dense(3, 4, relu), dec=Dense(4, 2))
    for layer in model.layers:
        layer.weight = r.normal(size=layer.weight.shape)
        layer.bias = r.normal(size=layer.bias.shape)
    x = r.normal(size=(5, 3))
    return model, x


def test_fmap_is_the_guides_manual_update():
    model, x = _guide_model()
    twin = copy.deepcopy(model)
    loss = lambda m: (m(x) ** 2).sum()
    grads = gradient(loss, model)[0]
    fmap(lambda p, g: np.subtract(p, 0.1 * g, out=p), model, grads)
    update(setup(Descent(0.1), twin), twin, gradient(loss, twin)[0])
    for (path, a), (_, b) in zip(leaves(model), leaves(twin)):
        np.testing.assert_array_equal(a, b, err_msg=path)


def test_fmap_skips_none_gradients_and_keeps_those_arrays():
    model, _ = _guide_model()
    dec = model.layers.dec.weight.copy()
    seen = []
    grads = Tangent("Chain", {"layers": {"enc": {"weight": np.ones((4, 3)), "bias": None},
                                         "dec": None}})
    out = fmap(lambda p, g: seen.append(p.shape) or p - g, model, grads)
    assert seen == [(4, 3)]
    np.testing.assert_array_equal(out.layers.enc.weight, model.layers.enc.weight - 1)
    assert out.layers.enc.bias is model.layers.enc.bias and out.layers.dec.weight is \
        model.layers.dec.weight
    np.testing.assert_array_equal(model.layers.dec.weight, dec)


def test_fmap_walks_a_state_tree_too_and_calls_f_per_distinct_arguments():
    w = np.ones((2, 2))
    model = {"enc": w, "dec": (w, np.zeros(2))}
    state = setup(Descent(0.5), model)
    calls = []

    def step(p, g, leaf):
        calls.append(leaf)
        assert isinstance(leaf, Leaf)
        p -= leaf.rule.eta * g
        return p

    fmap(step, model, {"enc": np.ones((2, 2)), "dec": (np.ones((2, 2)), np.ones(2))}, state)
    assert len(calls) == 3  # the tied w once per gradient it has: both are applied
    np.testing.assert_array_equal(w, np.zeros((2, 2)))
    mapped = fmap(lambda p: p * 2, model)  # no trees: a tied array is mapped once
    assert mapped["enc"] is mapped["dec"][0]
    with pytest.raises(ValueError, match="fmap: a tree holds an array at 'dec', where the "
                                         "model has a tuple"):
        fmap(lambda p, g: p, model, {"enc": w, "dec": np.ones(2)})


def test_gradient_trees_copy_and_deepcopy():
    model, x = _guide_model()
    grads = gradient(lambda m: (m(x) ** 2).sum(), model)[0]
    deep = copy.deepcopy(grads)
    assert deep.layers.enc.weight is not grads.layers.enc.weight
    np.testing.assert_array_equal(deep.layers.enc.weight, grads.layers.enc.weight)
    assert copy.copy(grads.layers.enc).weight is grads.layers.enc.weight
