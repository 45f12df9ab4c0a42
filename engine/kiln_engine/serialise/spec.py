"""Models to and from JSON specs: the architecture only, never the weights.

A spec names each layer's type and its configuration::

    {"type": "Chain", "layers": {"enc": {"type": "Dense", "in": 784, "out": 32,
                                         "activation": "relu"},
                                 "dec": {"type": "Dense", "in": 32, "out": 10}}}

A positional Chain takes a list; a plain function member (``softmax``) is its name.
Building goes in two passes: ``_parse`` validates the whole spec into a plan of plain
values without allocating anything, so a bad field, or a model too large for
``max_parameters``, is refused before the first array exists; ``_build`` then
constructs the layers. Errors are ``SpecError`` naming the path of the bad field:
``model.layers.enc.layers[0].out: must be a positive integer; got 0``.

Each layer class has one ``LayerSpec`` in ``LAYER_SPECS`` (filled in by
``layer_specs``): its fields, how to build it, and the shapes of the arrays it will
hold, from which parameters are counted without building anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._spec import (
    SpecError,
    check_keys,
    described,
    did_you_mean,
    get_bool,
    get_choice,
    get_float,
    get_int,
    integer_schema,
    join,
    number_schema,
    object_schema,
    ref,
    summary,
    union,
)
from ..activations import ACTIVATIONS
from ..layers import Layer

__all__ = [
    "DTYPES",
    "LAYER_SPECS",
    "Field",
    "LayerSpec",
    "PlannedArray",
    "activation_field",
    "bool_field",
    "choice_field",
    "count_parameters",
    "dtype_field",
    "estimate_bytes",
    "float_field",
    "function_name",
    "int_field",
    "layer_field",
    "layer_schemas",
    "layers_field",
    "model_from_spec",
    "model_to_spec",
    "register",
]

#: Parameter dtypes a spec may ask for.
DTYPES = ("float32", "float64")

#: (attribute, shape, dtype name) of one array a layer will hold.
PlannedArray = tuple[str, tuple[int, ...], str]


@dataclass(frozen=True)
class Field:
    """One field of a layer's spec.

    ``parse(spec, path)`` reads and validates it from the layer's JSON object (``path``
    is the layer's path) and returns a JSON-level value, or for a nested field a plan or
    a list / dict of plans. ``dump(layer, path)`` reads it back from a built layer;
    None marks a build-only option such as ``init``, which a built model does not
    remember. A ``nested`` field holds sublayers, in the layer attribute of the same
    name, so their arrays' dotted paths start with it (``layers.enc.weight``).

    ``schema`` is the JSON Schema of the values ``parse`` accepts (with the default and
    a description where they help), and ``required`` whether the spec must hold the field:
    ``json_schema`` assembles the documented model schema from them.
    """

    name: str
    parse: Callable[[dict, str], Any]
    dump: Callable[[Any, str], Any] | None
    nested: bool = False
    schema: dict[str, Any] = field(kw_only=True)
    required: bool = field(default=False, kw_only=True)


def _no_arrays(values: dict[str, Any]) -> list[PlannedArray]:
    return []


def _no_check(values: dict[str, Any], path: str) -> None:
    return None


@dataclass(frozen=True)
class LayerSpec:
    """How one layer class maps to and from JSON, and which arrays it will allocate.

    ``build(values, rng)`` constructs the layer from parsed values (sublayers already
    built); ``arrays(values)`` lists the layer's own arrays without allocating them;
    ``check(values, path)`` validates constraints between fields (raise SpecError).
    """

    cls: type
    fields: tuple[Field, ...]
    build: Callable[[dict[str, Any], np.random.Generator | None], Any]
    arrays: Callable[[dict[str, Any]], list[PlannedArray]] = _no_arrays
    check: Callable[[dict[str, Any], str], None] = _no_check

    @property
    def name(self) -> str:
        return self.cls.__name__


#: Every layer class that has a spec, by class (filled in by ``layer_specs``).
LAYER_SPECS: dict[type, LayerSpec] = {}


def register(entry: LayerSpec) -> None:
    """Add a layer type to ``LAYER_SPECS``."""
    LAYER_SPECS[entry.cls] = entry


# --- field kinds ------------------------------------------------------------------------

def int_field(name: str, dump: Callable[[Any], int], *, default: Any = ...,
              minimum: int = 1, description: str | None = None) -> Field:
    """An integer >= ``minimum``."""
    return Field(name, lambda s, p: get_int(s, name, p, default=default, minimum=minimum),
                 lambda layer, p: dump(layer),
                 schema=described(integer_schema(minimum), description, default),
                 required=default is ...)


def float_field(name: str, dump: Callable[[Any], float], *, default: Any = ...,
                description: str | None = None, **bounds: Any) -> Field:
    """A finite number within ``bounds`` (see ``_spec.get_float``)."""
    return Field(name, lambda s, p: get_float(s, name, p, default=default, **bounds),
                 lambda layer, p: dump(layer),
                 schema=described(number_schema(**bounds), description, default),
                 required=default is ...)


def bool_field(name: str, dump: Callable[[Any], bool], *, default: Any = ...,
               description: str | None = None) -> Field:
    """true or false."""
    return Field(name, lambda s, p: get_bool(s, name, p, default=default),
                 lambda layer, p: dump(layer),
                 schema=described({"type": "boolean"}, description, default),
                 required=default is ...)


def choice_field(name: str, choices: list[str] | tuple[str, ...] | dict,
                 dump: Callable[[Any], str] | None, *, default: Any = ...,
                 description: str | None = None) -> Field:
    """A string naming one of ``choices``; the parsed value is the name."""
    names = list(choices)
    return Field(name, lambda s, p: get_choice(s, name, p, names, default=default),
                 None if dump is None else lambda layer, p: dump(layer),
                 schema=described({"type": "string", "enum": names}, description, default),
                 required=default is ...)


def dtype_field(dump: Callable[[Any], Any]) -> Field:
    """``dtype``: "float32" (the default) or "float64". ``dump`` returns one of the layer's
    arrays, or None for a layer configured to hold none (its dtype is then the default)."""
    def read(layer: Any) -> str:
        x = dump(layer)
        return "float32" if x is None else np.dtype(x.dtype).name

    return choice_field("dtype", DTYPES, read, default="float32",
                        description="the dtype of the layer's arrays")


def activation_field(dump: Callable[[Any], Callable], *, default: str = "identity") -> Field:
    """An activation by its name in ``activations.ACTIVATIONS``."""
    return Field("activation",
                 lambda s, p: get_choice(s, "activation", p, list(ACTIVATIONS), default=default),
                 lambda layer, p: function_name(dump(layer), join(p, "activation")),
                 schema=described(ref("Activation"), "applied to the layer's output", default))


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def layers_field(name: str, dump: Callable[[Any], Any]) -> Field:
    """A sequence of layers: a list (positional) or an object (named by identifiers).

    Members are layer specs or activation names (plain functions). The layer holds them
    in a ``Layers`` container in its attribute ``name``, which ``dump`` returns.
    """
    def parse(spec: dict, path: str) -> list | dict:
        here = join(path, name)
        if name not in spec:
            raise SpecError(here, "is required")
        v = spec[name]
        if isinstance(v, list):
            return [_parse_member(m, join(here, i)) for i, m in enumerate(v)]
        if isinstance(v, dict):
            for key in v:
                if not _NAME.match(key):
                    raise SpecError(join(here, key), "a layer name must be an identifier "
                                    "(letters, digits and _, not starting with a digit)")
            return {key: _parse_member(m, join(here, key)) for key, m in v.items()}
        raise SpecError(here, f"must be a list of layers or an object of named layers; got "
                        f"{type(v).__name__}")

    def dump_(layer: Any, path: str) -> list | dict:
        members = dump(layer)
        here = join(path, name)
        if members.names:
            return {k: _member_to_spec(m, join(here, k)) for k, m in zip(members.names, members)}
        return [_member_to_spec(m, join(here, i)) for i, m in enumerate(members)]

    members = {"anyOf": [
        {"type": "array", "items": ref("LayerMember"), "description": "applied in order"},
        {"type": "object", "additionalProperties": ref("LayerMember"),
         "propertyNames": {"pattern": _NAME.pattern},
         "description": "applied in order; the names become paths (layers.enc)"}]}
    return Field(name, parse, dump_, nested=True, required=True,
                 schema=described(members, "layer specs or activation names"))


def layer_field(name: str, dump: Callable[[Any], Any]) -> Field:
    """One nested layer (or activation name), held in the layer's attribute ``name``."""
    return Field(name, lambda s, p: _parse_member(_required(s, name, p), join(p, name)),
                 lambda layer, p: _member_to_spec(dump(layer), join(p, name)), nested=True,
                 schema=ref("LayerMember"), required=True)


