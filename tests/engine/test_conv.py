"""Conv and ConvTranspose: values and gradients in float64 against finite differences and
PyTorch (conv2d, conv_transpose2d) over a table of geometries, in both matmul layouts;
layers, weight layouts, dtypes and errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from kiln_engine import (
    Chain,
    Conv,
    ConvTranspose,
    ShapeError,
    elu,
    gradient,
    identity,
    relu,
    sigmoid,
    tanh,
)
from kiln_engine.layers import conv as conv_module
from kiln_engine.layers.conv import conv, conv_transpose

from .gradcheck import check_gradients, four
from .gradcheck import torch_functional as F

rng = np.random.default_rng(0)


def r(*shape: int) -> np.ndarray:
    return rng.uniform(-1, 1, size=shape)


TORCH_ACT = {identity: lambda y: y, relu: lambda y: F().relu(y), sigmoid: lambda y: y.sigmoid(),
             tanh: lambda y: y.tanh(), elu: lambda y: F().elu(y)}


@pytest.fixture(params=["per-sample", "batch-inner"])
def layout(request, monkeypatch):
    """Run a test in each matmul layout (the choice is a speed heuristic; both must agree)."""
    monkeypatch.setattr(conv_module, "_SHORT_ROW", 0 if request.param == "per-sample" else 10**9)
    return request.param


# (id, x shape, out channels, kernel, stride, pad, dilation, groups, bias, activation)
CONV_CASES = [
    ("plain", (2, 2, 5, 6), 3, 3, 1, 0, 1, 1, True, identity),
    ("no_bias", (2, 2, 5, 5), 2, 3, 1, 0, 1, 1, False, identity),
    ("stride2_odd_size", (2, 2, 7, 6), 3, 3, 2, 0, 1, 1, True, identity),
    ("pad_int", (1, 2, 4, 5), 2, 3, 1, 1, 1, 1, True, identity),
    ("pad_pair", (2, 1, 5, 4), 2, (3, 2), 1, (2, 1), 1, 1, True, identity),
    ("pad_4tuple", (2, 2, 4, 5), 2, 3, (2, 1), (0, 2, 1, 0), 1, 1, True, identity),
    ("dilation", (2, 2, 7, 7), 2, 3, 1, 1, (2, 3), 1, True, identity),
    ("groups", (2, 4, 5, 5), 6, 3, 1, 1, 1, 2, True, identity),
    ("depthwise", (2, 3, 5, 4), 3, (2, 3), 1, 0, 1, 3, True, identity),
    ("relu_fused", (2, 2, 5, 5), 3, 3, 1, 1, 1, 1, True, relu),
    ("sigmoid_fused", (2, 2, 5, 5), 2, 2, 1, 0, 1, 1, True, sigmoid),
    ("tanh_fused", (2, 2, 4, 4), 2, 3, 1, 1, 1, 1, False, tanh),
    ("elu_unfused", (2, 2, 5, 5), 2, 3, 2, 1, 1, 1, True, elu),
    ("kernel_1x1", (3, 3, 3, 4), 2, 1, 1, 0, 1, 1, True, identity),
]


@pytest.mark.parametrize("name,shape,out,kernel,stride,pad,dilation,groups,bias,act", CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_conv_against_fd_and_torch(name, shape, out, kernel, stride, pad, dilation, groups, bias,
                                   act, layout, torch, backend):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    args = [r(*shape), r(out, shape[1] // groups, kh, kw)] + ([r(out)] if bias else [])

    def f(x, w, b=None):
        return conv(x, w, b, act, stride=stride, pad=pad, dilation=dilation, groups=groups)

    def torch_f(x, w, b=None):
        t, bo, left, right = four(pad)
        y = F().conv2d(F().pad(x, (left, right, t, bo)), w, b, stride=stride, dilation=dilation,
                       groups=groups)
        return TORCH_ACT[act](y)

    check_gradients(f, *args, torch_f=torch_f, torch=torch, backend=backend)


# (id, x shape, kernel, stride, dilation): "same" keeps ceil(size / stride)
SAME_CASES = [
    ("odd_kernel", (2, 2, 5, 6), 3, 1, 1),
    ("even_kernel", (2, 1, 5, 4), 2, 1, 1),
    ("stride2", (2, 2, 7, 6), 3, 2, 1),
    ("stride3_even_kernel", (1, 2, 7, 8), (4, 2), 3, 1),
    ("dilated", (2, 1, 6, 5), 3, 1, 2),
]


@pytest.mark.parametrize("name,shape,kernel,stride,dilation", SAME_CASES,
                         ids=[c[0] for c in SAME_CASES])
def test_conv_same_pad_keeps_ceil_size_and_puts_the_extra_first(name, shape, kernel, stride,
                                                                 dilation, layout, torch):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = r(2, shape[1], kh, kw)
    y = conv(r(*shape), w, stride=stride, pad="same", dilation=dilation)
    assert y.shape[2:] == (math.ceil(shape[2] / stride), math.ceil(shape[3] / stride))

    def torch_f(x, w):
        # Flux's SamePad: total = dilated kernel - 1 per axis, the larger half at the start.
        th, tw = dilation * (kh - 1), dilation * (kw - 1)
        padded = F().pad(x, (tw - tw // 2, tw // 2, th - th // 2, th // 2))
        return F().conv2d(padded, w, stride=stride, dilation=dilation)

    check_gradients(lambda x, w: conv(x, w, stride=stride, pad="same", dilation=dilation),
                    r(*shape), w, torch_f=torch_f, torch=torch)


# (id, x shape, out channels, kernel, stride, pad, output_padding, dilation, groups, bias, act)
TRANSPOSE_CASES = [
    ("plain", (2, 2, 3, 4), 3, 3, 1, 0, 0, 1, 1, True, identity),
    ("stride2", (2, 2, 3, 3), 2, 3, 2, 0, 0, 1, 1, True, identity),
    ("stride2_pad_output_padding", (2, 2, 3, 4), 2, 3, 2, 1, 1, 1, 1, True, identity),
    ("rect_stride_pad_pair", (2, 1, 3, 4), 2, (2, 3), (2, 1), (1, 0), (1, 0), 1, 1, False,
     identity),
    ("dilation", (2, 2, 3, 3), 2, 2, 1, 1, 0, (2, 1), 1, True, identity),
    ("groups", (2, 4, 3, 3), 2, 2, 2, 0, 0, 1, 2, True, identity),
    ("relu_fused", (2, 2, 3, 3), 2, 3, 2, 1, 0, 1, 1, True, relu),
    ("elu_unfused", (2, 2, 3, 3), 2, 2, 1, 0, 0, 1, 1, True, elu),
]


@pytest.mark.parametrize("name,shape,out,kernel,stride,pad,opad,dilation,groups,bias,act",
                         TRANSPOSE_CASES, ids=[c[0] for c in TRANSPOSE_CASES])
def test_conv_transpose_against_fd_and_torch(name, shape, out, kernel, stride, pad, opad,
                                             dilation, groups, bias, act, layout, torch,
                                             backend):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    args = [r(*shape), r(shape[1], out // groups, kh, kw)] + ([r(out)] if bias else [])
    kw_args = dict(stride=stride, dilation=dilation, groups=groups, output_padding=opad)

    def f(x, w, b=None):
        return conv_transpose(x, w, b, act, pad=pad, **kw_args)

    def torch_f(x, w, b=None):
        return TORCH_ACT[act](F().conv_transpose2d(x, w, b, padding=pad, **kw_args))

    check_gradients(f, *args, torch_f=torch_f, torch=torch, backend=backend)


def test_conv_transpose_asymmetric_pad_crops_each_edge(layout, torch):
    def torch_f(x, w):
        full = F().conv_transpose2d(x, w, stride=2)
        return full[:, :, 1:full.shape[2] - 0, 0:full.shape[3] - 2]

    check_gradients(lambda x, w: conv_transpose(x, w, stride=2, pad=(1, 0, 0, 2)),
                    r(2, 2, 3, 3), r(2, 3, 3, 3), torch_f=torch_f, torch=torch)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 2), (3, 2), (5, 3)])
def test_conv_transpose_same_pad_multiplies_the_size_by_the_stride(kernel, stride):
    y = ConvTranspose(kernel, 2, 3, stride=stride, pad="same")(r(2, 2, 4, 5).astype(np.float32))
    assert y.shape == (2, 3, 4 * stride, 5 * stride)


def test_conv_is_the_adjoint_of_conv_transpose():
    """<conv(x, w), y> = <x, conv_transpose(y, w)> for the same weight and geometry."""
    w = r(3, 2, 3, 3)
    x, geometry = r(2, 2, 7, 6), dict(stride=2, pad=1, dilation=1)
    y = r(*conv(x, w, **geometry).shape)
    back = conv_transpose(y, w, **geometry, output_padding=(0, 1))  # 7 rows: 0, 6 cols: 1
    assert back.shape == x.shape
    assert np.isclose((conv(x, w, **geometry) * y).sum(), (x * back).sum(), rtol=1e-12)


def test_both_layouts_give_the_same_float32_result(monkeypatch):
    x = r(4, 3, 9, 8).astype(np.float32)
    layer = Conv(3, 3, 4, relu, pad=1, rng=np.random.default_rng(1))
    results = []
    for short_row in (0, 10**9):
        monkeypatch.setattr(conv_module, "_SHORT_ROW", short_row)
        results.append(gradient(lambda m, x: m(x).sum(), layer, x))
    (gm0, gx0), (gm1, gx1) = results
    np.testing.assert_allclose(gx0, gx1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gm0.weight, gm1.weight, rtol=1e-5, atol=1e-5)


def test_conv_layer_matches_torch_conv2d_with_the_same_weights(torch):
    layer = Conv((3, 2), 4, 6, relu, stride=(1, 2), pad=(1, 0), groups=2, dtype=np.float64)
    assert layer.weight.shape == (6, 2, 3, 2) and layer.bias.shape == (6,)
    tl = torch.nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2)
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(layer.weight))
        tl.bias.copy_(torch.tensor(r(6)))
    layer.bias = tl.bias.detach().numpy().copy()
    x = r(2, 4, 5, 6)
    np.testing.assert_allclose(layer(x), F().relu(tl(torch.tensor(x))).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


def test_conv_transpose_layer_weight_layout_is_torchs(torch):
    layer = ConvTranspose(3, 4, 6, stride=2, groups=2, output_padding=1, dtype=np.float64)
    assert layer.weight.shape == (4, 3, 3, 3)
    tl = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, output_padding=1)
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(layer.weight))
        tl.bias.zero_()
    x = r(2, 4, 3, 4)
    np.testing.assert_allclose(layer(x), tl(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-12)


def test_conv_layer_gradient_record_has_weight_and_bias():
    layer = Conv(3, 2, 3, tanh)
    (g,) = gradient(lambda m: m(r(2, 2, 5, 5).astype(np.float32)).sum(), layer)
    assert g.weight.shape == (3, 2, 3, 3) and g.bias.shape == (3,)
    assert g.weight.dtype == np.float32 and np.abs(g.weight).sum() > 0


@pytest.mark.parametrize("cls", [Conv, ConvTranspose])
def test_float32_is_kept_and_other_floats_are_cast(cls):
    layer = cls(3, 2, 4, relu)
    assert layer.weight.dtype == np.float32
    x = r(2, 2, 6, 6)  # float64 input is cast to the weight's dtype, as in Flux
    gx, = gradient(lambda x: layer(x).sum(), x)
    assert layer(x).dtype == np.float32 and layer(x.astype(np.float16)).dtype == np.float32
    assert gx.dtype == np.float64  # the gradient is cast back to its input's dtype
    assert cls(3, 2, 4, dtype=np.float64)(x).dtype == np.float64


def test_repr_shows_the_geometry():
    assert repr(Conv(5, 1, 16, relu)) == "Conv((5, 5), 1 => 16, relu)"
    assert repr(Conv((3, 1), 4, 8, stride=2, pad="same", groups=4, bias=False)) == \
        "Conv((3, 1), 4 => 8, stride=(2, 2), pad=(1, 1, 0, 0), groups=4, bias=False)"
    assert repr(ConvTranspose(2, 3, 2, stride=2, output_padding=1)) == \
        "ConvTranspose((2, 2), 3 => 2, stride=(2, 2), output_padding=(1, 1))"


@pytest.mark.parametrize("make,x,message", [
    (lambda: Conv(3, 2, 4), np.zeros((1, 3, 5, 5), np.float32),
     "Conv((3, 3), 2 => 4) expects 2 features on axis 1 (NCHW input (N, 2, H, W)); got shape "
     "(1, 3, 5, 5)"),
    (lambda: Conv(3, 2, 4), np.zeros((2, 5, 5), np.float32),
     "Conv((3, 3), 2 => 4) expects NCHW input (N, 2, H, W); got an array of shape (2, 5, 5)"),
    (lambda: Conv(3, 2, 4), np.zeros((1, 2, 5, 5), np.int64),
     "Conv((3, 3), 2 => 4) expects floating-point input; got int64"),
    (lambda: ConvTranspose(3, 2, 4), np.zeros((1, 4, 5, 5), np.float32),
     "ConvTranspose((3, 3), 2 => 4) expects 2 features on axis 1"),
    (lambda: Conv(5, 1, 2, pad=1), np.zeros((1, 1, 2, 9), np.float32),
     "Conv((5, 5), 1 => 2, pad=(1, 1, 1, 1)) needs input height and width of at least 3 × 3 "
     "(dilated kernel (5, 5), pad (1, 1, 1, 1)); got 2 × 9"),
    (lambda: ConvTranspose(1, 1, 1, pad=1), np.zeros((1, 1, 2, 2), np.float32),
     "ConvTranspose((1, 1), 1 => 1, pad=(1, 1, 1, 1)): padding (1, 1, 1, 1) removes the whole "
     "2 × 2 output of a 2 × 2 input"),
])
def test_bad_input_names_the_layer(make, x, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        make()(x)


def test_bad_input_inside_a_chain_names_the_path():
    model = Chain(Conv(3, 1, 2, relu), Conv(3, 3, 2))
    with pytest.raises(ShapeError, match=re.escape("layers.1: Conv((3, 3), 3 => 2) expects 3")):
        model(np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize("build,message", [
    (lambda: Conv(0, 1, 2), "Conv: kernel must be a positive integer or a pair of them; got 0"),
    (lambda: Conv((3, 3, 3), 1, 2), "Conv: kernel must be a positive integer or a pair"),
    (lambda: Conv(3, 0, 2), "Conv: in must be a positive integer; got 0"),
    (lambda: Conv(3, 3, 4, groups=2), "Conv: in (3) and out (4) must both be divisible by "
                                      "groups (2)"),
    (lambda: Conv(3, 2, 2, groups=0), "Conv: groups must be a positive integer; got 0"),
    (lambda: Conv(3, 1, 2, stride=0), "Conv: stride must be a positive integer or a pair"),
    (lambda: Conv(3, 1, 2, dilation=(1, 0)), "Conv: dilation must be a positive integer"),
    (lambda: Conv(3, 1, 2, pad=-1), "Conv: pad must be a non-negative integer, a pair, a "
                                    "4-tuple (top, bottom, left, right) or \"same\"; got -1"),
    (lambda: Conv(3, 1, 2, pad=(1, 2, 3)), "Conv: pad must be a non-negative integer"),
    (lambda: Conv(3, 1, 2, pad="valid"), "(top, bottom, left, right) or \"same\"; got 'valid'"),
    (lambda: Conv(3, 1, 2, "relu"), "Conv: activation must be callable; got 'relu'"),
    (lambda: ConvTranspose(3, 1, 2, stride=2, output_padding=2),
     "ConvTranspose: output_padding (2, 2) must be smaller than the stride (2, 2) or the "
     "dilation (1, 1)"),
    (lambda: ConvTranspose(2, 1, 2, stride=3, pad="same"),
     "ConvTranspose: pad=\"same\" needs a dilated kernel (2, 2) at least as large as the "
     "stride (3, 3)"),
])
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
