"""JSON Schemas of the model, optimiser and schedule specs (draft 2020-12, as OpenAPI 3.1).

They are assembled from the tables that validate the specs, so the two cannot drift: each
layer's fields in ``serialise.LAYER_SPECS`` carry their schema, each rule's
hyper-parameters are checked through ``optimisers.CHECKS`` (each check with its schema),
and each schedule through its ``checks``. The engine stays the validator, with the path
and a precise message: a schema gives the shapes, types and ranges, not every relation
between fields (a Conv's ``groups`` must divide its ``in``).

    import jsonschema
    jsonschema.validate(model_to_spec(model), model_schema())
    spec_definitions("#/components/schemas/")   # every definition, for an OpenAPI document

The definitions: ``ModelSpec`` (one of the ``<Type>Layer`` definitions, told apart by
``type``; containers hold a ``LayerMember``: a layer, or an ``Activation`` by name),
``OptimiserSpec`` (one of the ``<Rule>Rule`` definitions, by ``rule``; an
``OptimiserChainRule`` holds others) and ``ScheduleSpec`` (``<Type>Schedule``, by ``type``).
"""

from __future__ import annotations

from typing import Any

from .optimisers.spec import rule_schemas
from .schedules import schedule_schemas
from .serialise.spec import layer_schemas

__all__ = ["DIALECT", "model_schema", "optimiser_schema", "schedule_schema", "spec_definitions"]

#: The JSON Schema dialect of every schema here (OpenAPI 3.1's default).
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_DEFS = "#/$defs/"


def _rebased(node: Any, prefix: str) -> Any:
    """``node`` with every reference to ``#/$defs/<name>`` pointing at ``prefix<name>``."""
    if isinstance(node, dict):
        return {k: _rebased(v, prefix) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebased(v, prefix) for v in node]
    if isinstance(node, str) and node.startswith(_DEFS):
        return prefix + node.removeprefix(_DEFS)
    return node


def spec_definitions(ref_prefix: str = _DEFS) -> dict[str, dict[str, Any]]:
    """Every definition of the three specs by name, their references starting with
    ``ref_prefix`` (``"#/components/schemas/"`` to put them in an OpenAPI document)."""
    return _rebased({**layer_schemas(), **rule_schemas(), **schedule_schemas()}, ref_prefix)


def _document(root: str, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"$schema": DIALECT, "$ref": _DEFS + root, "$defs": defs}


def model_schema() -> dict[str, Any]:
    """The JSON Schema of a model spec (``model_to_spec`` / ``model_from_spec``)."""
    return _document("ModelSpec", layer_schemas())


def optimiser_schema() -> dict[str, Any]:
    """The JSON Schema of an optimiser spec (``rule_to_spec`` / ``rule_from_spec``)."""
    return _document("OptimiserSpec", rule_schemas())


def schedule_schema() -> dict[str, Any]:
    """The JSON Schema of a schedule spec (``Schedule.to_spec`` / ``Schedule.from_spec``)."""
    return _document("ScheduleSpec", schedule_schemas())
