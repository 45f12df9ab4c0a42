"""Dropout, AlphaDropout, trainmode/testmode, Embedding, SkipConnection and Parallel:
gradients against finite differences and PyTorch, mask statistics, modes and errors."""

from __future__ import annotations

import operator
import re

import numpy as np
import pytest
from kiln_engine import (
    AlphaDropout,
    BatchNorm,
    Chain,
    Dense,
    Dropout,
    Embedding,
    Parallel,
    ShapeError,
    SkipConnection,
    concat,
    gradient,
    paths,
    random,
    testmode,
    trainmode,
)

from .gradcheck import check_gradients

rng = np.random.default_rng(0)


def r(*shape: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=shape)


def _dense(w: np.ndarray, b: np.ndarray) -> Dense:
    d = Dense(w.shape[1], w.shape[0], dtype=np.float64)
    d.weight, d.bias = w, b
    return d


def _fill_and_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """For a dropout output: (value of dropped units, slope and offset of kept ones, kept
    fraction). Dropped units are the most common value; kept ones must be affine in x."""
    values, counts = np.unique(y, return_counts=True)
    fill = values[counts.argmax()]
    kept = y != fill
    slope, offset = np.polyfit(x[kept], y[kept], 1)
    np.testing.assert_allclose(y[kept], slope * x[kept] + offset, rtol=1e-9, atol=1e-12)
    return float(fill), float(slope), float(offset), float(kept.mean())


# ---------------------------------------------------------------- Dropout


def test_dropout_is_identity_outside_gradient_and_active_inside():
    d = Dropout(0.5)
    x = rng.uniform(1.0, 2.0, size=(50, 20))
    assert d(x) is x
    seen = []

    def loss(x):
        y = d(x)
        seen.append(y.data.copy())
        return y.sum()

    (g,) = gradient(loss, x)
    y = seen[0]
    assert 0.3 < np.mean(y == 0) < 0.7
    np.testing.assert_allclose(g, y / x, rtol=1e-12)  # the gradient is the scaled mask


def test_dropout_scaling_and_mask_statistics_match_torch(torch):
    p, n = 0.3, 200_000
    x = np.linspace(1.0, 2.0, n)
    ours = Dropout(p, rng=np.random.default_rng(42), active=True)(x)
    theirs = torch.nn.functional.dropout(torch.tensor(x), p, training=True).numpy()
    fill, slope, offset, kept = _fill_and_slope(x, ours)
    assert (fill, offset) == (0.0, pytest.approx(0.0, abs=1e-12))
    assert slope == pytest.approx(1 / (1 - p), rel=1e-12)
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    assert _fill_and_slope(x, theirs)[:3] == pytest.approx((fill, slope, offset), abs=1e-9)


def test_dropout_rng_fixes_the_mask_and_the_global_seed_applies():
    x = np.ones((30, 40))
    a = Dropout(0.5, rng=np.random.default_rng(7), active=True)(x)
    b = Dropout(0.5, rng=np.random.default_rng(7), active=True)(x)
    np.testing.assert_array_equal(a, b)
    d = Dropout(0.5, active=True)
    random.seed(3)
    first = d(x)
    random.seed(3)
    np.testing.assert_array_equal(d(x), first)
    assert not np.array_equal(d(x), first)  # each call draws a new mask


@pytest.mark.parametrize("dims,shape,shared", [
    ((0, 1), (4, 6, 3, 3), (2, 3)),  # whole channels, NCHW
    (-1, (5, 8), (0,)),  # one mask row shared across the batch
])
def test_dropout_dims_share_the_mask_along_other_axes(dims, shape, shared):
    y = Dropout(0.5, dims=dims, rng=np.random.default_rng(1), active=True)(np.ones(shape))
    for axis in shared:
        np.testing.assert_array_equal(y, np.take(y, [0], axis=axis).repeat(shape[axis], axis))
    assert len(np.unique(y)) == 2


def test_dropout_extremes():
    x = r(10, 10)
    assert Dropout(0.0, active=True)(x) is x
    assert not np.any(Dropout(1.0, active=True)(x))


def test_dropout_gradient_with_a_fixed_mask():
    check_gradients(lambda x: Dropout(0.4, rng=np.random.default_rng(3), active=True)(x),
                    r(6, 5))


def test_dropout_float32_preserved():
    y = Dropout(0.5, active=True)(np.ones((4, 4), np.float32))
    assert y.dtype == np.float32


