"""Every optimisation rule, driven by one RULES table.

Each row: the rule, its float64 reference formula (tests/engine/optimiser_refs.py), a rule
for the convergence test and a hyper-parameter to adjust mid-run. Every shared test runs
over every row, so a new rule is one line. Real and complex parameters both: a rule that
cannot step complex ones (ClipGrad, Rprop) must say so at setup, naming the path.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise

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
DTYPES = [np.float64, np.complex128]


def _normal(rng, shape, dtype):
    out = rng.normal(size=shape)
    if np.dtype(dtype).kind == "c":
        out = out + 1j * rng.normal(size=shape)
    return out.astype(dtype)


def _problem(dtype=np.float64, seed=0):
    """A model of two arrays (a matrix and a vector) and a stream of gradients for it."""
    rng = np.random.default_rng(seed)
    model = {"w": _normal(rng, (3, 4), dtype), "b": _normal(rng, 5, dtype)}
    grads = [{k: _normal(rng, v.shape, dtype) for k, v in model.items()} for _ in range(12)]
    return model, grads


def _refused(rule, model):
    """For a rule that cannot step complex arrays: setup says so, naming the path."""
    with pytest.raises(ValueError, match=r"cannot step the complex parameter at '(w|x)' "
                                         r"\(complex.*\): .*(signs|ordered entries)"):
        setup(rule, model)


def _wide(dtype):
    """The reference's dtype: float64, or complex128 for complex arrays."""
    return np.result_type(dtype, np.float64)


def _run_ref(rule, ref, model, grads, knob_at=None, knob=None):
    """The reference trajectory of every array, one stepper per array."""
    xs = {k: v.astype(_wide(v.dtype)) for k, v in model.items()}
    steppers = {k: ref(rule) for k in xs}
    out = []
    for i, g in enumerate(grads):
        if i == knob_at:
            rule = _adjusted(rule, knob)
        for k in xs:
            s = steppers[k](rule, xs[k].copy(), g[k].astype(xs[k].dtype))
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


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "complex128"])
@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_rule_follows_its_formula(rule, ref, fit, knob, dtype):
    model, grads = _problem(dtype)
    if dtype == np.complex128 and rule.refuses_complex():
        return _refused(rule, model)
    expected = _run_ref(rule, ref, model, grads)
    state = setup(rule, model)
    for g, want in zip(grads, expected):
        update(state, model, g)
        for k in model:
            np.testing.assert_allclose(model[k], want[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "complex128"])
@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_rule_converges_on_least_squares(rule, ref, fit, knob, dtype):
    rng = np.random.default_rng(1)
    a = _normal(rng, (20, 5), dtype)
    b = a @ _normal(rng, 5, dtype)
    model = {"x": np.zeros(5, dtype)}
    if dtype == np.complex128 and fit.refuses_complex():
        return _refused(fit, model)
    state = setup(fit, model)

    def loss(x):
        return 0.5 * np.mean(np.abs(a @ x - b) ** 2)

    start = loss(model["x"])
    for _ in range(400):  # the gradient of a real loss in a complex x: d/dRe + i d/dIm
        update(state, model, {"x": a.conj().T @ (a @ model["x"] - b) / len(b)})
    assert loss(model["x"]) < 0.05 * start


def _complex_fit():
    """Optimisers.jl's test of Flux issue 1776: w * x ~ conj(x), x = 1 + i, from w = 0."""
    x = np.array([1 + 1j])

    def loss(w):
        return float(np.sum(np.abs(w * x - np.conj(x)) ** 2))

    def grad(w):
        return 2 * np.conj(x) * (w * x - np.conj(x))
    return loss, grad


