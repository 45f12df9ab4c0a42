"""Everything about a job spec is checked here, with the engine, before it is queued.

The engine validates the model, optimiser and schedule specs (``SpecError`` names the
field); the model's parameter count and memory are checked against the limits before
a single array is allocated; then the model is built and run forward on one sample of
zeros shaped like the training inputs, and the loss on that output and one target, so a
dataset that does not fit the model, or a loss that does not fit its output, is refused
at submission rather than on a worker. Class labels are checked against the model's
output classes from the range the dataset recorded at upload (for datasets uploaded since
it is recorded). Each failure is an :class:`InvalidError` naming the field.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
from kiln_engine import SpecError, leaves, losses, near_paths
from kiln_engine.optimisers import Leaf, Rule, adjust, rule_from_spec
from kiln_engine.optimisers.spec import hyper_from_json, json_names, rule_to_spec
from kiln_engine.schedules import Schedule
from kiln_engine.serialise import count_parameters, estimate_bytes, model_from_spec

from ..errors import InvalidError, loc
from ..models import Dataset
from ..schemas import DataRef, JobCreate
from ..settings import Settings

__all__ = ["BINARY_LABEL_LOSSES", "CLASS_LABEL_LOSSES", "LOSSES", "TRAINING_MEMORY_FACTOR",
           "Checked", "check_control", "check_job", "initial_state"]

#: Losses a job may name: every loss of kiln_engine.losses that takes (yhat, y).
LOSSES = tuple(n for n in losses.__all__ if n != "label_smoothing")

#: Losses that take integer class labels, one per sample, over the output's last axis
#: (kiln_engine.losses: "integer class labels"): a label must be 0 .. classes - 1.
CLASS_LABEL_LOSSES = ("crossentropy", "logitcrossentropy", "focal_loss")
#: Losses whose targets, shaped like the output, are 0 or 1.
BINARY_LABEL_LOSSES = ("binarycrossentropy", "logitbinarycrossentropy", "binary_focal_loss",
                       "siamese_contrastive_loss")

#: Training memory per byte of model: the arrays, their gradients and two optimiser
#: moments (Adam's), a floor the activations add to.
TRAINING_MEMORY_FACTOR = 4


@dataclass(frozen=True)
class Checked:
    """What submission learns about a valid job."""

    parameters: int
    paths: list[str]  # every subtree of the optimiser state, '' first
    dataset_ids: list[str]


def _spec_error(e: SpecError) -> InvalidError:
    return InvalidError(loc(e.path), e.message)


def _arrays(ref: DataRef, where: str, datasets: dict[str, Dataset]) -> tuple[dict, dict, int]:
    """The x and y array records of a data reference, and its number of samples."""
    ds = datasets.get(ref.dataset)
    if ds is None:
        raise InvalidError(["body", where, "dataset"], f"no dataset {ref.dataset!r}; upload one "
                           f"with POST /v1/datasets")
    by_name = {a["name"]: a for a in ds.arrays}
    picked = []
    for field in ("x", "y"):
        name = getattr(ref, field)
        if name not in by_name:
            raise InvalidError(["body", where, field], f"dataset {ds.id!r} has no array {name!r}; "
                               f"it has {sorted(by_name)}")
        picked.append(by_name[name])
    x, y = picked
    if x["shape"][0] != y["shape"][0]:
        raise InvalidError(["body", where], f"{ref.x!r} has {x['shape'][0]} samples but {ref.y!r} "
                           f"has {y['shape'][0]}; they must match")
    return x, y, x["shape"][0]


def _sample(record: dict) -> np.ndarray:
    """One sample of zeros shaped and typed like an array record (booleans as float32)."""
    dtype = np.float32 if record["dtype"] == "bool" else np.dtype(record["dtype"])
    return np.zeros((1, *record["shape"][1:]), dtype=dtype)


def _check_model(job: JobCreate, settings: Settings) -> tuple[Any, int]:
    try:
        n = count_parameters(job.model, "model")
        if n > settings.max_parameters:
            raise InvalidError(["body", "model"], f"the model has {n:,} parameters, more than the "
                               f"limit of {settings.max_parameters:,}")
        need = TRAINING_MEMORY_FACTOR * estimate_bytes(job.model, "model")
        if need > settings.max_model_bytes:
            raise InvalidError(["body", "model"], f"training the model needs about {need:,} bytes, "
                               f"more than the limit of {settings.max_model_bytes:,}")
        model = model_from_spec(job.model, "model", rng=np.random.default_rng(job.seed),
                                max_parameters=settings.max_parameters)
    except SpecError as e:
        raise _spec_error(e) from None
    return model, n


def _check_fit(model: Any, job: JobCreate, x: dict, y: dict) -> np.ndarray:
    """Run the model on one sample and the loss on its output; the output."""
    try:
        yhat = model(_sample(x))
    except (ValueError, TypeError, IndexError) as e:
        raise InvalidError(["body", "train", "x"], f"the model does not accept inputs shaped "
                           f"{['batch', *x['shape'][1:]]} ({x['dtype']}): {e}") from None
    try:
        value = getattr(losses, job.loss)(yhat, _sample(y))
    except (ValueError, TypeError, IndexError) as e:
        raise InvalidError(["body", "loss"], f"{job.loss} does not fit the model's output shaped "
                           f"{['batch', *np.shape(yhat)[1:]]} and targets shaped "
                           f"{['batch', *y['shape'][1:]]} ({y['dtype']}): {e}") from None
    if np.ndim(value) != 0:
        raise InvalidError(["body", "loss"], f"{job.loss} must reduce to a number; got shape "
                           f"{np.shape(value)}")
    return np.asarray(yhat)


def _are_labels(y: dict, yhat: np.ndarray) -> bool:
    """Whether the targets ``y`` are integer class labels of the scores ``yhat``."""
    return yhat.ndim >= 2 and y["dtype"] != "bool" and np.dtype(y["dtype"]).kind in "iu" \
        and y["shape"][1:] == list(yhat.shape[1:-1])


def _check_labels(job: JobCreate, yhat: np.ndarray, y: dict, where: str) -> None:
    """Refuse targets whose recorded range holds a label the loss cannot take."""
    if y.get("min") is None:  # floats, or uploaded before ranges were recorded
        return
    if job.loss in CLASS_LABEL_LOSSES and _are_labels(y, yhat):
        classes = yhat.shape[-1]
        fits = f"the model has {classes} output classes (0..{classes - 1})"
    elif job.loss in BINARY_LABEL_LOSSES:
        classes, fits = 2, f"{job.loss} takes labels 0 and 1"
    else:
        return
    if y["min"] < 0 or y["max"] >= classes:
        raise InvalidError(["body", where, "y"], f"labels range over [{y['min']}, {y['max']}] "
                           f"but {fits}")


def _check_accuracy(job: JobCreate, yhat: np.ndarray, y: dict) -> None:
    labels = _are_labels(y, yhat)
    onehot = y["shape"][1:] == list(yhat.shape[1:])
    if yhat.ndim < 2 or not (labels or onehot):
        raise InvalidError(["body", "metrics"], f"accuracy needs class scores shaped (batch, "
                           f"classes) and integer labels or one-hot targets; the model gives "
                           f"{list(yhat.shape)} for targets {y['shape']} ({y['dtype']})")


def _check_stop(job: JobCreate) -> None:
    metric = job.stop.metric
    if metric.startswith("val_") and job.validation is None:
        raise InvalidError(["body", "stop", "metric"], f"{metric} needs a validation set")
    if metric.endswith("accuracy") and "accuracy" not in job.metrics:
        raise InvalidError(["body", "stop", "metric"], f"{metric} needs \"accuracy\" in metrics")


def optimiser_paths(model: Any) -> list[str]:
    """Every subtree path of the optimiser state (parents of trainable float arrays)."""
    out = {""}
    for path, arr in leaves(model):
        if np.dtype(arr.dtype).kind in "fc":
            parts = path.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(out, key=lambda p: (p.count("."), p) if p else (-1, ""))


def check_job(job: JobCreate, datasets: dict[str, Dataset], settings: Settings) -> Checked:
    """Validate a job against the engine, its datasets and the limits (InvalidError if not)."""
    if job.batch_size > settings.max_batch_size:
        raise InvalidError(["body", "batch_size"], f"must be at most {settings.max_batch_size}; "
                           f"got {job.batch_size}")
    if job.epochs > settings.max_epochs:
        raise InvalidError(["body", "epochs"], f"must be at most {settings.max_epochs}; got "
                           f"{job.epochs}")
    if job.loss not in LOSSES:
        near = difflib.get_close_matches(job.loss, LOSSES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise InvalidError(["body", "loss"], f"must be one of {sorted(LOSSES)}; got "
                           f"{job.loss!r}{hint}")
    x, y, _ = _arrays(job.train, "train", datasets)
    vy = None
    if job.validation is not None:
        vx, vy, _ = _arrays(job.validation, "validation", datasets)
        for field, a, b in (("x", x, vx), ("y", y, vy)):
            if a["shape"][1:] != b["shape"][1:]:
                raise InvalidError(["body", "validation", field], f"samples shaped {b['shape'][1:]}"
                                   f" do not match the training set's {a['shape'][1:]}")
    try:
        rule_from_spec(job.optimiser, "optimiser")
        if job.schedule is not None:
            Schedule.from_spec(job.schedule, "schedule")
    except SpecError as e:
        raise _spec_error(e) from None
    if job.stop is not None:
        _check_stop(job)
    model, n = _check_model(job, settings)
    yhat = _check_fit(model, job, x, y)
    _check_labels(job, yhat, y, "train")
    if vy is not None:
        _check_labels(job, yhat, vy, "validation")
    if "accuracy" in job.metrics:
        _check_accuracy(job, yhat, y)
    ids = sorted({job.train.dataset} | ({job.validation.dataset} if job.validation else set()))
    return Checked(parameters=n, paths=optimiser_paths(model), dataset_ids=ids)


def check_control(kind: str, path: str, hyper: dict[str, Any], paths: list[str],
                  optimiser: dict[str, Any]) -> None:
    """An adjust/freeze/thaw the worker will be able to apply (InvalidError naming the field)."""
    if path not in paths:
        near = near_paths(path, paths)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        raise InvalidError(["body", "path"], f"the model has no trainable subtree at "
                           f"{path!r}{hint} (valid paths: {paths[:20]}"
                           f"{' …' if len(paths) > 20 else ''})")
    if kind == "adjust":
        rule: Rule = rule_from_spec(optimiser, "optimiser")
        # On a stand-in leaf, the checks the worker's adjust will make: each field alone
        # first, so that a bad one is named, then all together.
        for where, fields in [*((["body", "hyper", k], {k: v}) for k, v in hyper.items()),
                              (["body", "hyper"], hyper)]:
            try:
                adjust(Leaf(rule, None), **hyper_from_json(fields))
            except (ValueError, TypeError) as e:
                raise InvalidError(where, json_names(str(e).removeprefix("adjust: "))) from None


def initial_state(spec: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The optimiser tree a job starts with, as a worker reports it (per parameter path:
    the rule's spec, not frozen, the fields a schedule drives): what the job's state is
    until its worker's first report."""
    parents = {p.rpartition(".")[0] for p in paths if p}
    rule = rule_to_spec(rule_from_spec(spec["optimiser"], "optimiser"))
    scheduled = {"eta": ""} if spec.get("schedule") else {}
    return {p: {"rule": rule, "frozen": False, "scheduled": dict(scheduled)}
            for p in paths if p and p not in parents}
