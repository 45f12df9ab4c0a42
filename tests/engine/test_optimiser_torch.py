"""Trajectories equal torch.optim's over 100 steps, where the formulas coincide.

Both sides minimise the same robust regression loss in float64 from the same start; Kiln
is given the gradient written out in numpy, torch computes it by autograd. Every step's
parameters must agree. Rates are small enough that the runs stay clear of the oscillating
regime near the optimum, where RMSProp amplifies round-off differences chaotically.

Complex parameters: torch.optim steps a complex entry as two real ones (``view_as_real``).
Where a rule is linear in the gradient that is the same thing; where it squares the
gradient, Kiln takes the squared modulus (Optimisers.jl), so its complex step differs from
torch's, and Kiln's rule on the real view of the parameter is torch's.
"""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine.optimisers import (
    AdaDelta,
    AdaGrad,
    Adam,
    AdamW,
    ClipGrad,
    ClipNorm,
    Descent,
    Momentum,
    Nesterov,
    OptimiserChain,
    RMSProp,
    Rprop,
    setup,
    update,
)

# (Kiln rule, torch optimiser factory, clip value applied with clip_grad_value_ or None)
CASES = [
    (Descent(0.01), lambda t, p: t.optim.SGD(p, lr=0.01), None),
    (Momentum(0.01, 0.9), lambda t, p: t.optim.SGD(p, lr=0.01, momentum=0.9), None),
    (Nesterov(0.01, 0.9), lambda t, p: t.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
     None),
    (Adam(0.01, (0.9, 0.99), 1e-8), lambda t, p: t.optim.Adam(p, lr=0.01, betas=(0.9, 0.99)),
     None),
    (AdamW(0.01, (0.9, 0.99), 0.05), lambda t, p: t.optim.AdamW(p, lr=0.01, betas=(0.9, 0.99),
                                                                weight_decay=0.05), None),
    (RMSProp(0.002, 0.9), lambda t, p: t.optim.RMSprop(p, lr=0.002, alpha=0.9, eps=1e-8), None),
    (RMSProp(0.002, 0.9, centred=True),
     lambda t, p: t.optim.RMSprop(p, lr=0.002, alpha=0.9, eps=1e-8, centered=True), None),
    (Rprop(0.01), lambda t, p: t.optim.Rprop(p, lr=0.01), None),
    (OptimiserChain(ClipGrad(0.5), Descent(0.01)), lambda t, p: t.optim.SGD(p, lr=0.01), 0.5),
]


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5))
    y = x @ rng.normal(size=(5, 3)) + rng.normal(size=(32, 3))
    return x, y, rng.normal(size=(5, 3)), rng.normal(size=3)


def _numpy_grad(x, y, w, b):
    """Gradient of sum(log(1 + r^2)), r = x @ w + b - y, written out."""
    r = x @ w + b - y
    d = 2 * r / (1 + r * r)
    return x.T @ d, d.sum(axis=0)


@pytest.mark.parametrize("rule, make, clip", CASES, ids=[repr(c[0]) for c in CASES])
def test_trajectory_equals_torch(torch, rule, make, clip):
    x, y, w0, b0 = _data()
    model = {"w": w0.copy(), "b": b0.copy()}
    state = setup(rule, model)
    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    opt = make(torch, [tw, tb])
    tx, ty = torch.tensor(x), torch.tensor(y)
    for step in range(100):
        gw, gb = _numpy_grad(x, y, model["w"], model["b"])
        update(state, model, {"w": gw, "b": gb})
        opt.zero_grad()
        r = tx @ tw + tb - ty
        torch.log1p(r * r).sum().backward()
        if clip is not None:
            torch.nn.utils.clip_grad_value_([tw, tb], clip)
        opt.step()
        np.testing.assert_allclose(model["w"], tw.detach().numpy(), rtol=1e-9, atol=1e-9,
                                   err_msg=f"step {step}")
        np.testing.assert_allclose(model["b"], tb.detach().numpy(), rtol=1e-9, atol=1e-9,
                                   err_msg=f"step {step}")
    assert not np.allclose(model["w"], w0)


def _complex_data():
    rng = np.random.default_rng(1)

    def c(*shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)
    x = c(32, 5)
    return x, x @ c(5, 3) + c(32, 3), c(5, 3)


def _complex_grad(x, y, w):
    """Gradient (d/dRe + i d/dIm) of sum(log(1 + |r|^2)), r = x @ w - y, written out."""
    r = x @ w - y
    return 2 * x.conj().T @ (r / (1 + np.abs(r) ** 2))