def test_alpha_dropout_matches_torch_and_keeps_mean_and_variance(torch):
    p, n = 0.2, 200_000
    x = np.random.default_rng(5).standard_normal(n)
    ours = AlphaDropout(p, rng=np.random.default_rng(6), active=True)(x)
    assert abs(ours.mean()) < 0.015 and abs(ours.var() - 1) < 0.03
    theirs = torch.nn.functional.alpha_dropout(torch.tensor(x), p, training=True).numpy()
    mine = _fill_and_slope(x, ours)
    assert _fill_and_slope(x, theirs)[:3] == pytest.approx(mine[:3], rel=1e-9)
    assert abs(mine[3] - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    assert AlphaDropout(p)(x) is x  # automatic: inactive outside gradient


def test_alpha_dropout_gradient_with_a_fixed_mask():
    check_gradients(lambda x: AlphaDropout(0.3, rng=np.random.default_rng(2), active=True)(x),
                    r(5, 6))


@pytest.mark.parametrize("build,message", [
    (lambda: Dropout(1.5), "p must be a probability with 0 <= p <= 1"),
    (lambda: Dropout(True), "p must be a probability"),
    (lambda: Dropout(0.5, dims=1.0), "dims must be an int or a tuple of ints"),
    (lambda: Dropout(0.5, rng=3), "rng must be a numpy Generator"),
    (lambda: AlphaDropout(1.0), "p must be a probability with 0 <= p < 1"),
])
def test_dropout_bad_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("layer,x,message", [
    (Dropout(0.5, dims=(0, 3)), np.ones((2, 2)),
     "Dropout(0.5, dims=(0, 3)) expects an array with at least 4 dimensions"),
    (Dropout(0.5), np.ones(3, np.int64), "Dropout(0.5) expects floating-point input"),
    (AlphaDropout(0.5), [1.0, 2.0], "AlphaDropout(0.5) expects an array; got list"),
], ids=["rank", "dtype", "not_array"])
def test_dropout_bad_input_names_the_layer(layer, x, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        layer(x)


# ---------------------------------------------------------------- modes


def _modal_tree():
    drop, bn, inner, branch = Dropout(0.5), BatchNorm(4), Dropout(0.2), AlphaDropout(0.1)
    model = Chain(Dense(4, 4), drop,
                  SkipConnection(Chain(bn, inner), operator.add),
                  Parallel(concat(-1), branch, Dense(4, 2)))
    return model, [drop, bn, inner, branch]


@pytest.mark.parametrize("fn,mode,active", [
    (trainmode, True, True), (trainmode, False, False), (trainmode, None, None),
    (testmode, True, False), (testmode, False, True), (testmode, None, None),
])
def test_modes_reach_every_layer_in_the_tree(fn, mode, active):
    model, modal = _modal_tree()
    for m in modal:
        m.active = "unset"
    assert fn(model, mode) is model
    assert [m.active for m in modal] == [active] * len(modal)


def test_forced_modes_change_behaviour_inside_and_outside_gradient():
    d = Dropout(0.5)
    x = np.ones((20, 20))
    trainmode(d)
    assert np.any(d(x) == 0)  # drops outside gradient
    testmode(d)
    np.testing.assert_array_equal(gradient(lambda x: d(x).sum(), x)[0], 1)  # not inside
    testmode(d, None)
    assert d(x) is x


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be True, False or None"):
        trainmode(Dropout(0.5), "auto")


# ---------------------------------------------------------------- Embedding


def test_embedding_against_fd_and_torch(torch, backend):
    idx = np.random.default_rng(1).integers(0, 7, size=(4, 9))  # many repeated tokens

    def f(w):
        e = Embedding(7, 3, dtype=np.float64)
        e.weight = w
        return e(idx)

    check_gradients(f, r(7, 3),
                    torch_f=lambda w: torch.nn.functional.embedding(torch.tensor(idx), w),
                    torch=torch, backend=backend)


@pytest.mark.parametrize("idx,shape", [
    (np.int64(3), (4,)),
    ([1, 2, 2], (3, 4)),
    (np.arange(6, dtype=np.uint8).reshape(2, 3), (2, 3, 4)),
    (np.zeros(0, np.int32), (0, 4)),
])
def test_embedding_any_index_shape(idx, shape):
    e = Embedding(10, 4)
    y = e(idx)
    assert y.shape == shape and y.dtype == np.float32
    np.testing.assert_array_equal(y.reshape(-1, 4), e.weight[np.asarray(idx).reshape(-1)])
    g = gradient(lambda e: e(idx).sum(), e)[0]
    expected = np.bincount(np.asarray(idx).reshape(-1), minlength=10)[:, None] * np.ones(4)
    np.testing.assert_array_equal(g.weight, expected)


@pytest.mark.parametrize("idx,message", [
    (np.array([1.0, 2.0]), "Embedding(10 => 4) expects integer indices (token ids); got dtype "
                           "float64"),
    (np.array([True]), "expects integer indices (token ids); got dtype bool"),
    (np.array([[1, 10]]), "Embedding(10 => 4) expects indices in 0..9; got 10"),
    (-1, "Embedding(10 => 4) expects indices in 0..9; got -1"),
    ("a", "expects integer indices (token ids); got str"),
])
def test_embedding_bad_indices(idx, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        Embedding(10, 4)(idx)


def test_embedding_layout_and_construction():
    e = Embedding(10, 4, rng=np.random.default_rng(0))
    assert e.weight.shape == (10, 4) and repr(e) == "Embedding(10 => 4)"
    with pytest.raises(ValueError, match="Embedding: dim must be a positive integer"):
        Embedding(10, 0)


# ---------------------------------------------------------------- SkipConnection, Parallel


@pytest.mark.parametrize("connection,torch_connection", [
    (operator.add, lambda y, x: y + x),
    (concat(-1), lambda y, x: T().cat([y, x], dim=-1)),
], ids=["add", "concat"])
def test_skip_connection_against_fd_and_torch(connection, torch_connection, torch):
    def f(x, w, b):
        return SkipConnection(_dense(w, b), connection)(x)

    check_gradients(f, r(4, 3), r(3, 3), r(3),
                    torch_f=lambda x, w, b: torch_connection(x @ w.T + b, x), torch=torch)


def T():
    import torch

    return torch


def test_parallel_one_input_for_all_layers_against_torch(torch):
    def f(x, w1, b1, w2, b2):
        return Parallel(concat(-1), _dense(w1, b1), _dense(w2, b2))(x)

    def torch_f(x, w1, b1, w2, b2):
        return torch.cat([x @ w1.T + b1, x @ w2.T + b2], dim=-1)

    check_gradients(f, r(4, 3), r(2, 3), r(2), r(5, 3), r(5), torch_f=torch_f, torch=torch)


def test_parallel_one_input_per_layer_against_torch(torch):
    def f(x1, x2, w1, w2):
        return Parallel(operator.add, _dense(w1, np.zeros(2)), _dense(w2, np.zeros(2)))(x1, x2)

    check_gradients(f, r(4, 3), r(4, 5), r(2, 3), r(2, 5),
                    torch_f=lambda x1, x2, w1, w2: x1 @ w1.T + x2 @ w2.T, torch=torch)


def test_parallel_tuple_input_and_single_layer_on_each_input():
    d = Dense(3, 2)
    x1, x2 = r(4, 3).astype(np.float32), r(4, 3).astype(np.float32)
    np.testing.assert_allclose(Parallel(operator.add, d)(x1, x2), d(x1) + d(x2), rtol=1e-6)
    two = Parallel(operator.mul, d, Dense(3, 2))
    np.testing.assert_array_equal(two((x1, x2)), two(x1, x2))


def test_parallel_named_layers_paths_and_gradients():
    m = Parallel(concat(-1), a=Dense(3, 2), b=Dense(3, 4))
    assert "layers.a.weight" in paths(m) and "layers.b.bias" in paths(m)
    g = gradient(lambda m: m(np.ones((2, 3), np.float32)).sum(), m)[0]
    assert g.layers.a.weight.shape == (2, 3) and g.layers.b.weight.shape == (4, 3)
    assert repr(m) == "Parallel(concat(-1), a=Dense(3 => 2), b=Dense(3 => 4))"


@pytest.mark.parametrize("model,xs,path", [
    (Chain(SkipConnection(Dense(3, 3), operator.add)), (np.ones((2, 4), np.float32),),
     "layers.0.layer"),
    (Parallel(concat(-1), a=Dense(3, 2), b=Dense(4, 2)), (np.ones((2, 3), np.float32),),
     "layers.b"),
    (Parallel(concat(-1), Dense(3, 2), Dense(3, 2)),
     (np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)), "connection"),
], ids=["skip", "parallel_member", "concat_shapes"])
def test_container_errors_name_the_path(model, xs, path):
    with pytest.raises(ShapeError) as e:
        model(*xs)
    assert e.value.path == path


def test_concat_error_message():
    with pytest.raises(ShapeError, match=re.escape("concat(-1) needs arrays of one rank that "
                                                   "agree on every axis but -1")):
        concat(-1)(np.ones((2, 3)), np.ones((5, 3)))


@pytest.mark.parametrize("call,message", [
    (lambda: Parallel(operator.add, Dense(3, 2), Dense(3, 2))(*[np.ones((1, 3))] * 3),
     "has 2 layers but got 3 inputs"),
    (lambda: Parallel(operator.add), "needs at least one layer"),
    (lambda: Parallel(operator.add, Dense(3, 2), b=Dense(3, 2)), "either all by position"),
    (lambda: Parallel(3, Dense(3, 2)), "connection must be callable"),
    (lambda: SkipConnection(Dense(3, 3), 3), "connection must be callable"),
    (lambda: concat(1.5), "concat: axis must be an int"),
])
def test_container_bad_use(call, message):
    with pytest.raises(ValueError, match=message):
        call()
