"""The specs' JSON Schemas hold to the tables that validate the specs.

Every layer type, rule and schedule appears with exactly its fields; whatever the engine
writes (``model_to_spec``, ``rule_to_spec``, ``to_spec``) is valid under the schema; a
field the schema calls required is one the engine refuses to do without, and an optional
one it fills in; and specs the engine refuses for a type, an enum or a range are refused
by the schema too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest
from kiln_engine import (
    SpecError,
    model_from_spec,
    model_schema,
    model_to_spec,
    optimiser_schema,
    schedule_schema,
)
from kiln_engine._tree import CONTAINER_SEGMENTS
from kiln_engine.json_schema import DIALECT, spec_definitions
from kiln_engine.optimisers import RULES, AccumGrad, OptimiserChain, rule_from_spec, rule_to_spec
from kiln_engine.schedules import SCHEDULES, Schedule
from kiln_engine.serialise.spec import LAYER_SPECS

from .test_schedules import EXAMPLES as SCHEDULE_EXAMPLES
from .test_serialise import CASES

MODEL = jsonschema.Draft202012Validator(model_schema())
OPTIMISER = jsonschema.Draft202012Validator(optimiser_schema())
SCHEDULE = jsonschema.Draft202012Validator(schedule_schema())


def _valid(validator: jsonschema.Draft202012Validator, spec: Any) -> bool:
    return validator.is_valid(spec)


def test_the_schemas_are_valid_draft_2020_12_with_every_reference_defined():
    for schema in (model_schema(), optimiser_schema(), schedule_schema()):
        assert schema["$schema"] == DIALECT
        jsonschema.Draft202012Validator.check_schema(schema)
    defs = spec_definitions("#/components/schemas/")
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(defs)
    assert refs and {r.removeprefix("#/components/schemas/") for r in refs} <= set(defs)


# --- models -----------------------------------------------------------------------------

def _layer(name: str) -> dict:
    return model_schema()["$defs"][f"{name}Layer"]


def test_every_layer_type_appears_with_exactly_its_fields():
    union = model_schema()["$defs"]["ModelSpec"]
    assert union["discriminator"]["mapping"] == {
        e.name: f"#/$defs/{e.name}Layer" for e in LAYER_SPECS.values()}
    assert len(union["oneOf"]) == len(LAYER_SPECS)
    for entry in LAYER_SPECS.values():
        schema = _layer(entry.name)
        assert list(schema["properties"]) == ["type", *(f.name for f in entry.fields)]
        assert schema["properties"]["type"] == {"const": entry.name}
        assert schema["required"] == ["type", *(f.name for f in entry.fields if f.required)]
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", list(CASES))
def test_what_model_to_spec_writes_is_valid(name):
    spec = model_to_spec(model_from_spec(CASES[name][0]))
    MODEL.validate(spec)


@pytest.mark.parametrize("name", list(CASES))
def test_required_fields_are_the_ones_the_engine_cannot_do_without(name):
    spec = CASES[name][0]
    entry = next(e for e in LAYER_SPECS.values() if e.name == spec["type"])
    for f in entry.fields:
        if f.name not in spec:
            continue
        without = {k: v for k, v in spec.items() if k != f.name}
        if f.required:
            with pytest.raises(SpecError) as e:
                model_from_spec(without)
            assert e.value.path == f"model.{f.name}"
            assert not _valid(MODEL, without)
        else:  # the engine fills in the default (which may break a relation elsewhere)
            try:
                model_from_spec(without)
            except SpecError as e:
                assert "required" not in e.message and e.path != f"model.{f.name}"
            assert _valid(MODEL, without)


def test_defaults_in_the_schema_are_the_engines():
    # A Dense of only its required fields, built, writes every default back out.
    written = model_to_spec(model_from_spec({"type": "Dense", "in": 3, "out": 2}))
    props = _layer("Dense")["properties"]
    for key, value in written.items():
        if key not in ("type", "in", "out"):
            assert props[key]["default"] == value, key
    conv = model_to_spec(model_from_spec({"type": "Conv", "kernel": 3, "in": 1, "out": 1}))
    for key in ("stride", "dilation", "groups", "activation", "bias", "dtype"):
        assert _layer("Conv")["properties"][key]["default"] == conv[key], key


def _dense(**changes: Any) -> dict:
    return {"type": "Chain", "layers": {"enc": {"type": "Dense", "in": 4, "out": 3, **changes}}}


REFUSED_MODELS = {
    "unknown-type": {"type": "Dense2", "in": 4, "out": 3},
    "zero-width": _dense(out=0),
    "float-width": _dense(out=2.5),
    "bool-width": _dense(out=True),
    "unknown-activation": _dense(activation="relu7"),
    "bias-not-bool": _dense(bias="yes"),
    "unknown-dtype": _dense(dtype="float16"),
    "unknown-init": _dense(init="xavier"),
    "unknown-field": _dense(units=3),
    "missing-out": {"type": "Dense", "in": 4},
    "dropout-p-over-1": {"type": "Dropout", "p": 1.5},
    "alphadropout-p-1": {"type": "AlphaDropout", "p": 1.0},
    "active-not-bool": {"type": "Dropout", "p": 0.1, "active": "yes"},
    "dims-empty": {"type": "Dropout", "p": 0.1, "dims": []},
    "pad-valid": {"type": "Conv", "kernel": 3, "in": 1, "out": 1, "pad": "valid"},
    "pad-three": {"type": "Conv", "kernel": 3, "in": 1, "out": 1, "pad": [1, 1, 1]},
    "kernel-triple": {"type": "Conv", "kernel": [3, 3, 3], "in": 1, "out": 1},
    "stride-zero": {"type": "MaxPool", "window": 2, "stride": 0},
    "eps-zero": {"type": "BatchNorm", "channels": 3, "eps": 0},
    "momentum-over-1": {"type": "BatchNorm", "channels": 3, "momentum": 2},
    "layernorm-size-empty": {"type": "LayerNorm", "size": []},
    "connection-sub": {"type": "SkipConnection", "layer": "relu", "connection": "sub"},
    "concat-axis-string": {"type": "Parallel", "connection": {"type": "concat", "axis": "1"},
                           "layers": ["relu"]},
    "layers-a-string": {"type": "Chain", "layers": "relu"},
    "member-unknown-activation": {"type": "Chain", "layers": ["softmaxx"]},
    "member-a-number": {"type": "Chain", "layers": [3]},
    "member-name-not-an-identifier": {"type": "Chain", "layers": {"1st": "relu"}},
    "not-an-object": ["Dense"],
}


@pytest.mark.parametrize("spec", REFUSED_MODELS.values(), ids=list(REFUSED_MODELS))
def test_a_spec_the_engine_refuses_for_its_type_or_range_the_schema_refuses(spec):
    with pytest.raises(SpecError):
        model_from_spec(spec)
    assert not _valid(MODEL, spec)


def test_every_nested_field_is_a_container_segment_of_paths():
    # near_paths ("did you mean layers.enc?") leaves these segments out of a path.
    nested = {f.name for e in LAYER_SPECS.values() for f in e.fields if f.nested}
    assert nested == CONTAINER_SEGMENTS


# --- optimisers -------------------------------------------------------------------------

def _json_names(cls: type) -> list[str]:
    return [{"lambda_": "lambda"}.get(f.name, f.name) for f in dataclasses.fields(cls)]


def test_every_rule_appears_with_its_hyper_parameters():
    defs = optimiser_schema()["$defs"]
    assert defs["OptimiserSpec"]["discriminator"]["mapping"] == {
        name: f"#/$defs/{name}Rule" for name in RULES}
    for name, cls in RULES.items():
        props = defs[f"{name}Rule"]["properties"]
        expected = ["rules"] if cls is OptimiserChain else _json_names(cls)
        assert list(props) == ["rule", *expected], name
        assert all(props[k].get("description") for k in expected), name


def _default_rules() -> list:
    return [AccumGrad(4) if cls is AccumGrad else cls() for cls in RULES.values()
            if cls is not OptimiserChain]


@pytest.mark.parametrize("rule", _default_rules(), ids=lambda r: type(r).__name__)
def test_rule_to_spec_of_each_default_rule_is_valid_and_its_defaults_are_documented(rule):
    spec = rule_to_spec(rule)
    OPTIMISER.validate(spec)
    props = optimiser_schema()["$defs"][f"{spec['rule']}Rule"]["properties"]
    for key, value in spec.items():
        if key != "rule" and "default" in props[key]:
            assert props[key]["default"] == value, key
    assert OPTIMISER.is_valid({"rule": "OptimiserChain", "rules": [spec, {"rule": "Adam"}]})


REFUSED_RULES = {
    "unknown-rule": {"rule": "Adamw"},
    "lr-not-eta": {"rule": "Adam", "lr": 0.1},
    "negative-eta": {"rule": "Adam", "eta": -1},
    "eta-a-string": {"rule": "Descent", "eta": "0.1"},
    "one-beta": {"rule": "Adam", "beta": [0.9]},
    "beta-of-1": {"rule": "Adam", "beta": [0.9, 1.0]},
    "rho-of-1": {"rule": "Momentum", "rho": 1},
    "p-below-1": {"rule": "ClipNorm", "p": 0.5},
    "p-minus-inf": {"rule": "ClipNorm", "p": "-inf"},
    "delta-zero": {"rule": "ClipGrad", "delta": 0},
    "n-zero": {"rule": "AccumGrad", "n": 0},
    "n-missing": {"rule": "AccumGrad"},
    "centred-an-int": {"rule": "RMSProp", "centred": 1},
    "ell-zero": {"rule": "Rprop", "ell": [0, 2]},
    "gamma-negative": {"rule": "Rprop", "gamma": [-1, 1]},
    "chain-member-bad": {"rule": "OptimiserChain", "rules": [{"rule": "Adam", "eta": -1}]},
    "chain-rules-not-a-list": {"rule": "OptimiserChain", "rules": {"rule": "Adam"}},
}


@pytest.mark.parametrize("spec", REFUSED_RULES.values(), ids=list(REFUSED_RULES))
def test_a_rule_the_engine_refuses_the_schema_refuses(spec):
    with pytest.raises(SpecError):
        rule_from_spec(spec)
    assert not _valid(OPTIMISER, spec)


# --- schedules --------------------------------------------------------------------------

def test_every_schedule_appears_with_its_fields():
    defs = schedule_schema()["$defs"]
    assert set(defs["ScheduleSpec"]["discriminator"]["mapping"]) == set(SCHEDULES)
    for name, cls in SCHEDULES.items():
        fields = [f for f in dataclasses.fields(cls) if f.init]
        schema = defs[f"{name}Schedule"]
        assert list(schema["properties"]) == ["type", *(f.name for f in fields)], name
        assert schema["required"] == ["type", *(f.name for f in fields
                                                if f.default is dataclasses.MISSING)]


@pytest.mark.parametrize("schedule", SCHEDULE_EXAMPLES, ids=lambda s: type(s).__name__)
def test_to_spec_of_each_schedule_is_valid(schedule):
    SCHEDULE.validate(schedule.to_spec())


REFUSED_SCHEDULES = {
    "unknown-type": {"type": "exp", "start": 0.1, "decay": 0.5},
    "negative-decay": {"type": "Exp", "start": 0.1, "decay": -1},
    "start-a-string": {"type": "Exp", "start": "0.1", "decay": 0.5},
    "zero-period": {"type": "Triangle", "l0": 0, "l1": 1, "period": 0},
    "percent-of-1": {"type": "OneCycle", "nsteps": 10, "maxval": 0.1, "percent_start": 1},
    "unknown-mode": {"type": "ReduceOnPlateau", "start": 0.1, "mode": "mean"},
    "empty-step-sizes": {"type": "Step", "start": 1, "decay": 0.5, "step_sizes": []},
    "no-schedules": {"type": "Sequence", "schedules": [], "step_sizes": []},
    "nested-bad": {"type": "Shifted", "schedule": {"type": "Exp", "start": 1}, "offset": 2},
    "unknown-field": {"type": "Constant", "value": 1, "end": 2},
    "restart-an-int": {"type": "CosAnneal", "l0": 0, "l1": 1, "period": 3, "restart": 1},
}


@pytest.mark.parametrize("spec", REFUSED_SCHEDULES.values(), ids=list(REFUSED_SCHEDULES))
def test_a_schedule_the_engine_refuses_the_schema_refuses(spec):
    with pytest.raises(SpecError):
        Schedule.from_spec(spec)
    assert not _valid(SCHEDULE, spec)
