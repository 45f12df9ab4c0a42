"""The gradient API as a user meets it: models, trees, None where nothing flows, errors."""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine import (
    Chain,
    Dense,
    GradientError,
    ShapeError,
    Tangent,
    gradient,
    identity,
    params,
    relu,
    sigmoid,
    tanh,
    withgradient,
)

from .gradcheck import check_gradients, finite_difference

rng = np.random.default_rng(1)


def mlp(dtype=np.float64):
    return Chain(enc=Chain(Dense(5, 7, relu, dtype=dtype)),
                 dec=Chain(Dense(7, 3, dtype=dtype)))


def test_model_gradient_is_shaped_like_the_model():
    model = mlp()
    x = rng.standard_normal((4, 5))
    val, (g,) = withgradient(lambda m: (m(x) ** 2).mean(), model)
    assert isinstance(g, Tangent)
    dense = model.layers.dec.layers[0]
    assert g.layers.dec.layers[0].weight.shape == dense.weight.shape
    assert g.layers.dec.layers[0].bias.shape == dense.bias.shape
    assert g.layers.enc.layers[0].keys() == ["weight", "bias"]
    assert float(val) == pytest.approx(float((model(x) ** 2).mean()), rel=1e-12)


def test_model_gradient_matches_finite_differences():
    model = mlp()
    x = rng.standard_normal((4, 5))
    (g,) = gradient(lambda m: (m(x) ** 2).mean(), model)
    w = model.layers.enc.layers[0].weight
    fd = finite_difference(lambda w_: float((model(x) ** 2).mean()), [w], 0)
    np.testing.assert_allclose(g.layers.enc.layers[0].weight, fd, rtol=1e-6, atol=1e-9)


def test_model_is_not_modified_by_gradient():
    model = mlp()
    before = [p.copy() for p in params(model)]
    gradient(lambda m: m(rng.standard_normal((2, 5))).sum(), model)
    for b, p in zip(before, params(model)):
        assert isinstance(p, np.ndarray)
        np.testing.assert_array_equal(b, p)


def test_none_where_nothing_flows():
    model = mlp()
    x = rng.standard_normal((2, 5))
    g_model, g_x, g_labels, g_unused = gradient(
        lambda m, x, labels, unused: m.layers.enc(x).sum(), model, x, np.array([1, 2]),
        rng.standard_normal(3))
    assert g_model.layers.dec is None
    assert g_model.layers.enc.layers[0].weight is not None
    assert g_x.shape == x.shape
    assert g_labels is None and g_unused is None


def test_gradient_of_float_argument_is_float():
    (g,) = gradient(lambda s: s * s * 3.0, 2.0)
    assert isinstance(g, float) and g == pytest.approx(12.0)


def test_nested_containers():
    tree = {"a": rng.standard_normal(3), "b": (rng.standard_normal(2), 5)}
    (g,) = gradient(lambda t: (t["a"] ** 2).sum() + (t["b"][0] * t["b"][1]).sum(), tree)
    np.testing.assert_allclose(g["a"], 2 * tree["a"])
    np.testing.assert_allclose(g["b"][0], np.full(2, 5.0))
    assert g["b"][1] is None


def test_l2_penalty_over_params_as_in_flux():
    model = mlp()
    x = rng.standard_normal((3, 5))

    def loss(m):
        penalty = sum((p ** 2).sum() / 2 for p in params(m))
        return m(x).mean() + 0.42 * penalty

    (g,) = gradient(loss, model)
    (g0,) = gradient(lambda m: m(x).mean(), model)
    w = model.layers.dec.layers[0].weight
    np.testing.assert_allclose(g.layers.dec.layers[0].weight,
                               g0.layers.dec.layers[0].weight + 0.42 * w, rtol=1e-12)


