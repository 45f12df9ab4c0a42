"""Shared pieces of Kiln's JSON specs (models, optimiser rules, schedules).

A spec is plain JSON. Validation errors name the path of the bad field, with dots for
object keys and brackets for list positions: ``model.layers.enc.layers[0].out: must be a
positive integer``. Every ``from_spec`` takes the path of its spec so nested errors read
from the root.

Each check also says, as a JSON Schema fragment, which values it accepts (``Field.schema``
of a layer field, :class:`Check` for the hyper-parameters and schedule fields), so the
documented schemas (``json_schema``) are made from the very tables that validate. A
fragment refers to another definition with :func:`ref`. The engine stays the validator:
a fragment may be looser than its check (it cannot say ``smallest <= largest``).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Check", "SpecError", "accepts", "check_keys", "described", "did_you_mean",
           "get_bool", "get_choice", "get_float", "get_int", "integer_schema", "join",
           "number_schema", "object_schema", "ref", "suggest", "summary", "union"]


class SpecError(ValueError):
    """A JSON spec that cannot be built; ``path`` names the field, ``message`` what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def join(path: str, key: str | int) -> str:
    """The path of a child field: ``join('model', 'out')`` -> ``model.out``, ints as ``[i]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_keys(spec: Any, path: str, allowed: set[str] | frozenset[str],
               required: tuple[str, ...] = ()) -> dict:
    """Assert ``spec`` is an object with only ``allowed`` keys and every ``required`` one."""
    if not isinstance(spec, dict):
        raise SpecError(path, f"must be an object; got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise SpecError(join(path, unknown[0]),
                        f"unknown field; valid fields are {sorted(allowed)}")
    for key in required:
        if key not in spec:
            raise SpecError(join(path, key), "is required")
    return spec


def get_int(spec: dict, key: str, path: str, *, default: Any = ..., minimum: int = 1) -> int:
    """An integer field that must be >= ``minimum`` (booleans are not integers)."""
    if key not in spec:
        if default is ...:
            raise SpecError(join(path, key), "is required")
        return default
    v = spec[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SpecError(join(path, key), f"must be {kind}; got {v!r}")
    return v


def get_bool(spec: dict, key: str, path: str, *, default: Any = ...) -> bool:
    """A true/false field (0 and 1 are not booleans)."""
    if key not in spec:
        if default is ...:
            raise SpecError(join(path, key), "is required")
        return default
    v = spec[key]
    if not isinstance(v, bool):
        raise SpecError(join(path, key), f"must be true or false; got {v!r}")
    return v


def get_float(spec: dict, key: str, path: str, *, default: Any = ..., minimum: float = -math.inf,
              maximum: float = math.inf, exclusive_minimum: bool = False,
              exclusive_maximum: bool = False) -> float:
    """A finite number field within [minimum, maximum]; either end may be open."""
    if key not in spec:
        if default is ...:
            raise SpecError(join(path, key), "is required")
        return default
    v = spec[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise SpecError(join(path, key), f"must be a finite number; got {v!r}")
    low_ok = v > minimum if exclusive_minimum else v >= minimum
    high_ok = v < maximum if exclusive_maximum else v <= maximum
    if not (low_ok and high_ok):
        lo = "(" if exclusive_minimum else "["
        hi = ")" if exclusive_maximum else "]"
        raise SpecError(join(path, key), f"must be in {lo}{minimum}, {maximum}{hi}; got {v!r}")
    return float(v)


def suggest(value: Any, choices: Iterable[str],
            aliases: Mapping[str, str] | None = None) -> str | None:
    """The choice ``value`` most likely meant, or None: the same name in another case
    (``adam`` for ``Adam``), a known other name (``aliases``, keyed in lower case: ``sgd``
    for ``Descent``), or a close spelling (``Adamm``)."""
    if not isinstance(value, str):
        return None
    folded = {name.lower(): name for name in choices}
    key = value.lower()
    if key in folded:
        return folded[key]
    if aliases and key in aliases:
        return aliases[key]
    near = difflib.get_close_matches(key, list(folded), n=1)
    return folded[near[0]] if near else None


def did_you_mean(value: Any, choices: Iterable[str],
                 aliases: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'Adam'?)`` to end an error message with, or '' (see :func:`suggest`)."""
    near = suggest(value, choices, aliases)
    return f" (did you mean {near!r}?)" if near is not None else ""