def _required(spec: dict, key: str, path: str) -> Any:
    if key not in spec:
        raise SpecError(join(path, key), "is required")
    return spec[key]


def function_name(fn: Any, path: str) -> str:
    """The spec name of an activation function; SpecError for anything without one."""
    name = getattr(fn, "__name__", None)
    if ACTIVATIONS.get(name) is not fn:
        raise SpecError(path, f"the function {name or fn!r} has no spec name; a spec can hold "
                        f"the activations {sorted(ACTIVATIONS)}")
    return name


# --- parsing: spec -> plan --------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """A validated layer spec: its entry, its field values and its path in the spec."""

    entry: LayerSpec
    values: dict[str, Any]
    path: str


def _by_name() -> dict[str, LayerSpec]:
    return {e.name: e for e in LAYER_SPECS.values()}


def _entry(spec: dict, path: str) -> LayerSpec:
    """The entry named by the spec's ``type``; the error lists the known types."""
    known = _by_name()
    kind = spec.get("type")
    if isinstance(kind, str) and kind in known:
        return known[kind]
    found = f"got {kind!r}" if "type" in spec else "it is missing"
    raise SpecError(join(path, "type"), f"must name a layer type, one of {sorted(known)}; "
                    f"{found}{did_you_mean(kind, known)}")