def test_tied_weights_get_summed_gradient():
    shared = Dense(3, 3, dtype=np.float64)
    model = Chain(shared, tanh, shared)
    x = rng.standard_normal((2, 3))
    (g,) = gradient(lambda m: m(x).sum(), model)
    first, second = g.layers[0].weight, g.layers[2].weight
    assert first is second  # one leaf, one accumulated gradient
    fd = finite_difference(lambda w: float(model(x).sum()), [shared.weight], 0)
    np.testing.assert_allclose(first, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("act,torch_act", [(identity, lambda t: t), (relu, "relu"),
                                           (sigmoid, "sigmoid"), (tanh, "tanh")])
def test_fused_dense_against_torch(act, torch_act, torch):
    layer = Dense(4, 3, act, dtype=np.float64)
    layer.bias = rng.standard_normal(3)
    tf = (lambda t: t) if callable(torch_act) else getattr(torch, torch_act)
    x = rng.standard_normal((5, 4)) + 0.05

    def f(x, w, b):
        layer.weight, layer.bias = w, b
        return layer(x)

    check_gradients(f, x, layer.weight.copy(), layer.bias.copy(),
                    torch_f=lambda x, w, b: tf(x @ w.T + b), torch=torch)


def test_dense_on_three_dimensional_input(torch):
    layer = Dense(4, 2, tanh, dtype=np.float64)
    x = rng.standard_normal((2, 3, 4))

    def f(x, w, b):
        layer.weight, layer.bias = w, b
        return layer(x)

    check_gradients(f, x, layer.weight.copy(), layer.bias.copy(),
                    torch_f=lambda x, w, b: torch.tanh(x @ w.T + b), torch=torch)


def test_non_scalar_loss_is_rejected_with_its_shape():
    with pytest.raises(GradientError, match=r"shape \(4, 3\)"):
        gradient(lambda x: x * 2, rng.standard_normal((4, 3)))


def test_non_callable_is_rejected():
    with pytest.raises(GradientError, match="callable"):
        gradient(3, rng.standard_normal(2))


def test_function_without_derivative_is_named():
    with pytest.raises(TypeError, match=r"np\.cumsum"):
        gradient(lambda x: np.cumsum(x).sum(), rng.standard_normal(3))
    with pytest.raises(TypeError, match=r"np\.arctan2"):
        gradient(lambda x: np.arctan2(x, x).sum(), rng.standard_normal(3))


def test_out_argument_is_refused():
    with pytest.raises(TypeError, match="out="):
        gradient(lambda x: np.exp(x, out=np.empty(3)).sum(), rng.standard_normal(3))


def test_converting_tracked_to_numpy_is_refused():
    with pytest.raises(TypeError, match="drop its gradient"):
        gradient(lambda x: np.asarray(x).sum(), rng.standard_normal(3))


def test_dense_shape_error_names_path_and_shapes():
    model = mlp()
    with pytest.raises(ShapeError) as err:
        model(rng.standard_normal((2, 6)))
    msg = str(err.value)
    assert msg.startswith("layers.enc.layers.0: Dense(5 => 7, relu)")
    assert "5 features" in msg and "(2, 6)" in msg


def test_dense_rejects_integer_input():
    with pytest.raises(ShapeError, match="floating-point"):
        Dense(3, 2)(np.ones((2, 3), dtype=np.int64))


def test_dense_casts_float64_input_to_weight_dtype():
    layer = Dense(3, 2)
    assert layer(rng.standard_normal((4, 3))).dtype == np.float32


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_dense_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="in must be a positive integer"):
        Dense(bad, 3)


def test_chain_indexing_by_position_and_name():
    model = mlp()
    assert model.layers[0] is model.layers.enc
    assert model.layers["dec"] is model.layers[1]
    with pytest.raises(AttributeError, match="no layer named 'middle'"):
        _ = model.layers.middle
    with pytest.raises(ValueError, match="either all by position or all by name"):
        Chain(Dense(2, 2), dec=Dense(2, 2))


def test_chain_accepts_plain_functions():
    model = Chain(Dense(3, 4, dtype=np.float64), np.tanh, Dense(4, 1, dtype=np.float64))
    x = rng.standard_normal((2, 3))
    (g,) = gradient(lambda m: m(x).sum(), model)
    assert g.layers[1] is None and g.layers[0].weight.shape == (4, 3)


def test_reused_trace_sees_in_place_updates_and_reassignment():
    model = Chain(Dense(3, 2, dtype=np.float64))
    x = rng.standard_normal((4, 3))
    layer = model.layers[0]

    def grad_w():
        return gradient(lambda m: (m(x) ** 2).sum(), model)[0].layers[0].weight

    def expected():
        y = x @ layer.weight.T + layer.bias
        return 2 * y.T @ x

    np.testing.assert_allclose(grad_w(), expected(), rtol=1e-12)
    layer.weight -= 0.5  # in place, as an optimiser does
    np.testing.assert_allclose(grad_w(), expected(), rtol=1e-12)
    layer.weight = rng.standard_normal((2, 3))  # a new array object
    np.testing.assert_allclose(grad_w(), expected(), rtol=1e-12)
    layer.bias = None  # structure change: bias no longer a child
    g = gradient(lambda m: (m(x) ** 2).sum(), model)[0]
    assert "bias" not in g.layers[0].keys()


def test_gradients_from_successive_calls_are_independent():
    model = Chain(Dense(3, 2, dtype=np.float64))
    g1 = gradient(lambda m: m(np.ones((1, 3))).sum(), model)[0].layers[0].weight
    kept = g1.copy()
    gradient(lambda m: m(np.full((1, 3), 5.0)).sum(), model)
    np.testing.assert_array_equal(g1, kept)


def test_gradient_arrays_are_writable_and_contiguous():
    (g,) = gradient(lambda x: x.sum(), rng.standard_normal((3, 4)))
    assert g.flags.writeable and g.flags.c_contiguous
    g *= 2  # a user (or an optimiser) may update it in place
    np.testing.assert_array_equal(g, np.full((3, 4), 2.0))


def test_model_list_field_mutation_is_seen():
    class Bag(Chain):
        pass

    bag = Bag(Dense(2, 2, dtype=np.float64))
    bag.extra = [rng.standard_normal(2)]
    (g,) = gradient(lambda m: (m.extra[0] * 3).sum(), bag)
    np.testing.assert_allclose(g.extra[0], np.full(2, 3.0))
    bag.extra.append(rng.standard_normal(2))
    (g,) = gradient(lambda m: (m.extra[1] * 2).sum(), bag)
    assert g.extra[0] is None
    np.testing.assert_allclose(g.extra[1], np.full(2, 2.0))
