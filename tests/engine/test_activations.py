"""Every activation in activations.ACTIVATIONS: value and gradient in float64 against
central finite differences and PyTorch, stability at large |x|, float32 kept float32."""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine import activations as A
from kiln_engine import gradient

from .gradcheck import check_gradients

# Points where an activation is not differentiable: finite differences must keep away.
KINKS = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 6.0])


def away_from_kinks(x: np.ndarray) -> np.ndarray:
    """Shift every value that lies within 0.01 of a kink by 0.05."""
    near = np.abs(x[..., None] - KINKS).min(axis=-1) < 0.01
    return np.where(near, x + 0.05, x)


def sample(*shape: int, seed: int = 0) -> np.ndarray:
    return away_from_kinks(np.random.default_rng(seed).uniform(-7.0, 8.0, size=shape))


# (id, kiln function, torch function of (torch, tensor)); a new activation is one line.
CASES = [
    ("identity", A.identity, lambda T, x: x),
    ("relu", A.relu, lambda T, x: T.relu(x)),
    ("leakyrelu", A.leakyrelu, lambda T, x: T.nn.functional.leaky_relu(x)),
    ("leakyrelu_a0.2", lambda x: A.leakyrelu(x, 0.2),
     lambda T, x: T.nn.functional.leaky_relu(x, 0.2)),
    ("relu6", A.relu6, lambda T, x: T.nn.functional.relu6(x)),
    ("elu", A.elu, lambda T, x: T.nn.functional.elu(x)),
    ("elu_alpha0.5", lambda x: A.elu(x, 0.5), lambda T, x: T.nn.functional.elu(x, 0.5)),
    ("gelu", A.gelu, lambda T, x: T.nn.functional.gelu(x, approximate="tanh")),
    ("swish", A.swish, lambda T, x: T.nn.functional.silu(x)),
    ("selu", A.selu, lambda T, x: T.nn.functional.selu(x)),
    ("celu", A.celu, lambda T, x: T.nn.functional.celu(x)),
    ("celu_alpha2", lambda x: A.celu(x, 2.0), lambda T, x: T.nn.functional.celu(x, 2.0)),
    ("softplus", A.softplus, lambda T, x: T.nn.functional.softplus(x)),
    ("softsign", A.softsign, lambda T, x: T.nn.functional.softsign(x)),
    ("sigmoid", A.sigmoid, lambda T, x: T.sigmoid(x)),
    ("hardsigmoid", A.hardsigmoid, lambda T, x: T.nn.functional.hardsigmoid(x)),
    ("tanh", A.tanh, lambda T, x: T.tanh(x)),
    ("hardtanh", A.hardtanh, lambda T, x: T.nn.functional.hardtanh(x)),
    ("logsigmoid", A.logsigmoid, lambda T, x: T.nn.functional.logsigmoid(x)),
    ("softmax", A.softmax, lambda T, x: T.softmax(x, -1)),
    ("softmax_axis0", lambda x: A.softmax(x, axis=0), lambda T, x: T.softmax(x, 0)),
    ("logsoftmax", A.logsoftmax, lambda T, x: T.log_softmax(x, -1)),
    ("logsoftmax_axis0", lambda x: A.logsoftmax(x, axis=0), lambda T, x: T.log_softmax(x, 0)),
]
IDS = [c[0] for c in CASES]


def test_every_activation_has_a_case():
    covered = {c[1] for c in CASES}
    missing = [name for name, f in A.ACTIVATIONS.items() if f not in covered]
    assert not missing, f"activations without a test case: {missing}"


@pytest.mark.parametrize(("name", "f", "tf"), CASES, ids=IDS)
def test_gradient_against_fd_and_torch(name, f, tf, torch, backend):
    check_gradients(f, sample(3, 7), torch_f=lambda x: tf(torch, x), torch=torch,
                    backend=backend)


# Large |x|, where naive formulas overflow (exp(1000)) or lose everything to rounding.
LARGE = np.array([[-1000.0, -100.0, -30.0, 30.0, 100.0, 1000.0]])


@pytest.mark.parametrize(("name", "f", "tf"), CASES, ids=IDS)
def test_large_inputs_match_torch(name, f, tf, torch):
    check_gradients(f, LARGE, torch_f=lambda x: tf(torch, x), torch=torch)


@pytest.mark.parametrize(("name", "f", "tf"), CASES, ids=IDS)
def test_tiny_inputs_keep_full_relative_precision(name, f, tf, torch):
    # Scale-relative checks cannot see cancellation near 0 (exp(x) - 1 for expm1(x)):
    # compare element by element (an exact zero must stay exactly zero).
    x = np.array([[-1e-9, -1e-6, -1e-3], [1e-9, 1e-6, 1e-3]])
    want = tf(torch, torch.tensor(x)).numpy()
    err = np.abs(f(x) - want)
    assert np.all(err <= 1e-12 * np.abs(want)), f"{name}: {f(x)} vs torch {want} near 0"


@pytest.mark.parametrize(
    ("f", "x", "expected"),
    [
        (A.sigmoid, [-1000.0, 1000.0], [0.0, 1.0]),
        (A.softplus, [-1000.0, 1000.0], [0.0, 1000.0]),
        (A.logsigmoid, [-1000.0, 1000.0], [-1000.0, 0.0]),
        (A.logsoftmax, [-1000.0, 1000.0], [-2000.0, 0.0]),
        (A.softmax, [-1000.0, 1000.0], [0.0, 1.0]),
    ],
    ids=["sigmoid", "softplus", "logsigmoid", "logsoftmax", "softmax"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_values_are_exact_and_raise_no_warnings(f, x, expected, dtype):
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = f(np.array(x, dtype=dtype))
    np.testing.assert_allclose(y, expected, rtol=1e-7, atol=0)


@pytest.mark.parametrize(("name", "f", "tf"), CASES, ids=IDS)
def test_float32_stays_float32(name, f, tf):
    x = sample(3, 7).astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = f(x)
        (g,) = gradient(lambda x: (f(x) * np.float32(0.5)).sum(), x)
    assert y.dtype == np.float32, f"{name} gave {y.dtype}"
    assert g.dtype == np.float32, f"{name}'s gradient is {g.dtype}"
    assert np.isfinite(g).all()
