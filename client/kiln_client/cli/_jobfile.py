"""A job file for ``kiln submit`` (the JSON body of ``POST /v1/jobs``, written as JSON or
YAML) and the command line's overrides of its common fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._spec import parse_stop
from ._errors import CliError

__all__ = ["read_job_file", "with_dataset", "with_eta", "with_stop"]


def _parse(path: Path, text: str) -> Any:
    """The file's value: JSON for a .json file, else YAML (of which JSON is a part)."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as e:
            raise CliError(f"{path}: not valid JSON: {e}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CliError(f"{path}: not valid YAML{where}: "
                       f"{getattr(e, 'problem', None) or e}") from None


def read_job_file(path: Path) -> dict[str, Any]:
    """The job the file describes, as an object; CliError (exit 2) naming the file when
    it cannot be read, parsed, or holds something else than an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{path}: cannot read it: {getattr(e, 'strerror', None) or e}"
                       ) from None
    job = _parse(path, text)
    if not isinstance(job, dict):
        raise CliError(f"{path}: a job file holds one object (model, optimiser, loss, "
                       f"train, batch_size, epochs, ...); got {type(job).__name__}")
    return job


def with_stop(job: dict[str, Any], stop: str) -> dict[str, Any]:
    """The job with ``stop`` from ``--stop "val_accuracy>=0.97"``."""
    try:
        return {**job, "stop": parse_stop(stop)}
    except ValueError as e:
        raise CliError(f"--stop: {e}") from None


def with_dataset(job: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    """The job training on ``dataset_id``, and validating on it too when its validation
    names no dataset of its own."""
    train = job.get("train")
    out = {**job, "train": {**train, "dataset": dataset_id} if isinstance(train, dict)
           else {"dataset": dataset_id}}
    validation = job.get("validation")
    if isinstance(validation, dict) and not validation.get("dataset"):
        out["validation"] = {**validation, "dataset": dataset_id}
    return out


def _has_eta(rule_name: Any) -> bool:
    """Whether the engine's rule of that name has an eta (an unknown name is left for the
    server to refuse, with its 'did you mean')."""
    from kiln_engine.optimisers.spec import RULES

    cls = RULES.get(rule_name) if isinstance(rule_name, str) else None
    return cls is None or "eta" in cls.hypernames()


def _set_eta(rule: Any, eta: float) -> tuple[Any, int]:
    """The rule spec with eta set on each rule in it that has one, and how many."""
    if not isinstance(rule, dict):
        return rule, 0
    if rule.get("rule") == "OptimiserChain" and isinstance(rule.get("rules"), list):
        members = [_set_eta(r, eta) for r in rule["rules"]]
        return {**rule, "rules": [r for r, _ in members]}, sum(n for _, n in members)
    return ({**rule, "eta": eta}, 1) if _has_eta(rule.get("rule")) else (rule, 0)


def with_eta(job: dict[str, Any], eta: float) -> dict[str, Any]:
    """The job with the optimiser's learning rate set: on the rule, or in a chain on each
    member that has an eta (as ``adjust`` does); CliError if none has one. A job with no
    optimiser is left for the server to refuse."""
    if "optimiser" not in job:
        return job
    optimiser, count = _set_eta(job.get("optimiser"), eta)
    if count == 0:
        raise CliError("--eta: the job's optimiser has no rule with an eta (a learning "
                       "rate)")
    return {**job, "optimiser": optimiser}