def test_the_complex_gradient_is_the_central_difference():
    x, y, w = _complex_data()

    def loss(w):
        return np.log1p(np.abs(x @ w - y) ** 2).sum()

    h, fd = 1e-6, np.zeros_like(w)
    for i in np.ndindex(w.shape):
        for unit in (1, 1j):
            e = np.zeros_like(w)
            e[i] = h * unit
            fd[i] += unit * (loss(w + e) - loss(w - e)) / (2 * h)
    np.testing.assert_allclose(_complex_grad(x, y, w), fd, rtol=1e-7, atol=1e-9)


def _torch_complex_run(torch, make, steps=60):
    x, y, w0 = _complex_data()
    tw = torch.tensor(w0, requires_grad=True)
    opt = make(torch, [tw])
    tx, ty = torch.tensor(x), torch.tensor(y)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        torch.log1p((tx @ tw - ty).abs() ** 2).sum().backward()
        opt.step()
        out.append(tw.detach().numpy().copy())
    return out


def _kiln_complex_run(rule, real_view=False, steps=60):
    x, y, w0 = _complex_data()
    w = w0.copy()
    param = w.view(np.float64) if real_view else w  # the same memory, as float64 pairs
    state = setup(rule, {"w": param})
    out = []
    for _ in range(steps):
        g = _complex_grad(x, y, w)
        update(state, {"w": param}, {"w": g.view(np.float64) if real_view else g})
        out.append(w.copy())
    return out


# Rules linear in the gradient: Kiln's complex step is torch's.
LINEAR = [
    (Descent(0.01), lambda t, p: t.optim.SGD(p, lr=0.01)),
    (Momentum(0.01, 0.9), lambda t, p: t.optim.SGD(p, lr=0.01, momentum=0.9)),
    (Nesterov(0.01, 0.9), lambda t, p: t.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
]


@pytest.mark.parametrize("rule, make", LINEAR, ids=[repr(c[0]) for c in LINEAR])
def test_complex_trajectory_equals_torch_for_linear_rules(torch, rule, make):
    for step, (mine, theirs) in enumerate(zip(_kiln_complex_run(rule),
                                              _torch_complex_run(torch, make))):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-9, err_msg=f"step {step}")


# Rules that square the gradient: torch's complex step is Kiln's on the real view, and
# Kiln's complex step (|g|^2, one second moment per entry) differs from it.
SQUARING = [
    (Adam(0.01, (0.9, 0.99)), lambda t, p: t.optim.Adam(p, lr=0.01, betas=(0.9, 0.99))),
    (AdamW(0.01, (0.9, 0.99), 0.05),
     lambda t, p: t.optim.AdamW(p, lr=0.01, betas=(0.9, 0.99), weight_decay=0.05)),
    (RMSProp(0.002, 0.9), lambda t, p: t.optim.RMSprop(p, lr=0.002, alpha=0.9, eps=1e-8)),
    (RMSProp(0.002, 0.9, centred=True),
     lambda t, p: t.optim.RMSprop(p, lr=0.002, alpha=0.9, eps=1e-8, centered=True)),
    (AdaGrad(0.05, 1e-8),
     lambda t, p: t.optim.Adagrad(p, lr=0.05, eps=1e-8, initial_accumulator_value=1e-8)),
    (AdaDelta(0.9, 1e-6), lambda t, p: t.optim.Adadelta(p, lr=1.0, rho=0.9, eps=1e-6)),
    (OptimiserChain(ClipNorm(1.0), Adam(0.01)),
     lambda t, p: _clipped(t, t.optim.Adam(p, lr=0.01), p, 1.0)),
]


def _clipped(torch, opt, params, omega):
    """torch's optimiser stepping after clip_grad_norm_ (one array: Kiln's ClipNorm)."""
    step = opt.step

    def clipped_step():
        torch.nn.utils.clip_grad_norm_(params, omega)
        step()
    opt.step = clipped_step
    return opt


@pytest.mark.parametrize("rule, make", SQUARING, ids=[repr(c[0]) for c in SQUARING])
def test_complex_torch_is_kiln_on_the_real_view(torch, rule, make):
    theirs = _torch_complex_run(torch, make)
    for step, (mine, t) in enumerate(zip(_kiln_complex_run(rule, real_view=True), theirs)):
        # AdaGrad's round-off (torch: lr * (g / den); Kiln: g * lr / den) grows to 4e-9
        np.testing.assert_allclose(mine, t, rtol=1e-8, atol=1e-8, err_msg=f"step {step}")
    assert not np.allclose(_kiln_complex_run(rule)[-1], theirs[-1], rtol=1e-3)