#: Layers nested deeper than this are refused rather than recursed into (a hostile spec
#: must get a SpecError, not a RecursionError).
MAX_NESTING = 64


def _parse(spec: Any, path: str) -> _Plan:
    # Each level of nesting adds two path segments (``.layers[0]``, ``.layers.enc``).
    if path.count(".") + path.count("[") > 2 * MAX_NESTING:
        raise SpecError(path, f"layers are nested more than {MAX_NESTING} levels deep")
    if not isinstance(spec, dict):
        raise SpecError(path, f"must be an object with a \"type\" field; got "
                        f"{type(spec).__name__}")
    entry = _entry(spec, path)
    check_keys(spec, path, {"type", *(f.name for f in entry.fields)})
    values = {f.name: f.parse(spec, path) for f in entry.fields}
    entry.check(values, path)
    return _Plan(entry, values, path)


def _parse_member(spec: Any, path: str) -> _Plan | Callable:
    """A container member: a layer spec, or the name of an activation function."""
    if isinstance(spec, str):
        if spec not in ACTIVATIONS:
            raise SpecError(path, f"must be a layer spec or an activation in "
                            f"{sorted(ACTIVATIONS)}; got {spec!r}{did_you_mean(spec, ACTIVATIONS)}")
        return ACTIVATIONS[spec]
    return _parse(spec, path)


def _members(value: Any) -> Iterator[tuple[str, Any]]:
    """(tree key, item) pairs of a nested field's value; '' for a single item."""
    if isinstance(value, list):
        return ((str(i), v) for i, v in enumerate(value))
    if isinstance(value, dict):
        return iter(value.items())
    return iter((("", value),))


def _planned(plan: _Plan, prefix: str = "") -> Iterator[tuple[str, tuple[int, ...], str, bool,
                                                              str]]:
    """(tree path, shape, dtype, trainable, layer's spec path) of every array to allocate."""
    frozen = plan.entry.cls.nontrainable
    for attr, shape, dtype in plan.entry.arrays(plan.values):
        yield (join(prefix, attr), shape, dtype, attr not in frozen, plan.path)
    for f in plan.entry.fields:
        if not f.nested:
            continue
        for key, item in _members(plan.values[f.name]):
            if isinstance(item, _Plan):
                here = join(prefix, f.name)
                yield from _planned(item, join(here, key) if key else here)


