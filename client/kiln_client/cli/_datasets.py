"""``kiln datasets upload | ls | rm``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._types import Dataset
from ._output import JsonFlag, age, emit_json, say, table
from ._session import connect

__all__ = ["app"]

app = typer.Typer(help="Upload, list and delete datasets (.npz files of named arrays).",
                  no_args_is_help=True)


def _arrays(ds: Dataset) -> str:
    """``x 1400x64 float32, y 1400 int64``."""
    return ", ".join(f"{name} {'x'.join(map(str, a.shape))} {a.dtype}"
                     for name, a in ds.arrays.items())


def _size(n: float) -> str:
    """``812 B``, ``439.6 KiB``, ``12.0 MiB``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@app.command()
def upload(ctx: typer.Context,
           file: Annotated[Path, typer.Argument(help="An .npz file (numpy.savez), e.g. with "
                                                "arrays x and y.", exists=True,
                                                dir_okay=False, readable=True)],
           name: Annotated[str | None, typer.Option(help="The dataset's name (default: the "
                                                    "file's name without .npz).")] = None,
           json: JsonFlag = False) -> None:
    """Upload an .npz file as a dataset (streamed; never unpickled)."""
    ds = connect(ctx).datasets.upload_file(file, name)
    if json:
        emit_json(ds.raw)
    else:
        say(f"Uploaded {ds.name!r} as {ds.id} ({_arrays(ds)})")


@app.command("ls")
def list_(ctx: typer.Context, json: JsonFlag = False) -> None:
    """List your datasets, newest first."""
    datasets = connect(ctx).datasets.list()
    if json:
        emit_json([ds.raw for ds in datasets])
        return
    table(["id", "name", "arrays", "size", "created"],
          [(ds.id, ds.name, _arrays(ds), _size(ds.size_bytes), age(ds.created_at))
           for ds in datasets])


@app.command("rm")
def remove(ctx: typer.Context,
           dataset_id: Annotated[str, typer.Argument(metavar="ID", help="The dataset's id.")],
           json: JsonFlag = False) -> None:
    """Delete a dataset (refused while an unfinished job uses it)."""
    connect(ctx).datasets.delete(dataset_id)
    if json:
        emit_json({"deleted": dataset_id})
    else:
        say(f"Deleted dataset {dataset_id}")
