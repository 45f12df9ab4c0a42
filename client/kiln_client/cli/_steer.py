"""Steering a job: ``kiln adjust``, ``freeze``, ``thaw`` (controls, applied by the worker
at the next step boundary) and ``pause``, ``resume``, ``cancel``."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from .._client import Job
from .._progress import format_control
from .._types import Control
from ._errors import CliError
from ._jobs import JobId
from ._output import JsonFlag, emit_json, job_state, say
from ._session import connect

__all__ = ["HYPER_ARGS", "adjust", "cancel", "freeze", "parse_hyper", "pause", "resume",
           "thaw"]

#: ``adjust`` takes any ``--NAME VALUE`` as a hyper-parameter, so Click must pass options
#: it does not know on to the command.
HYPER_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _scalar(name: str, text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("inf", "+inf", "-inf"):  # JSON has no infinity; specs spell it "inf"
        return "-inf" if low.startswith("-") else "inf"
    try:
        return int(low)
    except ValueError:
        pass
    try:
        value = float(low)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CliError(f"--{name}: expected a number, true, false or inf; got {text!r}")
    return value


def parse_hyper(args: list[str]) -> dict[str, Any]:
    """``--eta 0.01 --beta 0.8,0.99 --lambda=1e-4`` -> ``{"eta": 0.01, "beta": [0.8,
    0.99], "lambda": 0.0001}``: a comma list is a list, and names are JSON's."""
    hyper: dict[str, Any] = {}
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("--") or len(arg) == 2:
            raise CliError(f"expected a hyper-parameter as --NAME VALUE; got {arg!r}")
        name, eq, text = arg[2:].partition("=")
        if not eq:
            text = next(rest, None)
            if text is None:
                raise CliError(f"--{name} needs a value")
        values = [_scalar(name, t) for t in text.split(",")]
        hyper[name] = values if "," in text else values[0]
    return hyper


def _print_control(control: Control, json: bool) -> None:
    if json:
        emit_json(control.raw)
    else:
        say(format_control(control.raw))


def adjust(ctx: typer.Context, job_id: JobId,
           path: Annotated[str, typer.Option(help="The subtree, e.g. layers.enc; the whole "
                                             "model by default.")] = "",
           json: JsonFlag = False) -> None:
    """Change hyper-parameters from the next step: kiln adjust ID --eta 0.001, or
    --path layers.enc --eta 0.01 --beta 0.8,0.99 (any --NAME VALUE: numbers, comma
    lists, true/false, inf)."""
    hyper = parse_hyper(ctx.args)
    if not hyper:
        raise CliError("adjust needs at least one hyper-parameter, e.g. --eta 0.001")
    _print_control(connect(ctx).jobs.get(job_id).adjust(path, **hyper), json)


def freeze(ctx: typer.Context, job_id: JobId,
           path: Annotated[str, typer.Argument(help="The subtree, e.g. layers.enc.")],
           json: JsonFlag = False) -> None:
    """Stop updating a subtree from the next step."""
    _print_control(connect(ctx).jobs.get(job_id).freeze(path), json)


def thaw(ctx: typer.Context, job_id: JobId,
         path: Annotated[str, typer.Argument(help="The subtree; everything by "
                                             "default.")] = "",
         json: JsonFlag = False) -> None:
    """Update a frozen subtree again (everything when no PATH)."""
    _print_control(connect(ctx).jobs.get(job_id).thaw(path), json)


def _print_job(job: Job, json: bool) -> None:
    if json:
        emit_json(job.data)
    else:
        say(f"job {job.id} {job_state(job.data)}")


def pause(ctx: typer.Context, job_id: JobId, json: JsonFlag = False) -> None:
    """Pause a job: its worker checkpoints and lets it go (shown as requested until
    then)."""
    _print_job(connect(ctx).jobs.get(job_id).pause(), json)


def resume(ctx: typer.Context, job_id: JobId, json: JsonFlag = False) -> None:
    """Queue a paused job again; it continues from its checkpoint."""
    _print_job(connect(ctx).jobs.get(job_id).resume(), json)


def cancel(ctx: typer.Context, job_id: JobId, json: JsonFlag = False) -> None:
    """Cancel a job (a running one shows cancel requested until its worker stops)."""
    _print_job(connect(ctx).jobs.get(job_id).cancel(), json)
