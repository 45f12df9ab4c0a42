"""A job's spec as a person reads it: the model's layers, the optimiser, the data and the
stopping rule, each from the JSON the server holds (no engine needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["data_text", "layer_lines", "rule_text", "stop_text"]


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _is_layer(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def _children(spec: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The layers a layer spec holds, with their model paths (``layers.enc``)."""
    for key, value in spec.items():
        where = _join(path, key)
        if _is_layer(value):
            yield where, value
        elif isinstance(value, dict):
            yield from ((_join(where, k), v) for k, v in value.items() if _is_layer(v))
        elif isinstance(value, list):
            yield from ((_join(where, i), v) for i, v in enumerate(value) if _is_layer(v))


def layer_lines(spec: dict[str, Any], path: str = "") -> list[str]:
    """One line per layer that holds no other: ``layers.enc  Dense  in=64 out=32
    activation=relu`` (containers such as Chain show through their members' paths)."""
    children = list(_children(spec, path))
    if children:
        return [line for where, child in children for line in layer_lines(child, where)]
    settings = " ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
    return ["  ".join(p for p in (path or "(model)", str(spec.get("type")), settings) if p)]


def rule_text(rule: Any) -> str:
    """``OptimiserChain(WeightDecay(lambda=0.0001), Adam(eta=0.001))``."""
    if not isinstance(rule, dict):
        return str(rule)
    name = rule.get("rule", "?")
    if name == "OptimiserChain":
        inner = ", ".join(rule_text(r) for r in rule.get("rules") or [])
    else:
        inner = ", ".join(f"{k}={v}" for k, v in rule.items() if k != "rule")
    return f"{name}({inner})"


def data_text(ref: dict[str, Any] | None) -> str:
    """``DATASET_ID (x=x, y=y)``; '-' for none."""
    if not ref:
        return "-"
    return f"{ref.get('dataset')} (x={ref.get('x', 'x')}, y={ref.get('y', 'y')})"


def stop_text(stop: dict[str, Any] | None) -> str:
    """``val_accuracy >= 0.97``; '-' for none."""
    if not stop:
        return "-"
    if stop.get("at_least") is not None:
        return f"{stop.get('metric')} >= {stop['at_least']}"
    return f"{stop.get('metric')} <= {stop.get('at_most')}"
