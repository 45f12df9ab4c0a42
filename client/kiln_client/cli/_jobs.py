"""``kiln jobs``, ``kiln show ID`` and ``kiln weights ID -o FILE``: reading jobs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from .._progress import format_control, format_epoch
from ._describe import data_text, layer_lines, rule_text, stop_text
from ._errors import CliError
from ._output import JsonFlag, age, emit_json, job_state, say, table
from ._session import connect

__all__ = ["JobId", "jobs", "show", "weights"]

#: The largest page the server gives (its KILN_MAX_PAGE_SIZE default): the fewest requests.
PAGE_SIZE = 500

JobId = Annotated[str, typer.Argument(metavar="ID", help="The job's id.")]
Status = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]


def jobs(ctx: typer.Context,
         status: Annotated[Status | None, typer.Option(help="Only jobs in this status.")] = None,
         limit: Annotated[int | None, typer.Option(min=1, help="At most this many (the "
                                                   "newest); all by default.")] = None,
         json: JsonFlag = False) -> None:
    """List your jobs, newest first: status (with a pause or cancel still to be carried
    out), epochs completed of those planned, steps, and when each was submitted."""
    listed = connect(ctx).jobs.list(status, page_size=min(limit or PAGE_SIZE, PAGE_SIZE))
    found = itertools.islice(listed, limit)
    if json:
        emit_json([job.data for job in found])
        return
    now = datetime.now(UTC)
    table(["id", "name", "status", "epoch", "step", "created"],
          [(job.id, job.name, job_state(job.data), f"{job.epoch}/{job.total_epochs}",
            job.step, age(job.created_at, now)) for job in found])


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S} ({age(value)})"


def show(ctx: typer.Context, job_id: JobId, json: JsonFlag = False) -> None:
    """A job's details: status, model, optimiser, data, progress, times, its last epoch
    row and its controls. With --json: the job as the server gives it."""
    job = connect(ctx).jobs.get(job_id)
    if json:
        emit_json(job.data)
        return
    spec = job.spec
    per_epoch = job.data.get("steps_per_epoch")
    fields = [
        ("job", f"{job.id}" + (f"  {job.name}" if job.name else "")),
        ("status", job_state(job.data)),
        ("error", job.error),
        ("progress", f"epoch {job.epoch}/{job.total_epochs} completed, step {job.step}"
                     + (f" ({per_epoch} steps an epoch)" if per_epoch else "")),
        ("model", f"{spec['model'].get('type')}, {job.parameters:,} parameters"),
        *(("", line) for line in layer_lines(spec["model"])),
        ("optimiser", rule_text(spec.get("optimiser"))),
        ("schedule", rule_text(spec["schedule"]) if spec.get("schedule") else None),
        ("loss", f"{spec.get('loss')} (metrics: {', '.join(spec.get('metrics') or [])})"),
        ("train", data_text(spec.get("train"))),
        ("validation", data_text(spec.get("validation"))),
        ("batches", f"{spec.get('batch_size')} samples, "
                    f"{'shuffled' if spec.get('shuffle', True) else 'in order'}, "
                    f"seed {spec.get('seed', 0)}"),
        ("stop", stop_text(spec.get("stop"))),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
    ]
    for key, value in fields:
        if value is not None:
            say(f"{key:<12}{value}")
    rows = job.epochs()
    say(f"{'last epoch':<12}" + (format_epoch(rows[-1].raw, job.total_epochs) if rows else "-"))
    controls = job.controls()
    say("controls" + ("" if controls else "    -"))
    for c in controls:
        say(f"  {format_control(c.raw)}")


def weights(ctx: typer.Context, job_id: JobId,
            output: Annotated[Path, typer.Option("--output", "-o", help="The file to write "
                                                 "(safetensors).")],
            json: JsonFlag = False) -> None:
    """Download a job's latest weights (final once it succeeded) as safetensors."""
    job = connect(ctx).jobs.get(job_id)
    try:
        job.download_weights(output)
    except OSError as e:
        raise CliError(f"{output}: {e.strerror or e}") from None
    size = output.stat().st_size
    if json:
        emit_json({"job": job.id, "file": str(output), "size_bytes": size})
    else:
        say(f"Wrote {output} ({size:,} bytes) from job {job.id} ({job_state(job.data)})")
