"""``kiln logs ID [-f]`` and ``kiln watch ID``: a job's epoch rows and controls, and its
progress live, from the job's event stream (which the SDK reopens where it left off if
the connection drops)."""

from __future__ import annotations

import json as json_module
import math
import sys
from typing import Annotated, Any

import typer

from .._client import Job
from .._progress import format_control, format_epoch
from .._types import Control, EpochRow
from ._errors import EXIT_API, CliError
from ._jobs import JobId
from ._output import JsonFlag, emit_json, say
from ._session import connect

__all__ = ["logs", "merged", "wait_for", "watch"]

#: Controls that act on the steps that follow them (their applied_epoch is the epoch
#: they first trained in); the others (pause, resume, cancel) report epochs completed.
_STEP_CONTROLS = frozenset({"adjust", "freeze", "thaw"})


def _after_epoch(c: Control) -> float:
    """The epoch row a control's line follows (0: before the first; pending and rejected
    ones after the last)."""
    if c.applied_epoch is None:
        return math.inf
    return c.applied_epoch - 1 if c.kind in _STEP_CONTROLS else c.applied_epoch


def merged(rows: list[EpochRow], controls: list[Control], total: int) -> list[str]:
    """Epoch rows and controls as lines, in the order they happened: an applied control
    just before the first epoch it shaped."""
    keyed = [((r.epoch, 0, 0), format_epoch(r.raw, total)) for r in rows]
    keyed += [((_after_epoch(c), 1, c.seq), format_control(c.raw)) for c in controls]
    return [line for _, line in sorted(keyed, key=lambda k: k[0])]


def _follow(job: Job, rows: list[EpochRow], controls: list[Control]) -> None:
    """Print the job's status, then its new epoch rows, control changes and status
    changes as they come, until it ends (what ``merged`` already showed is not shown
    again)."""
    seen: set[tuple[Any, ...]] = {("epoch", r.epoch) for r in rows}
    seen |= {("control", c.seq, c.status) for c in controls}
    status = None
    for event in job.events():
        data = event.data
        if event.kind == "status" and data.get("status") != status:
            status = data["status"]
            say(f"job {job.id} {status}" + (f": {data['error']}" if data.get("error") else ""))
            continue
        if event.kind == "epoch":
            key, line = ("epoch", data["epoch"]), format_epoch(data, job.total_epochs)
        elif event.kind == "control":
            key, line = ("control", data["seq"], data["status"]), format_control(data)
        else:
            continue
        if key not in seen:
            seen.add(key)
            say(line)


def _stream_json(job: Job) -> None:
    """Each event as one JSON line (``{"event", "id", "data"}``) until the job ends."""
    for event in job.events():
        sys.stdout.write(json_module.dumps({"event": event.kind, "id": event.id,
                                            "data": event.data}) + "\n")
        sys.stdout.flush()


def logs(ctx: typer.Context, job_id: JobId,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new "
                                              "epoch rows and control changes until the "
                                              "job ends.")] = False,
         json: JsonFlag = False) -> None:
    """A job's epoch rows and controls, one line each. With --json: {"epochs": [...],
    "controls": [...]}; with -f --json: every event as a JSON line."""
    job = connect(ctx).jobs.get(job_id)
    if json and follow:
        _stream_json(job)
        return
    rows, controls = job.epochs(), job.controls()
    if json:
        emit_json({"epochs": [r.raw for r in rows], "controls": [c.raw for c in controls]})
        return
    for line in merged(rows, controls, job.total_epochs):
        say(line)
    if follow:
        _follow(job, rows, controls)


def wait_for(job: Job, json: bool) -> None:
    """Follow a job to its end with a live progress bar (on stderr; none with --json,
    which prints the finished job). Fails (exit 1) unless it succeeded."""
    job.wait(progress=not json)  # JobFailed when it failed
    if json:
        emit_json(job.data)
    if job.status == "cancelled":
        raise CliError(f"job {job.id} was cancelled", EXIT_API)


def watch(ctx: typer.Context, job_id: JobId, json: JsonFlag = False) -> None:
    """Follow a job live (epoch, loss, metrics) until it ends. Exits 0 when it
    succeeded, 1 when it failed or was cancelled, so a script can go on only after
    success."""
    wait_for(connect(ctx).jobs.get(job_id), json)
