"""Pooling and Flatten: values and gradients in float64 against finite differences and
PyTorch (max_pool2d, avg_pool2d, adaptive pools) over a table of windows, strides and pads,
in both the tiled fast path and the general path; ties, dtypes and errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from kiln_engine import (
    Chain,
    Flatten,
    GlobalMaxPool,
    GlobalMeanPool,
    MaxPool,
    MeanPool,
    ShapeError,
    gradient,
)
from kiln_engine.layers.pool import maxpool, meanpool

from .gradcheck import check_gradients, four
from .gradcheck import torch_functional as F

rng = np.random.default_rng(0)


def r(*shape: int) -> np.ndarray:
    return rng.uniform(-1, 1, size=shape)


def torch_pool(kind: str, window, stride, pad):
    """The torch twin: pad explicitly (-inf for max, 0 for mean, counted), then pool."""
    t, b, left, right = four(pad)

    def f(x):
        if kind == "max":
            return F().max_pool2d(F().pad(x, (left, right, t, b), value=-math.inf), window,
                                  stride)
        return F().avg_pool2d(F().pad(x, (left, right, t, b)), window, stride)

    return f


# (id, x shape, window, stride (None: the window), pad): the first four take the tiled path
POOL_CASES = [
    ("tiled_2x2", (2, 3, 4, 6), 2, None, 0),
    ("tiled_2x2_odd_size", (2, 2, 5, 7), 2, None, 0),
    ("tiled_3x3", (1, 2, 6, 7), 3, None, 0),
    ("tiled_rect", (2, 2, 4, 9), (2, 3), None, 0),
    ("tiled_1x1", (2, 2, 3, 3), 1, None, 0),
    ("overlapping", (2, 2, 5, 6), 3, 1, 0),
    ("stride_not_window", (2, 2, 7, 7), 3, 2, 0),
    ("pad_int", (2, 2, 5, 5), 2, None, 1),
    ("pad_pair", (2, 1, 5, 6), (3, 2), (2, 1), (1, 0)),
    ("pad_4tuple", (2, 2, 5, 5), 3, 2, (0, 2, 1, 0)),
]


@pytest.mark.parametrize("kind,pool", [("max", maxpool), ("mean", meanpool)])
@pytest.mark.parametrize("name,shape,window,stride,pad", POOL_CASES,
                         ids=[c[0] for c in POOL_CASES])
def test_pool_against_fd_and_torch(name, shape, window, stride, pad, kind, pool, torch,
                                   backend):
    torch_f = torch_pool(kind, window, window if stride is None else stride, pad)
    check_gradients(lambda x: pool(x, window, stride=stride, pad=pad), r(*shape),
                    torch_f=torch_f, torch=torch, backend=backend)


@pytest.mark.parametrize("kind,layer", [("max", MaxPool), ("mean", MeanPool)])
@pytest.mark.parametrize("window,stride", [(2, 2), (3, 1), (3, 2), ((2, 3), 1)])
def test_same_pad_keeps_ceil_size(kind, layer, window, stride, torch):
    pool = layer(window, stride=stride, pad="same")
    x = r(2, 2, 7, 6)
    assert pool(x).shape[2:] == (math.ceil(7 / stride), math.ceil(6 / stride))
    wh, ww = (window, window) if isinstance(window, int) else window
    # Flux's SamePad: window - 1 in all per axis, the larger half at the start.
    pad = (wh // 2, (wh - 1) // 2, ww // 2, (ww - 1) // 2)
    check_gradients(pool, x, torch_f=torch_pool(kind, window, stride, pad), torch=torch)


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 3), (3, 1)])
def test_max_gradient_goes_to_the_first_maximum_like_torch(window, stride, torch):
    """Ties (after relu, or on integer data) must route like PyTorch: first in row-major order."""
    x = rng.integers(0, 3, size=(2, 3, 6, 6)).astype(np.float64)
    x[0, 0] = 1.0  # a channel where every window is one big tie
    g = r(*maxpool(x, window, stride=stride).shape)
    gx, = gradient(lambda x: (maxpool(x, window, stride=stride) * g).sum(), x)
    tx = torch.tensor(x, requires_grad=True)
    (F().max_pool2d(tx, window, stride) * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(gx, tx.grad.numpy())


def test_global_pools_against_fd_and_torch(torch):
    x = r(2, 3, 4, 5)
    check_gradients(GlobalMaxPool(), x, torch_f=lambda x: F().adaptive_max_pool2d(x, 1),
                    torch=torch)
    check_gradients(GlobalMeanPool(), x, torch_f=lambda x: F().adaptive_avg_pool2d(x, 1),
                    torch=torch)
    assert GlobalMaxPool()(x).shape == GlobalMeanPool()(x).shape == (2, 3, 1, 1)


def test_global_max_ties_go_to_the_first_maximum_like_torch(torch):
    x = rng.integers(0, 2, size=(2, 3, 3, 4)).astype(np.float64)
    g = r(2, 3, 1, 1)
    gx, = gradient(lambda x: (GlobalMaxPool()(x) * g).sum(), x)
    tx = torch.tensor(x, requires_grad=True)
    (F().adaptive_max_pool2d(tx, 1) * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(gx, tx.grad.numpy())


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (2, 3, 4, 5), (2, 1, 2, 3, 2)])
def test_flatten_against_fd_and_torch(shape, torch):
    x = r(*shape)
    assert Flatten()(x).shape == (shape[0], math.prod(shape[1:]))
    check_gradients(Flatten(), x, torch_f=lambda x: x.flatten(1), torch=torch)


@pytest.mark.parametrize("layer", [MaxPool(2), MeanPool(2), MaxPool(3, stride=1, pad=1),
                                   MeanPool(3, stride=2, pad=1), GlobalMaxPool(),
                                   GlobalMeanPool(), Flatten()])
def test_float32_is_kept(layer):
    x = r(2, 3, 6, 6).astype(np.float32)
    gx, = gradient(lambda x: layer(x).sum(), x)
    assert layer(x).dtype == np.float32 and gx.dtype == np.float32


def test_repr():
    assert repr(MaxPool(2)) == "MaxPool((2, 2))"
    assert repr(MeanPool((3, 2), stride=1, pad="same")) == \
        "MeanPool((3, 2), stride=(1, 1), pad=(1, 1, 1, 0))"
    assert [repr(x) for x in (GlobalMaxPool(), GlobalMeanPool(), Flatten())] == \
        ["GlobalMaxPool()", "GlobalMeanPool()", "Flatten()"]


@pytest.mark.parametrize("layer,x,message", [
    (MaxPool(2), np.zeros((2, 4, 4), np.float32),
     "MaxPool((2, 2)) expects NCHW input (N, C, H, W); got an array of shape (2, 4, 4)"),
    (MeanPool(2), np.zeros((1, 1, 4, 4), np.int32),
     "MeanPool((2, 2)) expects floating-point input; got int32"),
    (MaxPool(3), np.zeros((1, 1, 2, 5), np.float32),
     "MaxPool((3, 3)) needs input height and width of at least 3 × 3; got 2 × 5"),
    (GlobalMaxPool(), np.zeros((2, 3), np.float32),
     "GlobalMaxPool() expects NCHW input (N, C, H, W); got an array of shape (2, 3)"),
    (GlobalMeanPool(), np.zeros((1, 1, 2, 2), np.int64),
     "GlobalMeanPool() expects floating-point input; got int64"),
    (Flatten(), np.zeros(5, np.float32),
     "Flatten() expects an array of rank 2 to 5, batch first; got an array of shape (5,)"),
])
def test_bad_input_names_the_layer(layer, x, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        layer(x)


def test_bad_input_inside_a_chain_names_the_path():
    with pytest.raises(ShapeError, match=re.escape("layers.1: MaxPool((4, 4)) needs input")):
        Chain(MaxPool(2), MaxPool(4))(np.zeros((1, 1, 6, 6), np.float32))


@pytest.mark.parametrize("build,message", [
    (lambda: MaxPool(0), "MaxPool: window must be a positive integer or a pair of them; got 0"),
    (lambda: MeanPool(2, stride=(1, 0)), "MeanPool: stride must be a positive integer or a "
                                         "pair of them; got (1, 0)"),
    (lambda: MaxPool(2, pad=2), "MaxPool: pad (2, 2, 2, 2) must be smaller than the window "
                                "(2, 2) on each side, or some windows would hold only padding"),
    (lambda: MaxPool(2, pad=(0, 0, 0, 3)), "must be smaller than the window"),
    (lambda: MeanPool(2, pad="full"), "MeanPool: pad must be a non-negative integer, a pair, "
                                      "a 4-tuple (top, bottom, left, right) or \"same\"; got "
                                      "'full'"),
])
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