def get_choice(spec: dict, key: str, path: str, choices: dict[str, Any] | list[str], *,
               default: Any = ..., aliases: Mapping[str, str] | None = None) -> Any:
    """A string field naming one of ``choices``; returns the chosen value (or name). The
    error suggests the choice meant (see :func:`suggest`; ``aliases`` as there)."""
    if key not in spec:
        if default is ...:
            raise SpecError(join(path, key), "is required")
        return default
    v = spec[key]
    if not isinstance(v, str) or v not in choices:
        raise SpecError(join(path, key), f"must be one of {sorted(choices)}; got {v!r}"
                        f"{did_you_mean(v, choices, aliases)}")
    return choices[v] if isinstance(choices, dict) else v


# --- JSON Schema fragments --------------------------------------------------------------

def ref(name: str) -> dict[str, Any]:
    """A reference to the spec schemas' definition ``name`` (``json_schema`` rewrites the
    ``#/$defs/`` prefix where the definitions live elsewhere, e.g. OpenAPI components)."""
    return {"$ref": f"#/$defs/{name}"}


def described(schema: dict[str, Any], description: str | None = None,
              default: Any = ...) -> dict[str, Any]:
    """``schema`` with a description and a default (``...``: none), where given."""
    out = dict(schema)
    if description:
        out["description"] = description
    if default is not ...:
        out["default"] = default
    return out


def integer_schema(minimum: int = 1) -> dict[str, Any]:
    """What :func:`get_int` accepts."""
    return {"type": "integer", "minimum": minimum}


def number_schema(*, minimum: float = -math.inf, maximum: float = math.inf,
                  exclusive_minimum: bool = False,
                  exclusive_maximum: bool = False) -> dict[str, Any]:
    """What :func:`get_float` accepts with the same bounds (infinite ends are left out)."""
    out: dict[str, Any] = {"type": "number"}
    if math.isfinite(minimum):
        out["exclusiveMinimum" if exclusive_minimum else "minimum"] = minimum
    if math.isfinite(maximum):
        out["exclusiveMaximum" if exclusive_maximum else "maximum"] = maximum
    return out


@dataclass(frozen=True)
class Check:
    """A field check (called as the function it wraps) and the JSON Schema of the values
    it accepts."""

    fn: Callable[..., Any]
    schema: dict[str, Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def accepts(schema: dict[str, Any]) -> Callable[[Callable[..., Any]], Check]:
    """Decorator: the function as a :class:`Check` whose values ``schema`` describes."""
    return lambda fn: Check(fn, schema)


def object_schema(kind_key: str, kind: str, properties: dict[str, dict[str, Any]],
                  required: Iterable[str], description: str) -> dict[str, Any]:
    """One variant of a tagged union: ``{kind_key: kind, ...properties}``, nothing else
    (``check_keys`` refuses unknown fields)."""
    return {"type": "object", "description": description,
            "properties": {kind_key: {"const": kind}, **properties},
            "required": [kind_key, *required], "additionalProperties": False}


def union(kind_key: str, variants: Mapping[str, str], description: str) -> dict[str, Any]:
    """One of ``variants`` (``{kind: definition name}``), told apart by ``kind_key``; the
    ``discriminator`` is OpenAPI's (JSON Schema validators take it as an annotation)."""
    return {"description": description, "oneOf": [ref(d) for d in variants.values()],
            "discriminator": {"propertyName": kind_key, "mapping": {
                kind: ref(d)["$ref"] for kind, d in variants.items()}}}


def summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring on one line, without reST backquotes."""
    first = (inspect.getdoc(obj) or "").split("\n\n")[0]
    return " ".join(first.split()).replace("``", "")
