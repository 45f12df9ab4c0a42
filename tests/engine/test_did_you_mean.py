"""A name that is almost right gets "did you mean …": choices in every spec, and paths."""

from __future__ import annotations

import pytest
from kiln_engine import (
    Chain,
    Dense,
    PathError,
    SpecError,
    getpath,
    model_from_spec,
    near_paths,
    paths,
    relu,
)
from kiln_engine.optimisers import rule_from_spec
from kiln_engine.schedules import Schedule


def _spec_error(build, spec) -> SpecError:
    with pytest.raises(SpecError) as e:
        build(spec)
    return e.value


@pytest.mark.parametrize(("rule", "meant"), [
    ("Adamw", "AdamW"), ("adam", "Adam"), ("ADAM", "Adam"), ("Adamm", "Adam"),
    ("SGD", "Descent"), ("sgd", "Descent"), ("RMSprop", "RMSProp"), ("Adagrad", "AdaGrad"),
    ("weight_decay", "WeightDecay"),
])
def test_an_unknown_rule_suggests_the_one_meant(rule, meant):
    e = _spec_error(rule_from_spec, {"rule": rule})
    assert e.path == "optimiser.rule"
    assert e.message.endswith(f"got {rule!r} (did you mean {meant!r}?)")


def test_a_rule_in_a_chain_names_its_path_and_a_name_far_from_all_gets_no_guess():
    e = _spec_error(rule_from_spec, {"rule": "OptimiserChain", "rules": [{"rule": "sgd"}]})
    assert e.path == "optimiser.rules[0].rule" and "did you mean 'Descent'?" in e.message
    e = _spec_error(rule_from_spec, {"rule": "Xyzzy"})
    assert "did you mean" not in e.message and "'Adam'" in e.message  # the list of rules


@pytest.mark.parametrize(("spec", "path", "meant"), [
    ({"type": "Dense", "in": 2, "out": 2, "activation": "Relu"}, "model.activation", "relu"),
    ({"type": "Dense", "in": 2, "out": 2, "activation": "leaky_relu"}, "model.activation",
     "leakyrelu"),
    ({"type": "Dense", "in": 2, "out": 2, "init": "Glorot_Uniform"}, "model.init",
     "glorot_uniform"),
    ({"type": "dense", "in": 2, "out": 2}, "model.type", "Dense"),
    ({"type": "Chain", "layers": ["Softmax"]}, "model.layers[0]", "softmax"),
])
def test_every_choice_of_a_model_spec_suggests_the_one_meant(spec, path, meant):
    e = _spec_error(model_from_spec, spec)
    assert e.path == path and f"(did you mean {meant!r}?)" in e.message


def test_a_schedule_type_suggests_the_one_meant():
    e = _spec_error(Schedule.from_spec, {"type": "exp", "start": 0.1, "decay": 0.5})
    assert e.path == "schedule.type" and "(did you mean 'Exp'?)" in e.message


MODEL = Chain(enc=Chain(Dense(4, 3, relu), Dense(3, 3)), dec=Dense(3, 2))


@pytest.mark.parametrize(("path", "meant"), [
    ("enc", ["layers.enc"]),
    ("enc.0", ["layers.enc.layers.0"]),
    ("enc.1.weight", ["layers.enc.layers.1.weight"]),
    ("enc.layers", ["layers.enc.layers"]),
    ("layers.enc.0", ["layers.enc.layers.0"]),
    ("dec", ["layers.dec"]),
])
def test_a_path_without_its_container_segments_finds_the_full_one(path, meant):
    assert near_paths(path, paths(MODEL)) == meant


def test_a_misspelt_path_finds_close_ones_and_a_far_one_none():
    assert near_paths("layers.encc", paths(MODEL))[0] == "layers.enc"
    assert near_paths("encc", paths(MODEL))[0] == "layers.enc"
    assert near_paths("classifier", paths(MODEL)) == []


def test_getpath_suggests_the_full_path():
    with pytest.raises(PathError) as e:
        getpath(MODEL, "enc")
    assert "did you mean 'layers.enc'?" in str(e.value)
