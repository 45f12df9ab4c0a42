"""Where Kiln's optimisers differ from Optimisers.jl on purpose: one test per difference.

engine/README.md lists the differences with their reasons, each naming its test here; the
last test holds the list and this file together.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from kiln_engine.optimisers import (
    AccumGrad,
    Adam,
    AdamW,
    ClipGrad,
    ClipNorm,
    Descent,
    Leaf,
    Lion,
    OptimiserChain,
    Rprop,
    StateTree,
    adjust,
    setup,
    update,
)

README = Path(__file__).parents[2] / "engine" / "README.md"


def test_adjust_refuses_unknown_hyper_parameters():
    state = setup(Adam(0.1), {"w": np.ones(2)})
    with pytest.raises(ValueError, match=r"Adam has no hyper-parameter 'lr'; valid names are "
                                         r"\['eta', 'beta', 'epsilon'\]"):
        adjust(state, lr=0.01)
    assert state["w"].rule == Adam(0.1)


def test_bad_hyper_parameters_are_refused_at_construction():
    for make, message in [(lambda: Adam(beta=(0.9, 1.0)), "beta must be a pair of numbers in"),
                          (lambda: ClipNorm(1.0, 0.0), "p must be a number >= 1 or inf"),
                          (lambda: Descent(-0.1), "eta must be >= 0")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            make()


def test_lion_follows_its_paper():
    rng = np.random.default_rng(0)
    b1, b2, eta = 0.9, 0.99, 0.01
    x = np.zeros(50)
    state = setup(Lion(eta, (b1, b2)), x)
    paper, jl, xp, xj = np.zeros(50), np.zeros(50), np.zeros(50), np.zeros(50)
    for _ in range(5):
        g = rng.normal(size=50)
        update(state, x, g)
        xp -= eta * np.sign(b1 * paper + (1 - b1) * g)  # Chen et al., algorithm 2
        paper = b2 * paper + (1 - b2) * g
        jl = b2 * g + (1 - b2) * jl  # Optimisers.jl's rules.jl
        xj -= eta * np.sign((b2 - b1) * g + b1 * jl)
    np.testing.assert_array_equal(x, xp)
    assert not np.array_equal(x, xj)


def test_adam_evaluates_scalar_factors_first():
    """In float32, bit for bit ``eta/(1-b1^t) * m / (sqrt(v) * (1/sqrt(1-b2^t)) + eps)``;
    Optimisers.jl's ``m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) * eta`` rounds elsewhere."""
    rng = np.random.default_rng(1)
    t = np.float32
    eta, b1, b2, eps = t(0.01), t(0.9), t(0.999), t(1e-8)
    x = rng.normal(size=1000).astype(t)
    state = setup(Adam(0.01), x)
    m, v, bt1, bt2, differ = np.zeros_like(x), np.zeros_like(x), b1, b2, 0
    for _ in range(3):
        g = rng.normal(size=1000).astype(t)
        before = x.copy()
        update(state, x, g)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * (g * g)
        scalar_first = eta / (1 - bt1) * m / (np.sqrt(v) * (1 / np.sqrt(1 - bt2)) + eps)
        jl = m / (1 - bt1) / (np.sqrt(v / (1 - bt2)) + eps) * eta
        bt1, bt2 = bt1 * b1, bt2 * b2
        assert x.dtype == t
        np.testing.assert_array_equal(x, before - scalar_first)
        np.testing.assert_allclose(x, before - jl, rtol=1e-6, atol=1e-9)  # up to rounding
        differ += int((x != before - jl).sum())
    assert differ > 0


def test_adamw_float16_epsilon_is_floored():
    x = np.array([0.5, -0.25], np.float16)
    g = np.array([1e-4, -2e-4], np.float16)  # (1 - b2) g^2 underflows: v stays 0
    update(setup(AdamW(1e-3, epsilon=1e-8), x), x, g)
    assert np.isfinite(x).all() and (x != [0.5, -0.25]).all()
    m = np.float16(0.1) * g
    with np.errstate(divide="ignore"):  # Optimisers.jl's AdamW: epsilon = Float16(1e-8) = 0
        theirs = m / np.float16(0.1) / (np.sqrt(np.zeros(2, np.float16)) + np.float16(1e-8))
    assert not np.isfinite(theirs).any()


def test_update_changes_the_model_in_place():
    w = np.ones(3)
    model = {"w": w}
    _, returned = update(setup(Descent(0.5), model), model, {"w": np.ones(3)})
    assert returned is model and model["w"] is w
    np.testing.assert_array_equal(w, [0.5, 0.5, 0.5])


def test_a_leaf_shared_by_copies_advances_its_state_once():
    rule = OptimiserChain(AccumGrad(2), Adam(0.1))
    model = {"a": np.ones(2), "b": np.ones(2)}
    leaf = Leaf(rule, rule.init(model["a"]))
    state = StateTree("dict", {"a": leaf, "b": leaf})
    update(state, model, {"a": np.ones(2), "b": np.ones(2)})
    (_, count), (_, _, powers) = leaf.state
    assert count == 2 and powers == (0.9, 0.999)  # one update: one accumulation, no step
    update(state, model, {"a": np.ones(2), "b": np.ones(2)})
    (_, count), (_, _, powers) = leaf.state
    assert count == 1 and powers == (0.9 * 0.9, 0.999 * 0.999)  # two: one Adam step
    assert (model["a"] < 1).all()
    np.testing.assert_array_equal(model["a"], model["b"])


def test_any_view_of_a_parameter_shares_its_leaf():
    w = np.arange(12.0).reshape(3, 4)
    model = {"w": w, "rows": w[1:], "flat": w.reshape(-1)}
    state = setup(Descent(0.1), model)
    assert state["rows"] is state["w"] is state["flat"]
    update(state, model, {"w": None, "rows": np.ones((2, 4)), "flat": np.ones(12)})
    np.testing.assert_allclose(w, np.arange(12.0).reshape(3, 4) - 0.1 * np.array([[1], [2],
                                                                                   [2]]))


@pytest.mark.parametrize("rule", [ClipGrad(1.0), Rprop(), OptimiserChain(ClipGrad(1.0), Adam())],
                         ids=repr)
def test_clipgrad_and_rprop_refuse_complex_parameters_at_setup(rule):
    with pytest.raises(ValueError, match=r"setup: .* cannot step the complex parameter at "
                                         r"'layer.w' \(complex64\)"):
        setup(rule, {"layer": {"w": np.zeros(3, np.complex64)}})


def test_the_readme_lists_every_difference_with_its_test():
    rows = re.findall(r"^\| (.+?) \| (.+?) \| `(test_\w+)` \|$", README.read_text(), re.M)
    named = [test for _, _, test in rows]
    here = sorted(n for n in globals() if n.startswith("test_")
                  and n != "test_the_readme_lists_every_difference_with_its_test")
    assert sorted(named) == here, "engine/README.md's differences and this file disagree"
