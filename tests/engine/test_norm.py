"""BatchNorm and LayerNorm: values and gradients in float64 against finite differences and
PyTorch (F.batch_norm in training and eval mode, F.layer_norm) with the same weights;
running statistics, modes, dtypes and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from kiln_engine import (
    BatchNorm,
    Chain,
    Dense,
    LayerNorm,
    ShapeError,
    elu,
    gradient,
    identity,
    relu,
    sigmoid,
    tanh,
    testmode,
    trainmode,
)
from kiln_engine._backend import array_module
from kiln_engine._ops import data
from kiln_engine._tape import _state

from .gradcheck import check_gradients

rng = np.random.default_rng(0)


def F():
    """torch.nn.functional, imported only when a torch-side function runs (under the fixture)."""
    import torch.nn.functional

    return torch.nn.functional


def r(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape)


def T(a: np.ndarray):
    import torch

    return torch.tensor(a)


# (id, input shape, kiln activation, torch activation, training)
BN_CASES = [
    ("2d_train", (5, 3), identity, lambda y: y, True),
    ("3d_train", (4, 3, 5), identity, lambda y: y, True),
    ("4d_train_relu_fused", (3, 2, 4, 4), relu, lambda y: F().relu(y), True),
    ("4d_train_elu_unfused", (3, 2, 3, 3), elu, lambda y: F().elu(y), True),
    ("5d_train", (2, 2, 2, 3, 2), identity, lambda y: y, True),
    ("2d_eval_tanh", (5, 3), tanh, lambda y: y.tanh(), False),
    ("4d_eval_sigmoid", (3, 2, 4, 4), sigmoid, lambda y: y.sigmoid(), False),
]


@pytest.mark.parametrize("name,shape,act,tact,train", BN_CASES, ids=[c[0] for c in BN_CASES])
def test_batchnorm_against_fd_and_torch(name, shape, act, tact, train, torch, backend):
    c = shape[1]
    running_mean, running_var = r(c), r(c, lo=0.5, hi=2.0)

    def f(x, w, b):
        m = BatchNorm(c, act, dtype=np.float64, active=train)
        m.weight, m.bias = w, b
        xp = array_module(data(x))  # the statistics on the input's device
        m.running_mean, m.running_var = xp.asarray(running_mean), xp.asarray(running_var)
        return m(x)

    def torch_f(x, w, b):
        return tact(F().batch_norm(x, T(running_mean), T(running_var), w, b, training=train,
                                   momentum=0.1, eps=1e-5))

    check_gradients(f, r(*shape) * 3 + 1, r(c, lo=0.5, hi=1.5), r(c), torch_f=torch_f,
                    torch=torch, backend=backend)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_without_affine_against_torch(train, torch):
    running_mean, running_var = r(3), r(3, lo=0.5, hi=2.0)

    def f(x):
        m = BatchNorm(3, affine=False, dtype=np.float64, active=train)
        m.running_mean, m.running_var = running_mean.copy(), running_var.copy()
        return m(x)

    def torch_f(x):
        return F().batch_norm(x, T(running_mean), T(running_var), training=train)

    check_gradients(f, r(4, 3, 2, 2), torch_f=torch_f, torch=torch)


def test_batchnorm_without_stats_uses_batch_statistics_in_test_mode(torch):
    def f(x, w, b):
        m = BatchNorm(3, track_stats=False, dtype=np.float64, active=False)
        m.weight, m.bias = w, b
        return m(x)

    def torch_f(x, w, b):
        return F().batch_norm(x, None, None, w, b, training=True)

    check_gradients(f, r(4, 3, 2), r(3), r(3), torch_f=torch_f, torch=torch)
    assert BatchNorm(3, track_stats=False).running_mean is None


# (id, input shape, size, kiln activation, torch activation)
LN_CASES = [
    ("last_axis", (4, 6), 6, identity, lambda y: y),
    ("two_axes", (2, 3, 4), (3, 4), identity, lambda y: y),
    ("last_of_3d_relu_fused", (2, 3, 4), 4, relu, lambda y: F().relu(y)),
    ("unbatched_elu_unfused", (5,), 5, elu, lambda y: F().elu(y)),
]


@pytest.mark.parametrize("name,shape,size,act,tact", LN_CASES, ids=[c[0] for c in LN_CASES])
def test_layernorm_against_fd_and_torch(name, shape, size, act, tact, torch, backend):
    dims = (size,) if isinstance(size, int) else size

    def f(x, w, b):
        m = LayerNorm(size, act, dtype=np.float64)
        m.weight, m.bias = w, b
        return m(x)

    def torch_f(x, w, b):
        return tact(F().layer_norm(x, dims, w, b, eps=1e-5))

    check_gradients(f, r(*shape) * 2 + 0.5, r(*dims, lo=0.5, hi=1.5), r(*dims),
                    torch_f=torch_f, torch=torch, backend=backend)


def test_layernorm_without_affine_against_torch(torch):
    check_gradients(lambda x: LayerNorm((2, 3), affine=False, dtype=np.float64)(x), r(3, 2, 3),
                    torch_f=lambda x: F().layer_norm(x, (2, 3)), torch=torch)


def _tape_nodes(layer, x) -> int:
    """How many tape nodes one call of ``layer`` records inside gradient."""
    count = []

    def loss(x):
        before = len(_state.tape)
        y = layer(x)
        count.append(len(_state.tape) - before)
        return y.sum()

    gradient(loss, x)
    return count[0]


@pytest.mark.parametrize("layer", [BatchNorm(3, relu, dtype=np.float64),
                                   LayerNorm(4, tanh, dtype=np.float64)], ids=repr)
def test_normalisation_with_fused_activation_is_one_tape_node(layer):
    assert _tape_nodes(layer, r(2, 3, 4)) == 1


def test_running_stats_match_torch_after_several_steps(torch):
    m = BatchNorm(3, dtype=np.float64)
    ref = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5)
    for step in range(4):
        x = r(5, 3, 2, 3) * (step + 1) + step
        gradient(lambda m: m(x).sum(), m)
        ref.train()
        ref(T(x))
    np.testing.assert_allclose(m.running_mean, ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(m.running_var, ref.running_var.numpy(), rtol=1e-12)
    x = r(2, 3, 2, 3)
    ref.eval()
    np.testing.assert_allclose(m(x), ref(T(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_float32_layernorm_is_accurate_on_long_offset_rows():
    x = (np.random.default_rng(2).standard_normal((4, 65536)) + 1000).astype(np.float32)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    assert np.abs(LayerNorm(65536)(x) - exact).max() < 2e-4  # torch: ~5e-5


def _stats(m):
    return m.running_mean.copy(), m.running_var.copy()


def test_running_stats_update_only_in_training_mode():
    m = BatchNorm(3)
    x = (r(8, 3) * 2 + 1).astype(np.float32)
    start = _stats(m)

    m(x)  # automatic mode outside gradient: test behaviour, no update
    np.testing.assert_array_equal(_stats(m), start)

    gradient(lambda m: m(x).sum(), m)  # automatic mode inside gradient: update
    after_grad = _stats(m)
    assert not np.allclose(after_grad[0], start[0])

    testmode(m)  # forced test mode inside gradient: no update
    gradient(lambda m: m(x).sum(), m)
    np.testing.assert_array_equal(_stats(m), after_grad)

    trainmode(m)  # forced training outside gradient: update, batch statistics used
    y = m(x)
    assert not np.allclose(_stats(m)[0], after_grad[0])
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)

    trainmode(m, None)  # back to automatic
    frozen = _stats(m)
    m(x)
    np.testing.assert_array_equal(_stats(m), frozen)


def test_running_stats_get_no_gradient_and_are_updated_in_place():
    m = Chain(Dense(2, 3), BatchNorm(3))
    bn = m.layers[1]
    mean_array = bn.running_mean
    g = gradient(lambda m: (m(r(4, 2).astype(np.float32)) ** 2).sum(), m)[0]
    assert g.layers[1].running_mean is None and g.layers[1].running_var is None
    assert g.layers[1].weight.shape == (3,)
    assert bn.running_mean is mean_array and np.any(mean_array != 0)


def test_test_mode_uses_running_statistics():
    m = BatchNorm(2, dtype=np.float64)
    m.running_mean[:] = [1.0, -2.0]
    m.running_var[:] = [4.0, 0.25]
    m.weight[:] = [2.0, 3.0]
    m.bias[:] = [0.5, -0.5]
    x = r(3, 2)
    expected = (x - m.running_mean) / np.sqrt(m.running_var + 1e-5) * m.weight + m.bias
    np.testing.assert_allclose(m(x), expected, rtol=1e-12)


@pytest.mark.parametrize("layer", [BatchNorm(3), LayerNorm(4)], ids=repr)
def test_float32_preserved_and_float64_input_cast(layer):
    x = r(2, 3, 4)
    y = layer(x.astype(np.float32))
    assert y.dtype == np.float32
    assert layer(x).dtype == np.float32
    g = gradient(lambda m: m(x).sum(), layer)[0]
    assert g.weight.dtype == np.float32 and g.bias.dtype == np.float32
    if isinstance(layer, BatchNorm):
        assert layer.running_var.dtype == np.float32


@pytest.mark.parametrize("layer,x,message", [
    (BatchNorm(3), np.zeros((2, 4), np.float32), "BatchNorm(3) expects 3 features on axis 1"),
    (BatchNorm(3), np.zeros(3, np.float32), "BatchNorm(3) expects input (N, 3)"),
    (BatchNorm(3), np.zeros((2, 3), np.int64), "BatchNorm(3) expects floating-point"),
    (BatchNorm(3, active=True), np.zeros((1, 3), np.float32), "more than one value per channel"),
    (LayerNorm((2, 3)), np.zeros((4, 3, 2), np.float32),
     "LayerNorm((2, 3)) expects input (..., 2, 3)"),
    (LayerNorm(4), np.zeros((), np.float32), "LayerNorm(4) expects input (..., 4)"),
], ids=["channels", "rank", "dtype", "single_value", "trailing", "scalar"])
def test_bad_input_names_the_layer(layer, x, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        layer(x)


def test_error_inside_chain_names_the_path():
    with pytest.raises(ShapeError) as e:
        Chain(Dense(2, 4), BatchNorm(3))(np.zeros((2, 2), np.float32))
    assert e.value.path == "layers.1"


@pytest.mark.parametrize("build,message", [
    (lambda: BatchNorm(0), "channels must be a positive integer"),
    (lambda: BatchNorm(3, momentum=1.5), "momentum must be a number in"),
    (lambda: BatchNorm(3, eps=0), "eps must be a positive number"),
    (lambda: BatchNorm(3, active="yes"), "active must be True, False or None"),
    (lambda: BatchNorm(3, activation=3), "activation must be callable"),
    (lambda: LayerNorm(()), "at least one dimension"),
    (lambda: LayerNorm((3, -1)), "size must be a positive integer"),
])
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_repr():
    assert repr(BatchNorm(3, relu, affine=False)) == "BatchNorm(3, relu, affine=False)"
    assert repr(LayerNorm((2, 3))) == "LayerNorm((2, 3))"
