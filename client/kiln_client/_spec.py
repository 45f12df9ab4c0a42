"""Job arguments, as a user writes them in Python, made into the server's JSON.

The engine is the shared language: a ``kiln_engine`` model, rule, loss function or
schedule is serialised with the engine's own spec functions (imported only when such an
object is given, so ``import kiln_client`` stays light). Plain dicts pass through as
specs; the server validates everything and names any bad field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._types import Dataset

__all__ = ["data_ref", "hyper_to_json", "job_body", "loss_name", "parse_stop"]

#: JSON spells hyper-parameters as Optimisers.jl does; Python keywords get a trailing
#: underscore (``lambda_``), as ``kiln_engine.adjust`` takes them.
_KEYWORDS = {"lambda_": "lambda"}


def hyper_to_json(hyper: Mapping[str, Any]) -> dict[str, Any]:
    """``adjust``'s keyword arguments as JSON: ``lambda_`` -> ``lambda``, tuples -> lists."""
    return {_KEYWORDS.get(k, k): list(v) if isinstance(v, tuple) else v
            for k, v in hyper.items()}


def _model_spec(model: Any) -> dict[str, Any]:
    if isinstance(model, Mapping):
        return dict(model)
    from kiln_engine.serialise import model_to_spec

    return model_to_spec(model)


def _rule_spec(rule: Any) -> dict[str, Any]:
    if isinstance(rule, Mapping):
        return dict(rule)
    from kiln_engine.optimisers.spec import rule_to_spec

    return rule_to_spec(rule)


def _schedule_spec(schedule: Any) -> dict[str, Any]:
    if isinstance(schedule, Mapping):
        return dict(schedule)
    to_spec = getattr(schedule, "to_spec", None)
    if to_spec is None:
        raise TypeError(f"schedule must be a kiln_engine.schedules schedule or a spec dict; "
                        f"got {type(schedule).__name__}")
    return to_spec()


def loss_name(loss: Any) -> str:
    """A loss by name, or a function of ``kiln_engine.losses`` as its name."""
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "__name__", None)
    from kiln_engine import losses

    if name is None or getattr(losses, name, None) is not loss:
        raise TypeError(f"loss must be the name or a function of kiln_engine.losses "
                        f"(e.g. losses.logitcrossentropy); got {loss!r}")
    return name


def data_ref(data: Any, where: str) -> dict[str, str]:
    """A job's ``train`` / ``validation``: a Dataset or dataset id (arrays ``x`` and
    ``y``), a ``(dataset, x_name, y_name)`` tuple, or a ``{"dataset", "x", "y"}`` dict."""
    if isinstance(data, Mapping):
        return dict(data)
    x, y = "x", "y"
    if isinstance(data, tuple):
        if len(data) != 3:
            raise TypeError(f"{where} must be (dataset, x_name, y_name); got a tuple of "
                            f"{len(data)}")
        data, x, y = data
    if isinstance(data, Dataset):
        data = data.id
    if not isinstance(data, str):
        raise TypeError(f"{where} must be a Dataset, a dataset id, (dataset, x_name, y_name) "
                        f"or a dict; got {type(data).__name__}")
    return {"dataset": data, "x": x, "y": y}


_STOP = re.compile(r"^\s*(\w+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


def parse_stop(stop: str | Mapping[str, Any]) -> dict[str, Any]:
    """A stop criterion: a dict as the API takes it, or ``"val_accuracy>=0.97"`` /
    ``"val_loss<=0.1"``."""
    if isinstance(stop, Mapping):
        return dict(stop)
    m = _STOP.match(stop)
    if m is None:
        raise ValueError(f"stop must look like 'val_accuracy>=0.97' or 'val_loss<=0.1'; "
                         f"got {stop!r}")
    metric, op, value = m.groups()
    return {"metric": metric, "at_least" if op == ">=" else "at_most": float(value)}


def job_body(*, model: Any, optimiser: Any, loss: Any, train: Any, batch_size: int,
             epochs: int, validation: Any = None, seed: int = 0,
             metrics: list[str] | tuple[str, ...] | None = None, stop: Any = None,
             schedule: Any = None, shuffle: bool = True, name: str | None = None,
             device: str | None = None) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs``."""
    body: dict[str, Any] = {
        "model": _model_spec(model), "optimiser": _rule_spec(optimiser),
        "loss": loss_name(loss), "train": data_ref(train, "train"),
        "batch_size": batch_size, "epochs": epochs, "seed": seed, "shuffle": shuffle}
    if validation is not None:
        body["validation"] = data_ref(validation, "validation")
    if metrics is not None:
        body["metrics"] = list(metrics)
    if stop is not None:
        body["stop"] = parse_stop(stop)
    if schedule is not None:
        body["schedule"] = _schedule_spec(schedule)
    if name is not None:
        body["name"] = name
    if device is not None:
        body["device"] = device
    return body
