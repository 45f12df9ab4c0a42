"""Every primitive in _ops and every numpy function Kiln dispatches: value and gradient in
float64 against central finite differences and against PyTorch autograd."""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine import gradient, withgradient

from .gradcheck import check_gradients

rng = np.random.default_rng(0)


def T():
    """The torch module, imported only when a torch-side lambda runs (under the fixture)."""
    import torch

    return torch


def r(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape)


POS = dict(lo=0.5, hi=2.0)

# (name, kiln function, torch function or None, inputs)
CASES = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, [r(3, 4), r(3, 4)]),
    ("add_broadcast", lambda a, b: a + b, lambda a, b: a + b, [r(3, 4), r(4)]),
    ("add_scalar_left", lambda a: 2.0 + a, lambda a: 2.0 + a, [r(3)]),
    ("radd_ndarray", lambda a, b: b + a, lambda a, b: b + a, [r(2, 3), r(2, 1)]),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, [r(3, 4), r(1, 4)]),
    ("rsub", lambda a: 1.0 - a, lambda a: 1.0 - a, [r(3)]),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [r(2, 3, 4), r(3, 1)]),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [r(3, 4), r(3, 4, **POS)]),
    ("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a, [r(5, **POS)]),
    ("pow_const", lambda a: a**3, lambda a: a**3, [r(4)]),
    ("pow_both", lambda a, b: a**b, lambda a, b: a**b, [r(4, **POS), r(4)]),
    ("neg", lambda a: -a, lambda a: -a, [r(3)]),
    ("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [r(3, 4), r(4, 5)]),
    ("matmul_batched", lambda a, b: a @ b, lambda a, b: a @ b, [r(2, 3, 4), r(4, 5)]),
    ("matmul_vec_mat", lambda a, b: a @ b, lambda a, b: a @ b, [r(4), r(4, 5)]),
    ("matmul_mat_vec", lambda a, b: a @ b, lambda a, b: a @ b, [r(3, 4), r(4)]),
    ("matmul_vec_vec", lambda a, b: a @ b, lambda a, b: a @ b, [r(4), r(4)]),
    ("np_dot", lambda a, b: np.dot(a, b), lambda a, b: a @ b, [r(3, 4), r(4, 2)]),
    ("np_exp", np.exp, lambda a: a.exp(), [r(3, 2)]),
    ("np_expm1", np.expm1, lambda a: a.expm1(), [r(3)]),
    ("np_log", np.log, lambda a: a.log(), [r(3, **POS)]),
    ("np_log1p", np.log1p, lambda a: a.log1p(), [r(3, **POS)]),
    ("np_log2", np.log2, lambda a: a.log2(), [r(3, **POS)]),
    ("np_log10", np.log10, lambda a: a.log10(), [r(3, **POS)]),
    ("np_sqrt", np.sqrt, lambda a: a.sqrt(), [r(3, **POS)]),
    ("np_square", np.square, lambda a: a.square(), [r(3)]),
    ("np_abs", np.abs, lambda a: a.abs(), [r(3, **POS) * np.array([1, -1, 1])]),
    ("abs_builtin", abs, lambda a: a.abs(), [r(3, **POS) * np.array([-1, 1, -1])]),
    ("np_sin", np.sin, lambda a: a.sin(), [r(3)]),
    ("np_cos", np.cos, lambda a: a.cos(), [r(3)]),
    ("np_tan", np.tan, lambda a: a.tan(), [r(3)]),
    ("np_arctan", np.arctan, lambda a: a.arctan(), [r(3)]),
    ("np_arcsin", np.arcsin, lambda a: a.arcsin(), [r(3, lo=-0.8, hi=0.8)]),
    ("np_arccos", np.arccos, lambda a: a.arccos(), [r(3, lo=-0.8, hi=0.8)]),
    ("np_sinh", np.sinh, lambda a: a.sinh(), [r(3)]),
    ("np_cosh", np.cosh, lambda a: a.cosh(), [r(3)]),
    ("np_tanh", np.tanh, lambda a: a.tanh(), [r(3)]),
    ("np_arctanh", np.arctanh, lambda a: a.arctanh(), [r(3, lo=-0.8, hi=0.8)]),
    ("np_reciprocal", np.reciprocal, lambda a: a.reciprocal(), [r(3, **POS)]),
    ("np_maximum", np.maximum, lambda a, b: a.maximum(b), [r(3, 4), r(3, 4)]),
    ("np_minimum", np.minimum, lambda a, b: a.minimum(b), [r(3, 4), r(3, 4)]),
    ("maximum_const", lambda a: np.maximum(a, 0.1), lambda a: a.clamp(min=0.1), [r(6)]),
    ("np_where", lambda a, b: np.where(a > 0, a, b), None, [r(5), r(5)]),
    ("np_clip", lambda a: np.clip(a, -0.5, 0.5), lambda a: a.clamp(-0.5, 0.5), [r(8)]),
    ("method_clip", lambda a: a.clip(-0.3, 0.6), lambda a: a.clamp(-0.3, 0.6), [r(8)]),
    ("sum_all", lambda a: a.sum(), lambda a: a.sum(), [r(3, 4)]),
    ("np_sum_axis", lambda a: np.sum(a, axis=1), lambda a: a.sum(1), [r(3, 4)]),
    ("sum_keepdims", lambda a: a.sum(axis=0, keepdims=True), lambda a: a.sum(0, keepdim=True),
     [r(3, 4)]),
    ("sum_axes", lambda a: a.sum(axis=(0, 2)), lambda a: a.sum((0, 2)), [r(2, 3, 4)]),
    ("mean_all", lambda a: a.mean(), lambda a: a.mean(), [r(3, 4)]),
    ("np_mean_axis", lambda a: np.mean(a, axis=-1), lambda a: a.mean(-1), [r(3, 4)]),
    ("max_all", lambda a: a.max(), lambda a: a.max(), [r(3, 4)]),
    ("np_max_axis", lambda a: np.max(a, axis=1), lambda a: a.max(1).values, [r(3, 4)]),
    ("min_axis", lambda a: a.min(axis=0), lambda a: a.min(0).values, [r(3, 4)]),
    ("np_var", lambda a: np.var(a, axis=0), lambda a: a.var(0, unbiased=False), [r(5, 3)]),
    ("np_std_ddof", lambda a: np.std(a, ddof=1), lambda a: a.std(), [r(6)]),
    ("reshape", lambda a: a.reshape(4, 3), lambda a: a.reshape(4, 3), [r(3, 4)]),
    ("reshape_tuple", lambda a: a.reshape((2, -1)), lambda a: a.reshape(2, -1), [r(3, 4)]),
    ("np_reshape", lambda a: np.reshape(a, (12,)), lambda a: a.reshape(12), [r(3, 4)]),
    ("transpose_T", lambda a: a.T, lambda a: a.T, [r(3, 4)]),
    ("np_transpose_axes", lambda a: np.transpose(a, (2, 0, 1)), lambda a: a.permute(2, 0, 1),
     [r(2, 3, 4)]),
    ("method_transpose", lambda a: a.transpose(1, 0, 2), lambda a: a.permute(1, 0, 2),
     [r(2, 3, 4)]),
    ("swapaxes", lambda a: np.swapaxes(a, 0, 2), lambda a: a.transpose(0, 2), [r(2, 3, 4)]),
    ("expand_squeeze", lambda a: np.squeeze(np.expand_dims(a, 1), 1) * 2, lambda a: a * 2,
     [r(3, 4)]),
    ("broadcast_to", lambda a: np.broadcast_to(a, (3, 4)), lambda a: a.expand(3, 4), [r(1, 4)]),
    ("ravel", lambda a: np.ravel(a), lambda a: a.reshape(-1), [r(2, 3)]),
    ("flatten", lambda a: a.flatten(), lambda a: a.reshape(-1), [r(2, 3)]),
    ("getitem_basic", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [r(3, 5)]),
    ("getitem_int", lambda a: a[1], lambda a: a[1], [r(3, 5)]),
    ("getitem_fancy_repeated", lambda a: a[np.array([0, 2, 0])],
     lambda a: a[[0, 2, 0]], [r(3, 2)]),
    ("getitem_pairs", lambda a: a[np.arange(3), np.array([1, 0, 1])],
     lambda a: a[range(3), [1, 0, 1]], [r(3, 2)]),
    ("getitem_bool", lambda a: a[np.array([True, False, True])],
     lambda a: a[[True, False, True]], [r(3, 2)]),
    ("concatenate", lambda a, b: np.concatenate([a, b], axis=1),
     lambda a, b: T().cat([a, b], 1),
     [r(2, 3), r(2, 2)]),
    ("stack", lambda a, b: np.stack([a, b], axis=1),
     lambda a, b: T().stack([a, b], 1), [r(2, 3), r(2, 3)]),
    ("pad", lambda a: np.pad(a, ((1, 0), (2, 1))),
     lambda a: T().nn.functional.pad(a, (2, 1, 1, 0)), [r(2, 3)]),
    ("einsum", lambda a, b: np.einsum("ij,jk->ik", a, b), lambda a, b: a @ b,
     [r(2, 3), r(3, 4)]),
    ("einsum_reduce", lambda a, b: np.einsum("ij,ij->i", a, b), lambda a, b: (a * b).sum(1),
     [r(2, 3), r(2, 3)]),
    ("einsum_sum_operand", lambda a, b: np.einsum("ij,k->ik", a, b),
     lambda a, b: a.sum(1, keepdim=True) * b, [r(2, 3), r(4)]),
    ("astype_roundtrip", lambda a: a.astype(np.float64) * 2, lambda a: a * 2, [r(3)]),
    ("composite", lambda a, b: np.tanh(a @ b).sum(axis=1) / (1 + np.exp(-a[:, :1].T)),
     lambda a, b: (a @ b).tanh().sum(1) / (1 + (-a[:, :1].T).exp()), [r(3, 4), r(4, 2)]),
]


@pytest.mark.parametrize("name,fn,torch_fn,inputs", CASES, ids=[c[0] for c in CASES])
def test_primitive_against_fd_and_torch(name, fn, torch_fn, inputs, torch, backend):
    check_gradients(fn, *[x.copy() for x in inputs], torch_f=torch_fn, torch=torch,
                    backend=backend)


@pytest.mark.parametrize("name,fn,torch_fn,inputs", CASES, ids=[c[0] for c in CASES])
def test_primitive_outside_gradient_is_plain_numpy(name, fn, torch_fn, inputs):
    out = fn(*inputs)
    assert isinstance(out, (np.ndarray, np.generic))


def test_float32_stays_float32():
    x = r(4, 3).astype(np.float32)
    w = r(3, 2).astype(np.float32)
    val, (gx, gw) = withgradient(lambda x, w: np.tanh(x @ w).mean() * 2.5, x, w)
    assert val.dtype == np.float32
    assert gx.dtype == np.float32 and gw.dtype == np.float32


def test_mixed_dtype_gradient_cast_to_argument_dtype():
    x = r(3).astype(np.float32)
    (g,) = gradient(lambda x: (x * np.ones(3, dtype=np.float64)).sum(), x)
    assert g.dtype == np.float32


def test_gradient_accumulates_over_reuse():
    x = r(3)
    (g,) = gradient(lambda x: (x * x + x).sum(), x)
    np.testing.assert_allclose(g, 2 * x + 1, rtol=1e-12)


def test_control_flow_is_followed():
    x = r(4)

    def f(x):
        acc = x
        for i in range(3):
            acc = acc * x if i % 2 == 0 else acc + 1.0
        return acc.sum() if float(x.sum()) > -100 else (x * 0).sum()

    check_gradients(f, x)


def test_ties_in_max_share_gradient():
    x = np.array([1.0, 3.0, 3.0])
    (g,) = gradient(lambda x: x.max(), x)
    np.testing.assert_array_equal(g, [0.0, 0.5, 0.5])


def test_maximum_tie_goes_to_first_argument():
    a, b = np.array([1.0, 2.0]), np.array([1.0, 3.0])
    ga, gb = gradient(lambda a, b: np.maximum(a, b).sum(), a, b)
    np.testing.assert_array_equal(ga, [1.0, 0.0])
    np.testing.assert_array_equal(gb, [0.0, 1.0])


def test_comparisons_and_queries_give_plain_values():
    def f(x):
        mask = x > 0
        assert isinstance(mask, np.ndarray) and mask.dtype == bool
        assert np.isfinite(x).all()
        assert np.shape(x) == (4,) and np.ndim(x) == 1 and len(x) == 4
        assert int(np.argmax(x)) == int(np.argmax(x.data))
        return (x * mask).sum()

    x = np.array([-1.0, 2.0, 3.0, -4.0])
    (g,) = gradient(f, x)
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 0.0])
