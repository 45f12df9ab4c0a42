"""Shared pieces of Kiln's JSON specs (models, optimiser rules, schedules).

A spec is plain JSON. Validation errors name the path of the bad field, with dots for
object keys and brackets for list positions: ``model.layers.enc.layers[0].out: must be a
positive integer``. Every ``from_spec`` takes the path of its spec so nested errors read
from the root.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SpecError", "check_keys", "get_bool", "get_choice", "get_float", "get_int", "join"]


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


def get_choice(spec: dict, key: str, path: str, choices: dict[str, Any] | list[str], *,
               default: Any = ...) -> Any:
    """A string field naming one of ``choices``; returns the chosen value (or name)."""
    if key not in spec:
        if default is ...:
            raise SpecError(join(path, key), "is required")
        return default
    v = spec[key]
    if not isinstance(v, str) or v not in choices:
        raise SpecError(join(path, key), f"must be one of {sorted(choices)}; got {v!r}")
    return choices[v] if isinstance(choices, dict) else v
