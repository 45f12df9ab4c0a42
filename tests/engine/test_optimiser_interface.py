"""The optimiser interface: construction, setup, update, adjust/freeze/thaw, specs, state."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
from kiln_engine import Chain, Dense, Layer, PathError, SpecError, gradient, losses, relu
from kiln_engine.optimisers import (
    RULES,
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
    Leaf,
    LeafInfo,
    Lion,
    Momentum,
    NAdam,
    Nesterov,
    NonFiniteError,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    SignDecay,
    StateTree,
    WeightDecay,
    adjust,
    describe_state,
    destructure,
    export_state,
    freeze,
    restore_state,
    rule_from_spec,
    rule_to_spec,
    setup,
    thaw,
    trainables,
    update,
)

# Optimisers.jl's defaults (src/rules.jl), written out.
DEFAULTS = [
    (Descent, {"eta": 0.1}),
    (Momentum, {"eta": 0.01, "rho": 0.9}),
    (Nesterov, {"eta": 0.001, "rho": 0.9}),
    (Rprop, {"eta": 1e-3, "ell": (0.5, 1.2), "gamma": (1e-6, 50.0)}),
    (RMSProp, {"eta": 0.001, "rho": 0.9, "epsilon": 1e-8, "centred": False}),
    (Adam, {"eta": 0.001, "beta": (0.9, 0.999), "epsilon": 1e-8}),
    (AdamW, {"eta": 0.001, "beta": (0.9, 0.999), "lambda_": 0.0, "epsilon": 1e-8,
             "couple": True}),
    (RAdam, {"eta": 0.001, "beta": (0.9, 0.999), "epsilon": 1e-8}),
    (AdaMax, {"eta": 0.001, "beta": (0.9, 0.999), "epsilon": 1e-8}),
    (OAdam, {"eta": 0.001, "beta": (0.5, 0.9), "epsilon": 1e-8}),
    (AdaGrad, {"eta": 0.1, "epsilon": 1e-8}),
    (AdaDelta, {"rho": 0.9, "epsilon": 1e-8}),
    (AMSGrad, {"eta": 0.001, "beta": (0.9, 0.999), "epsilon": 1e-8}),
    (NAdam, {"eta": 0.001, "beta": (0.9, 0.999), "epsilon": 1e-8}),
    (AdaBelief, {"eta": 0.001, "beta": (0.9, 0.999), "epsilon": 1e-16}),
    (Lion, {"eta": 0.001, "beta": (0.9, 0.999)}),
    (WeightDecay, {"lambda_": 5e-4}),
    (SignDecay, {"lambda_": 1e-3}),
    (ClipGrad, {"delta": 10.0}),
    (ClipNorm, {"omega": 10.0, "p": 2.0, "throw": True}),
]


@pytest.mark.parametrize("cls, defaults", DEFAULTS, ids=lambda v: getattr(v, "__name__", ""))
def test_defaults_and_construction_follow_optimisers_jl(cls, defaults):
    assert cls().hyperparameters() == defaults
    positional = [v for k, v in defaults.items() if k not in ("centred", "couple", "throw")]
    assert cls(*positional) == cls(**defaults) == cls()


BAD = [
    (lambda: Adam(-0.1), "Adam: eta must be >= 0"),
    (lambda: Adam(beta=(0.9, 1.0)), "Adam: beta must be a pair of numbers in [0, 1)"),
    (lambda: Adam(beta=0.9), "Adam: beta must be a pair of numbers"),
    (lambda: Momentum(rho=1.5), "Momentum: rho must be in [0, 1)"),
    (lambda: Rprop(ell=(1.2, 0.5)), "Rprop: ell must be (decrease, increase)"),
    (lambda: Rprop(gamma=(2.0, 1.0)), "Rprop: gamma must be (smallest, largest)"),
    (lambda: ClipGrad(0), "ClipGrad: delta must be > 0"),
    (lambda: ClipNorm(1.0, 0.5), "ClipNorm: p must be a number >= 1 or inf"),
    (lambda: AccumGrad(0), "AccumGrad: n must be an integer >= 1"),
    (lambda: RMSProp(centred=1), "RMSProp: centred must be true or false"),
    (lambda: Descent(float("nan")), "Descent: eta must be a number"),
    (lambda: Descent("0.1"), "Descent: eta must be a number"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_invalid_hyperparameters_raise_at_construction(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_unknown_keyword_and_non_rule_chain_members_are_refused():
    with pytest.raises(TypeError, match="lr"):
        Adam(lr=0.1)
    with pytest.raises(TypeError, match="member 1 must be a rule"):
        OptimiserChain(Adam(), "sgd")


class Stats(Layer):
    """A layer with a running statistic that is state, not a parameter."""

    nontrainable = frozenset({"mean"})

    def __init__(self):
        self.scale = np.ones(3)
        self.mean = np.zeros(3)
        self.count = np.zeros(3, dtype=np.int64)

    def __call__(self, x):
        return x * self.scale


def test_setup_mirrors_the_model_and_skips_state_and_integers():
    model = Chain(enc=Dense(2, 3, relu), norm=Stats(), dec=Dense(3, 1))
    state = setup(Adam(), model)
    assert isinstance(state.layers.enc.weight, Leaf)
    assert state["layers.enc.weight"] is state.layers.enc.weight
    assert state.layers.norm.keys() == ["scale"]
    assert state.layers["dec"] is state["layers.dec"]
    with pytest.raises(PathError, match=re.escape("did you mean 'layers.enc'")):
        state["layers.encc"]
    with pytest.raises(AttributeError, match=r"has no child 'bias'.*\['scale'\]"):
        _ = state.layers.norm.bias
    positional = setup(Descent(), Chain(Dense(2, 2), Dense(2, 2)))
    assert positional.layers[1].bias is positional["layers.1.bias"]
    assert isinstance(setup(Descent(), np.zeros(3)), Leaf)


def test_update_follows_gradient_trees_from_gradient():
    rng = np.random.default_rng(0)
    model = Chain(Dense(4, 8, relu), Dense(8, 3))
    x, y = rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    state = setup(Adam(0.01), model)

    def loss(m):
        return losses.logitcrossentropy(m(x), y)

    start = float(loss(model))
    for _ in range(50):
        update(state, model, gradient(loss, model)[0])
    assert float(loss(model)) < 0.5 * start


def test_none_gradient_skips_the_leaf_and_keeps_its_state():
    model = {"a": np.ones(3), "b": np.ones(2)}
    state = setup(Adam(0.1), model)
    update(state, model, {"a": np.ones(3), "b": None})
    m_b, v_b, powers_b = state.b.state
    assert np.array_equal(model["b"], np.ones(2))
    assert not m_b.any() and not v_b.any() and powers_b == (0.9, 0.999)
    assert state.a.state[2] == (0.9 * 0.9, 0.999 * 0.999)
    update(state, model, None)
    assert state.a.state[2] == (0.9 * 0.9, 0.999 * 0.999)


def test_update_errors_name_the_path():
    model = {"enc": {"w": np.ones((2, 3))}}
    state = setup(Descent(), model)
    with pytest.raises(ValueError, match=r"'enc.w' has shape \(3, 2\).*\(2, 3\)"):
        update(state, model, {"enc": {"w": np.ones((3, 2))}})
    with pytest.raises(ValueError, match=re.escape("nothing at 'enc.w'")):
        update(state, {"enc": {"v": np.ones(2)}}, {"enc": {"w": np.ones((2, 3))}})
    with pytest.raises(TypeError, match="must come from setup"):
        update(model, model, model)


def test_adjust_changes_only_the_subtree_and_keeps_state():
    model = Chain(enc=Dense(2, 2), dec=Dense(2, 2))
    state = setup(Adam(0.01), model)
    update(state, model, gradient(lambda m: (m(np.ones((1, 2), np.float32)) ** 2).sum(), model)[0])
    m_before = state.layers.enc.weight.state[0].copy()
    adjust(state.layers.enc, 0.5)
    adjust(state["layers.dec"], beta=(0.5, 0.6))
    assert state.layers.enc.weight.rule == Adam(0.5)
    assert state.layers.dec.bias.rule == Adam(0.01, (0.5, 0.6))
    np.testing.assert_array_equal(state.layers.enc.weight.state[0], m_before)


def test_adjust_refuses_unknown_names_and_changes_nothing():
    state = setup(OptimiserChain(WeightDecay(), Adam()), {"a": np.ones(2), "b": np.ones(2)})
    with pytest.raises(ValueError, match=r"'lr'; valid names are \['beta', 'epsilon', 'eta', "
                                         r"'lambda_'\]"):
        adjust(state, lr=0.1)
    with pytest.raises(ValueError, match="Adam: eta must be >= 0"):
        adjust(state, -1.0)
    with pytest.raises(ValueError, match="AdaDelta has no hyper-parameter 'eta'"):
        adjust(setup(AdaDelta(), np.ones(2)), 0.1)
    with pytest.raises(ValueError, match="'centred' cannot change"):
        adjust(setup(RMSProp(), np.ones(2)), centred=True)
    with pytest.raises(TypeError, match="either positionally or as eta"):
        adjust(state, 0.1, eta=0.2)
    assert state.a.rule == OptimiserChain(WeightDecay(), Adam())


def test_adjust_targets_chain_members():
    chain = OptimiserChain(WeightDecay(1e-4), AdamW(lambda_=0.1), Adam())
    state = setup(chain, np.ones(2))
    adjust(state, lambda_=0.5)  # every member that has it
    assert [getattr(r, "lambda_", None) for r in state.rule.rules] == [0.5, 0.5, None]
    adjust(state, member="WeightDecay", lambda_=0.01)
    adjust(state, 0.3, member=-1)
    assert state.rule == OptimiserChain(WeightDecay(0.01), AdamW(lambda_=0.5), Adam(0.3))
    with pytest.raises(ValueError, match=r"no member .* is a 'SGD'; members are \['WeightDecay'"):
        adjust(state, 0.1, member="SGD")
    with pytest.raises(ValueError, match="member=3 is out of range"):
        adjust(state, 0.1, member=3)
    with pytest.raises(ValueError, match="WeightDecay has no hyper-parameter 'eta'"):
        adjust(state, 0.1, member=0)
    with pytest.raises(ValueError, match="selects a member of an OptimiserChain"):
        adjust(setup(Adam(), np.ones(2)), 0.1, member=0)


@pytest.mark.parametrize("fn", [adjust, freeze, thaw])
def test_steering_a_model_instead_of_its_state_is_an_error(fn):
    model = Chain(Dense(2, 2))
    args = (0.1,) if fn is adjust else ()
    with pytest.raises(TypeError, match="not the model"):
        fn(model, *args)
    with pytest.raises(TypeError, match="not the model"):
        fn(model.layers[0].weight, *args)


def test_thaw_of_the_whole_tree_clears_every_freeze():
    state = setup(Descent(), Chain(a=Dense(2, 2), b=Chain(c=Dense(2, 2))))
    freeze(state.layers.a.weight)
    freeze(state.layers.b)
    frozen = [p for p, leaf in _leaves(state) if leaf.frozen]
    assert frozen == ["layers.a.weight", "layers.b.layers.c.weight", "layers.b.layers.c.bias"]
    thaw(state)
    assert not any(leaf.frozen for _, leaf in _leaves(state))


def _leaves(state):
    from kiln_engine.optimisers import leaves_of
    return leaves_of(state)


def test_freezing_a_tied_leaf_freezes_it_everywhere():
    w = np.ones((2, 2))
    state = setup(Descent(), {"enc": w, "dec": w})
    freeze(state.enc)
    assert state.dec.frozen


def test_clipnorm_refuses_non_finite_gradients_naming_the_parameter():
    model = {"layer": {"w": np.ones(3)}}
    state = setup(OptimiserChain(ClipNorm(1.0), Descent()), model)
    with pytest.raises(NonFiniteError, match=r"^layer.w: ClipNorm: the gradient has 2.0-norm inf"):
        update(state, model, {"layer": {"w": np.array([1.0, np.inf, 0.0])}})
    loose = setup(ClipNorm(1.0, throw=False), {"w": np.ones(3)})
    update(loose, {"w": np.ones(3)}, {"w": np.array([1.0, np.nan, 0.0])})


def test_accumgrad_matches_the_optimisers_jl_example():
    # From Optimisers.jl's AccumGrad docstring: m = (x=[1f0], y=[2f0]).
    m = {"x": np.array([1.0], np.float32), "y": np.array([2.0], np.float32)}
    s = setup(OptimiserChain(AccumGrad(2), WeightDecay(0.01), Descent(0.1)), m)
    update(s, m, {"x": np.array([33.0], np.float32), "y": np.array([0.0], np.float32)})
    assert m["x"][0] == 1.0 and m["y"][0] == 2.0
    update(s, m, {"x": np.array([0.0], np.float32), "y": np.array([444.0], np.float32)})
    np.testing.assert_allclose([m["x"][0], m["y"][0]], [-0.651, -20.202002], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_round_trips_through_json(name):
    cls = RULES[name]
    rule = {"AccumGrad": lambda: AccumGrad(4), "ClipNorm": lambda: ClipNorm(2.0, math.inf),
            "OptimiserChain": lambda: OptimiserChain(ClipGrad(1.0), WeightDecay(), Adam(0.1)),
            "RMSProp": lambda: RMSProp(centred=True)}.get(name, cls)()
    text = json.dumps(rule_to_spec(rule), allow_nan=False)
    assert rule_from_spec(json.loads(text)) == rule


SPEC_ERRORS = [
    ({"rule": "OptimiserChain", "rules": [{"rule": "ClipGrad"}, {"rule": "Adam", "eta": -1}]},
     "optimiser.rules[1].eta: must be >= 0"),
    ({"rule": "Adam", "lr": 0.1}, "optimiser.lr: unknown field; valid fields are ['beta', "
                                  "'epsilon', 'eta', 'rule']"),
    ({"rule": "SGD"}, "optimiser.rule: must be one of ["),
    ({"rule": "AccumGrad"}, "optimiser.n: is required"),
    ({"rule": "Adam", "beta": [0.9]}, "optimiser.beta: must be a pair of numbers"),
    ({"rule": "OptimiserChain", "rules": {"rule": "Adam"}}, "optimiser.rules: must be a list"),
    ({"rule": "RMSProp", "centred": "yes"}, "optimiser.centred: must be true or false"),
    (["Adam"], "optimiser: must be an object"),
]


@pytest.mark.parametrize("spec, message", SPEC_ERRORS)
def test_spec_errors_name_the_path(spec, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        rule_from_spec(spec)


def test_state_export_keeps_ties_flags_and_copies():
    w = np.ones((2, 3))
    model = {"enc": w, "dec": (w, np.ones(3))}
    state = setup(Momentum(0.1), model)
    freeze(state.dec[1])
    update(state, model, {"enc": np.ones((2, 3)), "dec": (np.ones((2, 3)), np.ones(3))})
    arrays, meta = export_state(state)
    assert sorted(arrays) == ["dec.1.state.0", "enc.state.0"]
    arrays["enc.state.0"][...] = 99  # an export is a copy
    assert not (state.enc.state == 99).any()
    back = restore_state(arrays, json.loads(json.dumps(meta)), model=model)
    assert back.enc is back["dec.0"] and back["dec.1"].frozen and not back.enc.frozen
    assert (back.enc.state == 99).all()


def test_restore_checks_the_model_and_the_arrays():
    model = {"w": np.ones((2, 3), np.float32)}
    arrays, meta = export_state(setup(Adam(), model))
    with pytest.raises(ValueError, match=r"parameters at \['v'\] have no leaf"):
        restore_state(arrays, meta, model={"w": np.ones((2, 3), np.float32), "v": np.ones(2)})
    with pytest.raises(ValueError, match=r"'w' holds a float32 array of shape \(2, 3\); the "
                                         r"parameter is float64 \(3, 2\)"):
        restore_state(arrays, meta, model={"w": np.ones((3, 2))})
    with pytest.raises(ValueError, match=re.escape("needs array 'w.state.1'")):
        restore_state({"w.state.0": arrays["w.state.0"]}, meta)
    with pytest.raises(ValueError, match="not a 'kiln-optimiser-state' record"):
        restore_state(arrays, {"tree": {}})
    with pytest.raises(ValueError, match="tied leaves differ"):
        w = np.ones(2)
        a2, m2 = export_state(setup(Descent(), {"a": np.ones(2), "b": np.ones(2)}))
        restore_state(a2, m2, model={"a": w, "b": w})


def test_trainables_are_unique_floating_arrays_in_order():
    w = np.ones((2, 2))
    model = {"a": w, "b": Stats(), "c": w}
    assert [id(x) for x in trainables(model)] == [id(w), id(model["b"].scale)]
    assert [p for p, _ in trainables(model, path=True)] == ["a", "b.scale"]


def test_destructure_flattens_and_rebuilds_with_ties():
    w = np.arange(4.0).reshape(2, 2)
    model = {"a": w, "b": (np.array([10.0, 11.0], np.float32), w)}
    flat, re_ = destructure(model)
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 10, 11])
    new = re_(flat * 2)
    assert new["b"][1] is new["a"] and new["b"][0].dtype == np.float32
    np.testing.assert_array_equal(new["a"], 2 * w)
    np.testing.assert_array_equal(model["a"], w)
    with pytest.raises(ValueError, match=r"shape \(6,\) as destructure made; got \(5,\)"):
        re_(flat[:5])


def test_destructure_is_differentiable():
    rng = np.random.default_rng(0)
    model = Chain(Dense(3, 2, relu), Dense(2, 1))
    for layer in model.layers:
        layer.weight = layer.weight.astype(np.float64)
        layer.bias = rng.normal(size=layer.bias.shape)
    x = rng.normal(size=(4, 3))
    flat, re_ = destructure(model)
    (g_flat,) = gradient(lambda f: (re_(f)(x) ** 2).sum(), flat)
    g_model = gradient(lambda m: (m(x) ** 2).sum(), model)[0]
    expected = np.concatenate([g_model.layers[i][k].ravel() for i in range(2)
                               for k in ("weight", "bias")])
    np.testing.assert_allclose(g_flat, expected, rtol=1e-12)


def test_state_tree_repr_lists_leaves_by_path():
    state = setup(Descent(0.5), Chain(enc=Dense(1, 1)))
    freeze(state.layers.enc.bias)
    assert isinstance(state, StateTree)
    assert repr(state) == ("StateTree[Chain](\n  layers.enc.weight: Leaf(Descent(eta=0.5))\n"
                           "  layers.enc.bias: Leaf(Descent(eta=0.5), frozen=True)\n)")


def test_json_spells_lambda_as_optimisers_jl_does():
    from kiln_engine._spec import SpecError
    from kiln_engine.optimisers.spec import hyper_from_json, rule_from_spec, rule_to_spec

    rule = rule_from_spec({"rule": "OptimiserChain", "rules": [
        {"rule": "WeightDecay", "lambda": 1e-4}, {"rule": "AdamW", "lambda": 0.01}]})
    assert rule.rules[0].lambda_ == 1e-4 and rule.rules[1].lambda_ == 0.01
    spec = rule_to_spec(rule)
    assert spec["rules"][0] == {"rule": "WeightDecay", "lambda": 1e-4}
    assert rule_to_spec(rule_from_spec(spec)) == spec
    with pytest.raises(SpecError, match=r"optimiser\.lambda_: unknown field.*'lambda'"):
        rule_from_spec({"rule": "WeightDecay", "lambda_": 1e-4})
    assert hyper_from_json({"lambda": 0.1, "eta": 0.2}) == {"lambda_": 0.1, "eta": 0.2}


def test_a_state_tree_copies_and_deepcopies():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3))
    model = {"enc": w, "dec": {"w": w.T, "b": np.ones(3)}}
    state = setup(Adam(0.1), model)
    update(state, model, {"enc": np.ones((2, 3)), "dec": {"w": np.ones((3, 2)), "b": None}})
    deep = copy.deepcopy(state)
    assert repr(deep) == repr(state) and deep["dec.w"] is deep["enc"]  # the tie is kept
    assert deep["enc"] is not state["enc"] and deep["enc"].state[0] is not state["enc"].state[0]
    shallow = copy.copy(state)
    assert shallow["enc"] is state["enc"] and shallow.keys() == state.keys()
    w2 = w.copy()  # (copy.deepcopy would copy w.T apart from w: numpy keeps no views)
    twin = {"enc": w2, "dec": {"w": w2.T, "b": model["dec"]["b"].copy()}}
    g = {"enc": rng.normal(size=(2, 3)), "dec": {"w": rng.normal(size=(3, 2)),
                                                  "b": rng.normal(size=3)}}
    update(state, model, g)
    update(deep, twin, g)  # the copy steps on its own, exactly as the original
    np.testing.assert_array_equal(twin["enc"], model["enc"])
    np.testing.assert_array_equal(twin["dec"]["b"], model["dec"]["b"])


def test_describe_state_lists_every_leaf_with_its_rule_hyper_parameters_and_flag():
    w = np.ones((2, 2))
    model = Chain(enc=Dense(2, 2), dec=Dense(2, 2))
    model.layers.dec.weight = model.layers.enc.weight.T
    chain = OptimiserChain(ClipGrad(1.0), WeightDecay(0.1), AdamW(0.01, lambda_=0.5))
    state = setup(chain, model)
    freeze(state.layers.enc.bias)
    adjust(state.layers.dec.bias, 0.5)
    rows = describe_state(state)
    assert [r.path for r in rows] == ["layers.enc.weight", "layers.enc.bias",
                                      "layers.dec.weight", "layers.dec.bias"]
    assert all(isinstance(r, LeafInfo) for r in rows)
    enc_w, enc_b, dec_w, dec_b = rows
    assert enc_w.rule == chain and not enc_w.frozen and enc_w.tied_to is None
    # in a chain, each name as its first member that has it holds it
    assert enc_w.hyper == {"delta": 1.0, "lambda_": 0.1, "eta": 0.01, "beta": (0.9, 0.999),
                           "epsilon": 1e-08, "couple": True}
    assert enc_b.frozen and dec_w.tied_to == "layers.enc.weight"
    assert dec_b.hyper["eta"] == 0.5 and dec_b.rule[2].hyperparameters()["lambda_"] == 0.5
    assert describe_state(setup(Descent(0.3), w)) == [LeafInfo("", Descent(0.3), {"eta": 0.3},
                                                               False, None)]
    with pytest.raises(TypeError, match="describe_state: expected the optimiser state"):
        describe_state(model)


def test_steering_helpers_are_public():
    import kiln_engine

    for name in ("fmap", "describe_state", "LeafInfo"):
        assert name in kiln_engine.__all__ and hasattr(kiln_engine, name)
