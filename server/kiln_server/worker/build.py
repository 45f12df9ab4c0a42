"""A job spec (the server's ``JobCreate``, as JSON) made into an engine ``Trainer``.

Everything random is drawn from the job's seed, in a fixed order, so two workers that
build the same job get the same initial weights, the same batches and the same dropout
masks; a checkpoint then carries every generator's state on from there. The server has
already validated the spec (services/jobspec.py), so an error here is a bug or a dataset
that changed under the job, and fails the job with its message.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from kiln_engine import losses, model_from_spec, setup, to_device
from kiln_engine import random as kiln_random
from kiln_engine.data import DataLoader
from kiln_engine.optimisers import rule_from_spec
from kiln_engine.schedules import Schedule
from kiln_engine.training import EpochRecord, Trainer, accuracy

__all__ = ["VALIDATION_BATCH", "build_trainer", "load_arrays", "stop_criterion"]

#: Samples per batch when evaluating on the validation set (memory, not results, depends
#: on it: the metrics are weighted by batch size).
VALIDATION_BATCH = 1024


def load_arrays(blob: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of a dataset's .npz (never unpickled); booleans become float32, as the
    server's submission check feeds them to the model."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        out = {k: npz[k] for k in npz.files}
    for k, v in out.items():
        if v.dtype == np.bool_:
            out[k] = v.astype(np.float32)
    if not out:
        raise ValueError(f"{where}: the dataset holds no arrays")
    return out


def stop_criterion(stop: Mapping[str, Any]) -> Callable[[EpochRecord], bool]:
    """``{"metric": "val_accuracy", "at_least": 0.95}`` as a Trainer stop criterion."""
    metric, low, high = stop["metric"], stop.get("at_least"), stop.get("at_most")

    def met(record: EpochRecord) -> bool:
        if metric not in record.metrics:
            raise KeyError(f"stop criterion: the epoch records no {metric!r}; it records "
                           f"{sorted(record.metrics)}")
        value = record.metrics[metric]
        return value >= low if low is not None else value <= high

    return met


def _pair(arrays: Mapping[str, Mapping[str, np.ndarray]], ref: Mapping[str, str], device: str
          ) -> tuple[Any, Any]:
    data = arrays[ref["dataset"]]
    return to_device(data[ref["x"]], device), to_device(data[ref["y"]], device)


def build_trainer(spec: Mapping[str, Any], arrays: Mapping[str, Mapping[str, np.ndarray]],
                  device: str = "cpu") -> Trainer:
    """A fresh trainer for ``spec`` on ``device``; ``arrays`` maps dataset id to its arrays."""
    seed = int(spec["seed"])
    kiln_random.seed(seed)  # Dropout and any layer drawing from the default generator
    model = model_from_spec(spec["model"], "model", rng=np.random.default_rng(seed))
    if device != "cpu":
        model = to_device(model, device)
    opt_state = setup(rule_from_spec(spec["optimiser"], "optimiser"), model)
    fn = getattr(losses, spec["loss"])

    def loss(m: Any, x: Any, y: Any) -> Any:
        return fn(m(x), y)

    loader = DataLoader(_pair(arrays, spec["train"], device), batchsize=int(spec["batch_size"]),
                        shuffle=bool(spec["shuffle"]), rng=seed)
    validation = None
    if spec.get("validation"):
        validation = DataLoader(_pair(arrays, spec["validation"], device),
                                batchsize=VALIDATION_BATCH)
    metrics = {"accuracy": accuracy} if "accuracy" in spec.get("metrics", ()) else {}
    schedules = []
    if spec.get("schedule"):
        schedules.append(("", Schedule.from_spec(spec["schedule"], "schedule")))
    stop = [stop_criterion(spec["stop"])] if spec.get("stop") else []
    return Trainer(loss, model, opt_state, loader, validation=validation, metrics=metrics,
                   schedules=schedules, stop=stop)