def _build(plan: _Plan, rng: np.random.Generator | None) -> Any:
    def built(v: Any) -> Any:
        if isinstance(v, _Plan):
            return _build(v, rng)
        if isinstance(v, list):
            return [built(e) for e in v]
        if isinstance(v, dict):
            return {k: built(e) for k, e in v.items()}
        return v

    values = {f.name: built(plan.values[f.name]) if f.nested else plan.values[f.name]
              for f in plan.entry.fields}
    try:
        return plan.entry.build(values, rng)
    except SpecError:
        raise
    except ValueError as e:  # a constraint the parse missed: still the user's spec
        raise SpecError(plan.path, str(e)) from e


# --- public API -------------------------------------------------------------------------

def model_from_spec(spec: dict, path: str = "model", *, rng: np.random.Generator | None = None,
                    max_parameters: int | None = None) -> Any:
    """Build a freshly initialised model from its JSON spec.

    The whole spec is validated, and the parameter count checked against
    ``max_parameters``, before any array is allocated. ``rng`` seeds the initialisers
    (Kiln's global generator by default). Raises SpecError naming the bad field's path.
    """
    plan = _parse(spec, path)
    if max_parameters is not None:
        _check_limit(plan, max_parameters)
    return _build(plan, rng)


def _check_limit(plan: _Plan, limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"max_parameters must be a non-negative integer; got {limit!r}")
    per_layer: dict[str, int] = {}
    for _, shape, _, trainable, layer_path in _planned(plan):
        if trainable:
            per_layer[layer_path] = per_layer.get(layer_path, 0) + math.prod(shape)
    total = sum(per_layer.values())
    if total > limit:
        largest = max(per_layer, key=per_layer.__getitem__)
        raise SpecError(plan.path, f"the model has {total:,} parameters, more than the limit "
                        f"of {limit:,} (the largest layer is {largest} with "
                        f"{per_layer[largest]:,})")


def count_parameters(spec: dict, path: str = "model") -> int:
    """The number of trainable parameters the spec's model will have, without building it."""
    return sum(math.prod(shape) for _, shape, _, trainable, _ in _planned(_parse(spec, path))
               if trainable)


def estimate_bytes(spec: dict, path: str = "model") -> int:
    """Bytes of every array the spec's model will hold (parameters and state), unbuilt.

    Training needs more (gradients, optimiser state, activations); this is the floor
    a worker multiplies from.
    """
    return sum(math.prod(shape) * np.dtype(dtype).itemsize
               for _, shape, dtype, _, _ in _planned(_parse(spec, path)))


def model_to_spec(model: Any, path: str = "model") -> dict:
    """The JSON spec of a model's architecture (every field explicit, build-only options
    such as ``init`` left out). SpecError names the path of a part with no spec."""
    if not isinstance(model, Layer):
        raise SpecError(path, f"must be a layer; got {type(model).__name__}")
    return _member_to_spec(model, path)


def _member_to_spec(member: Any, path: str) -> dict | str:
    if not isinstance(member, Layer):
        return function_name(member, path)
    entry = LAYER_SPECS.get(type(member))
    if entry is None:
        raise SpecError(path, f"{type(member).__name__} has no spec; layers with one are "
                        f"{sorted(_by_name())}")
    out: dict[str, Any] = {"type": entry.name}
    for f in entry.fields:
        if f.dump is not None:
            out[f.name] = f.dump(member, path)
    return out


# --- JSON Schema ------------------------------------------------------------------------

def layer_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema definitions of a model spec, from ``LAYER_SPECS``: ``ModelSpec``
    (one of the ``<Type>Layer`` definitions, by ``type``), ``LayerMember`` (what a
    container holds) and ``Activation``. References are to ``#/$defs/<name>``."""
    layers = {e.name: f"{e.name}Layer" for e in LAYER_SPECS.values()}
    out = {"ModelSpec": union("type", layers, "A model: one layer spec, {\"type\": \"Dense\", "
                              "...}; a Chain, Parallel or SkipConnection holds others.")}
    for e in LAYER_SPECS.values():
        out[layers[e.name]] = object_schema(
            "type", e.name, {f.name: f.schema for f in e.fields},
            [f.name for f in e.fields if f.required], summary(e.cls))
    out["LayerMember"] = {"anyOf": [ref("ModelSpec"), ref("Activation")], "description":
                          "a layer spec, or the name of an activation function (\"relu\")"}
    out["Activation"] = {"type": "string", "enum": list(ACTIVATIONS),
                         "description": "an activation function of kiln_engine.activations"}
    return out
