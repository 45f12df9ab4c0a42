"""Trajectories equal torch.optim's over 100 steps, where the formulas coincide.

Both sides minimise the same robust regression loss in float64 from the same start; Kiln
is given the gradient written out in numpy, torch computes it by autograd. Every step's
parameters must agree. Rates are small enough that the runs stay clear of the oscillating
regime near the optimum, where RMSProp amplifies round-off differences chaotically.
"""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine.optimisers import (
    Adam,
    AdamW,
    ClipGrad,
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
