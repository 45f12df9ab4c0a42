"""The OpenAPI document, with the engine's JSON Schemas of the specs a job carries.

FastAPI writes the document from the routes and the pydantic schemas; this adds the
engine's schemas of the model, optimiser and schedule specs (``kiln_engine.json_schema``:
``ModelSpec``, ``OptimiserSpec``, ``ScheduleSpec`` and what they refer to) among its
schemas, and turns each place ``schemas.py`` marked as a spec into a reference to them,
so /docs shows the spec formats and a client generator sees them. The engine, not these
schemas, validates a submitted spec. ``JobCreate`` gets its example here too: pydantic
would sort the keys of an example it writes, and a Chain's order is its layers' order.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from kiln_engine.json_schema import spec_definitions

from .schemas import EXAMPLE_JOB, SPEC_MARK

__all__ = ["document_specs"]

_SCHEMAS = "#/components/schemas/"


def _referenced(node: Any) -> Any:
    """``node`` with every ``{SPEC_MARK: name, ...}`` made ``{"$ref": name's schema, ...}``."""
    if isinstance(node, list):
        return [_referenced(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _referenced(v) for k, v in node.items() if k != SPEC_MARK}
    if SPEC_MARK in node:
        out = {"$ref": _SCHEMAS + node[SPEC_MARK], **out}
    return out


def document_specs(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document carry the engine's spec schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            schemas = doc["components"]["schemas"]
            specs = spec_definitions(_SCHEMAS)
            clash = sorted(set(specs) & set(schemas))
            if clash:
                raise RuntimeError(f"the engine's spec schemas {clash} share the names of "
                                   f"the API's own schemas")
            schemas = _referenced(schemas)
            schemas["JobCreate"]["examples"] = [EXAMPLE_JOB]
            doc["components"]["schemas"] = {**schemas, **specs}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
