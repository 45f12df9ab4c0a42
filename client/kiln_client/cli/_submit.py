"""``kiln submit JOB.json|JOB.yaml``: queue the job a file describes, with the common
fields overridable from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .._client import Client
from ._errors import EXIT_API, CliError
from ._follow import wait_for
from ._jobfile import read_job_file, with_dataset, with_eta, with_stop
from ._output import JsonFlag, emit_json, say
from ._session import connect

__all__ = ["submit"]


def _dataset_id(client: Client, id_or_name: str) -> str:
    """A dataset's id, given it or its name (your newest dataset of that name)."""
    datasets = client.datasets.list()  # newest first
    for ds in datasets:
        if id_or_name == ds.id:
            return ds.id
    for ds in datasets:
        if id_or_name == ds.name:
            return ds.id
    raise CliError(f"--dataset: you have no dataset with the id or name {id_or_name!r}",
                   EXIT_API)


def submit(ctx: typer.Context,
           file: Annotated[Path, typer.Argument(metavar="JOB_FILE", help="The job as JSON "
                                                "or YAML: model, optimiser, loss, train, "
                                                "batch_size, epochs, ...")],
           name: Annotated[str | None, typer.Option(help="The job's name.")] = None,
           epochs: Annotated[int | None, typer.Option(help="Epochs to train.")] = None,
           batch_size: Annotated[int | None, typer.Option(help="Samples a step.")] = None,
           seed: Annotated[int | None, typer.Option(help="The random seed.")] = None,
           stop: Annotated[str | None, typer.Option(help='Stop early, e.g. '
                                                    '"val_accuracy>=0.97".')] = None,
           dataset: Annotated[str | None, typer.Option(
               help="Train on this dataset (an id, or a name: your newest dataset of that "
                    "name); validate on it too when the file's validation names none.")
           ] = None,
           eta: Annotated[float | None, typer.Option(
               help="The learning rate: the optimiser's eta (in a chain, of each member "
                    "that has one).")] = None,
           device: Annotated[Literal["any", "cpu", "gpu"] | None, typer.Option(
               help="Train it only on a worker of this kind (a job no worker fits stays "
                    "queued).")] = None,
           watch: Annotated[bool, typer.Option(help="Then follow it as kiln watch does.")
                            ] = False,
           json: JsonFlag = False) -> None:
    """Queue a training job; prints its id (with --json, the job)."""
    job = read_job_file(file)
    overrides = {"name": name, "epochs": epochs, "batch_size": batch_size, "seed": seed,
                 "device": device}
    job.update({k: v for k, v in overrides.items() if v is not None})
    if stop is not None:
        job = with_stop(job, stop)
    if eta is not None:
        job = with_eta(job, eta)
    client = connect(ctx)
    if dataset is not None:
        job = with_dataset(job, _dataset_id(client, dataset))
    created = client.jobs.submit_spec(job)  # as written: the server names a bad field
    if json and not watch:
        emit_json(created.data)
        return
    if not json:
        say(created.id)
    if watch:
        wait_for(created, json)