def test_the_complex_fit_gradient_is_the_central_difference():
    loss, grad = _complex_fit()
    w, h = np.array([0.3 - 0.2j]), 1e-6
    fd = ((loss(w + h) - loss(w - h)) + 1j * (loss(w + 1j * h) - loss(w - 1j * h))) / (2 * h)
    np.testing.assert_allclose(grad(w), [fd], rtol=1e-8)


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_complex_loss_never_rises(rule, ref, fit, knob):
    loss, grad = _complex_fit()
    model = {"w": np.zeros(1, np.complex128)}
    if fit.refuses_complex():
        return _refused(fit, model)
    state = setup(fit, model)
    losses = [loss(model["w"])]
    for _ in range(10):
        update(state, model, {"w": grad(model["w"])})
        losses.append(loss(model["w"]))
    # it falls at every step until it first comes near the optimum (momentum overshoots)
    near = next((i for i, v in enumerate(losses) if v < 0.05 * losses[0]), len(losses))
    assert all(b <= a * (1 + 1e-12) for a, b in pairwise(losses[:near + 1])), losses
    assert losses[-1] < 0.95 * losses[0]


@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=["float32", "complex64"])
@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_float32_stays_float32(rule, ref, fit, knob, dtype):
    model, grads = _problem(dtype)
    if dtype == np.complex64 and rule.refuses_complex():
        return _refused(rule, model)
    expected = _run_ref(rule, ref, model, grads[:4])
    state = setup(rule, model)
    for g in grads[:4]:
        update(state, model, g)
    for k in model:
        assert model[k].dtype == dtype
        np.testing.assert_allclose(model[k], expected[-1][k], rtol=2e-4, atol=2e-5)
    arrays, meta = export_state(state)
    text = json.dumps(meta)  # running powers of beta: float32 scalars, even for complex64
    assert all(a.dtype == dtype for a in arrays.values())
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


# Rules whose float16 step must be Optimisers.jl's, op for op (optimiser_refs.jl_*).
HALF = [
    (RMSProp(0.01, 0.8), R.jl_rmsprop),
    (RMSProp(0.01, 0.8, centred=True), R.jl_rmsprop),
    (Adam(1e-4), R.jl_adam),
    (Adam(0.01, (0.8, 0.9)), R.jl_adam),
    (AdamW(1e-3, (0.8, 0.9), 0.1), R.jl_adamw),
    (AdamW(1e-3, (0.8, 0.9), 0.1, couple=False), R.jl_adamw),
    (RAdam(1e-3, (0.8, 0.9)), R.jl_radam),
    (AdaMax(1e-3, (0.8, 0.9)), R.jl_adamax),
    (OAdam(1e-3, (0.6, 0.9)), R.jl_oadam),
    (AdaGrad(0.01), R.jl_adagrad),
    (AdaDelta(0.8), R.jl_adadelta),
    (AMSGrad(1e-3, (0.8, 0.9)), R.jl_amsgrad),
    (NAdam(1e-3, (0.8, 0.9)), R.jl_nadam),
    (AdaBelief(1e-3, (0.8, 0.9), 1e-8), R.jl_adabelief),
]


@pytest.mark.parametrize("rule, ref", HALF, ids=[repr(r[0]) for r in HALF])
def test_float16_steps_as_optimisers_jl(rule, ref):
    """Bit for bit in float16, on gradients from 1e-5 (whose squares underflow) to 1."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=64).astype(np.float16)
    mine, theirs, stepper = x.copy(), x.copy(), ref(rule)
    state = setup(rule, mine)
    for _ in range(8):
        g = (rng.normal(size=64) * 10.0 ** rng.uniform(-5, 0, size=64)).astype(np.float16)
        update(state, mine, g)
        theirs = theirs - stepper(rule, theirs, g)
        assert theirs.dtype == np.float16
        np.testing.assert_array_equal(mine, theirs)


def test_adam_float16_keeps_the_step_of_a_small_entry():
    """Optimisers.jl's issue 167: with its float16 epsilon, the second entry still moves."""
    x = np.array([0.579, -0.729, 0.5493], np.float16)
    dx = np.array([-0.001497, 0.0001875, -0.013176], np.float16)
    update(setup(Adam(1e-4), x), x, dx)
    np.testing.assert_allclose(x, np.array([1.835, -0.886, 0.5493], np.float16), rtol=1e-3)
