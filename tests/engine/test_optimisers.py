"""Every optimisation rule, driven by one RULES table.

Each row: the rule, its float64 reference formula (tests/engine/optimiser_refs.py), a rule
for the convergence test and a hyper-parameter to adjust mid-run. Every shared test runs
over every row, so a new rule is one line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from kiln_engine.optimisers import (
    AccumGrad,
    AdaBelief,
    AdaDelta,
    AdaGrad,
    Adam,
    AdaMax,
    AdamW,
    AMSGrad,
    ClipGrad,
    ClipNorm,
    Descent,
    Lion,
    Momentum,
    NAdam,
    Nesterov,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    SignDecay,
    WeightDecay,
    adjust,
    export_state,
    freeze,
    restore_state,
    setup,
    thaw,
    update,
)

from tests.engine import optimiser_refs as R

# (rule, reference, rule that should fit the least-squares problem, (hyper, new value))
RULES = [
    (Descent(0.05), R.ref_descent, Descent(0.05), ("eta", 0.01)),
    (Momentum(0.02, 0.8), R.ref_momentum, Momentum(0.01, 0.9), ("eta", 0.005)),
    (Nesterov(0.02, 0.85), R.ref_nesterov, Nesterov(0.01, 0.9), ("eta", 0.003)),
    (Rprop(0.01), R.ref_rprop, Rprop(0.01), ("ell", (0.4, 1.5))),
    (RMSProp(0.01, 0.8), R.ref_rmsprop, RMSProp(0.01), ("eta", 0.001)),
    (RMSProp(0.01, 0.8, centred=True), R.ref_rmsprop, RMSProp(0.01, centred=True),
     ("epsilon", 1e-3)),
    (Adam(0.01, (0.8, 0.9)), R.ref_adam, Adam(0.05), ("eta", 0.002)),
    (AdamW(0.01, (0.8, 0.9), 0.1), R.ref_adamw, AdamW(0.05), ("lambda_", 0.3)),
    (AdamW(0.01, (0.8, 0.9), 0.1, couple=False), R.ref_adamw, AdamW(0.05, couple=False),
     ("eta", 0.02)),
    (RAdam(0.01, (0.8, 0.9)), R.ref_radam, RAdam(0.05), ("eta", 0.002)),
    (AdaMax(0.01, (0.8, 0.9)), R.ref_adamax, AdaMax(0.05), ("eta", 0.002)),
    (OAdam(0.01, (0.6, 0.9)), R.ref_oadam, OAdam(0.05), ("eta", 0.002)),
    (AdaGrad(0.1), R.ref_adagrad, AdaGrad(0.5), ("eta", 0.01)),
    (AdaDelta(0.8), R.ref_adadelta, AdaDelta(0.9, 1e-4), ("rho", 0.5)),
    (AMSGrad(0.01, (0.8, 0.9)), R.ref_amsgrad, AMSGrad(0.05), ("eta", 0.002)),
    (NAdam(0.01, (0.8, 0.9)), R.ref_nadam, NAdam(0.05), ("eta", 0.002)),
    (AdaBelief(0.01, (0.8, 0.9), 1e-8), R.ref_adabelief, AdaBelief(0.05), ("eta", 0.002)),
    (Lion(0.01, (0.8, 0.95)), R.ref_lion, Lion(0.01, (0.9, 0.99)), ("eta", 0.002)),
    (WeightDecay(0.1), R.ref_weightdecay, OptimiserChain(WeightDecay(1e-3), Descent(0.05)),
     ("lambda_", 0.5)),
    (SignDecay(0.1), R.ref_signdecay, OptimiserChain(SignDecay(1e-4), Descent(0.05)),
     ("lambda_", 0.5)),
    (ClipGrad(0.3), R.ref_clipgrad, OptimiserChain(ClipGrad(1.0), Descent(0.05)),
     ("delta", 0.1)),
    (ClipNorm(0.5), R.ref_clipnorm, OptimiserChain(ClipNorm(5.0), Descent(0.05)),
     ("omega", 0.2)),
    (ClipNorm(0.5, 1.0), R.ref_clipnorm, OptimiserChain(ClipNorm(5.0, 1.0), Descent(0.05)),
     ("p", 3.0)),
    (ClipNorm(0.5, math.inf), R.ref_clipnorm, OptimiserChain(ClipNorm(5.0, math.inf),
                                                             Descent(0.05)), ("omega", 0.2)),
    (AccumGrad(3), R.ref_accumgrad, OptimiserChain(AccumGrad(2), Descent(0.1)), ("n", 2)),
    (OptimiserChain(ClipGrad(0.5), WeightDecay(0.01), Adam(0.01)),
     R.ref_chain(R.ref_clipgrad, R.ref_weightdecay, R.ref_adam), Adam(0.05), ("eta", 0.002)),
    (OptimiserChain(AccumGrad(2), Momentum(0.02)), R.ref_chain(R.ref_accumgrad, R.ref_momentum),
     Momentum(), ("rho", 0.5)),
]
IDS = [repr(r[0]) for r in RULES]


def _problem(dtype=np.float64, seed=0):
    """A model of two arrays (a matrix and a vector) and a stream of gradients for it."""
    rng = np.random.default_rng(seed)
    model = {"w": rng.normal(size=(3, 4)).astype(dtype), "b": rng.normal(size=5).astype(dtype)}
    grads = [{k: rng.normal(size=v.shape).astype(dtype) for k, v in model.items()}
             for _ in range(12)]
    return model, grads


def _run_ref(rule, ref, model, grads, knob_at=None, knob=None):
    """The reference trajectory of every array, one stepper per array."""
    xs = {k: v.astype(np.float64).copy() for k, v in model.items()}
    steppers = {k: ref(rule) for k in xs}
    out = []
    for i, g in enumerate(grads):
        if i == knob_at:
            rule = _adjusted(rule, knob)
        for k in xs:
            s = steppers[k](rule, xs[k].copy(), g[k].astype(np.float64))
            if s is not None:
                xs[k] = xs[k] - s
        out.append({k: v.copy() for k, v in xs.items()})
    return out


def _adjusted(rule, knob):
    import dataclasses
    name, value = knob
    if isinstance(rule, OptimiserChain):
        return OptimiserChain(*(dataclasses.replace(r, **{name: value})
                                if name in r.hypernames() else r for r in rule.rules))
    return dataclasses.replace(rule, **{name: value})


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_rule_follows_its_formula(rule, ref, fit, knob):
    model, grads = _problem()
    expected = _run_ref(rule, ref, model, grads)
    state = setup(rule, model)
    for g, want in zip(grads, expected):
        update(state, model, g)
        for k in model:
            np.testing.assert_allclose(model[k], want[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_rule_converges_on_least_squares(rule, ref, fit, knob):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20, 5))
    target = rng.normal(size=5)
    b = a @ target
    model = {"x": np.zeros(5)}
    state = setup(fit, model)

    def loss(x):
        return 0.5 * np.mean((a @ x - b) ** 2)

    start = loss(model["x"])
    for _ in range(400):
        update(state, model, {"x": a.T @ (a @ model["x"] - b) / len(b)})
    assert loss(model["x"]) < 0.05 * start


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_float32_stays_float32(rule, ref, fit, knob):
    model, grads = _problem(np.float32)
    expected = _run_ref(rule, ref, model, grads[:4])
    state = setup(rule, model)
    for g in grads[:4]:
        update(state, model, g)
    for k in model:
        assert model[k].dtype == np.float32
        np.testing.assert_allclose(model[k], expected[-1][k], rtol=2e-4, atol=2e-5)
    arrays, meta = export_state(state)
    text = json.dumps(meta)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert '"float64"' not in text and '"dtype": "float"' not in text


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_state_round_trips_through_arrays_and_json(rule, ref, fit, knob):
    model, grads = _problem(np.float32)
    state = setup(rule, model)
    for g in grads[:5]:
        update(state, model, g)
    arrays, meta = export_state(state)
    twin = {k: v.copy() for k, v in model.items()}
    restored = restore_state({k: v.copy() for k, v in arrays.items()},
                             json.loads(json.dumps(meta)), model=twin)
    assert repr(restored) == repr(state)
    for g in grads[5:]:
        update(state, model, g)
        update(restored, twin, g)
    for k in model:
        np.testing.assert_array_equal(model[k], twin[k])


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_adjust_mid_run_keeps_the_state(rule, ref, fit, knob):
    model, grads = _problem()
    expected = _run_ref(rule, ref, model, grads, knob_at=6, knob=knob)
    state = setup(rule, model)
    for i, g in enumerate(grads):
        if i == 6:
            adjust(state, **{knob[0]: knob[1]})
        update(state, model, g)
    for k in model:
        np.testing.assert_allclose(model[k], expected[-1][k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_freezing_a_subtree_keeps_its_weights_bit_identical(rule, ref, fit, knob):
    rng = np.random.default_rng(2)
    model = {"enc": {"w": rng.normal(size=(4, 3))}, "dec": {"w": rng.normal(size=(2, 4))}}
    enc0, dec0 = model["enc"]["w"].copy(), model["dec"]["w"].copy()
    state = setup(rule, model)
    freeze(state.enc)
    for _ in range(6):
        update(state, model, {"enc": {"w": rng.normal(size=(4, 3))},
                              "dec": {"w": rng.normal(size=(2, 4))}})
    np.testing.assert_array_equal(model["enc"]["w"], enc0)
    assert not np.array_equal(model["dec"]["w"], dec0)
    thaw(state)
    for _ in range(6):
        update(state, model, {"enc": {"w": rng.normal(size=(4, 3))}, "dec": None})
    assert not np.array_equal(model["enc"]["w"], enc0)


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_tied_weights_step_once_with_summed_gradients(rule, ref, fit, knob):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 3))
    model = {"enc": w, "dec": (w, rng.normal(size=3))}
    state = setup(rule, model)
    assert state["enc"] is state["dec.0"]
    ref_model = {"w": w.copy()}
    ref_state = setup(rule, ref_model)
    for _ in range(5):
        g1, g2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
        update(state, model, {"enc": g1, "dec": (g2, rng.normal(size=3))})
        update(ref_state, ref_model, {"w": g1 + g2})
    assert model["dec"][0] is w
    np.testing.assert_allclose(w, ref_model["w"], rtol=1e-12, atol=1e-14)
