"""``kiln``: Kiln from the terminal. Every command is one SDK call plus formatting.

    kiln login                                  # saves the server and token (0600)
    kiln datasets upload digits.npz
    kiln submit job.yaml --dataset digits --epochs 30 --watch
    kiln jobs --status running
    kiln adjust JOB --path layers.enc --eta 0.001
    kiln logs JOB -f

Every command takes ``--json`` (the server's objects, one JSON document) and the global
``--url`` / ``--token`` (else KILN_URL / KILN_TOKEN, else what ``kiln login`` saved).
Errors are one line on stderr, ``error: <the server's message>``, never a traceback, and
the exit code says what kind: 0 ok, 1 the server refused or the job failed, 2 usage (a
bad option, an unreadable job file), 3 the server cannot be reached (``_errors``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import _auth, _datasets, _follow, _jobs, _steer, _submit, _workers
from ._errors import KilnGroup
from ._session import Options

__all__ = ["app", "main"]

app = typer.Typer(
    cls=KilnGroup, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # a bug's traceback must not print the token
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train on a Kiln server from the terminal: upload datasets, submit jobs, follow "
         "and steer them while they train.\n\n"
         "Exit codes: 0 ok; 1 the server refused (wrong token, no such job, a spec "
         "error, ...) or the job watched failed or was cancelled; 2 usage (bad options, "
         "an unreadable job file); 3 the server cannot be reached. Errors are one line "
         "on stderr: error: MESSAGE.",
)


@app.callback()
def _global_options(
        ctx: typer.Context,
        url: Annotated[str | None, typer.Option(help="The server (else KILN_URL, else what "
                                                "kiln login saved).")] = None,
        token: Annotated[str | None, typer.Option(help="The API token (else KILN_TOKEN, "
                                                  "else what kiln login saved).")] = None,
) -> None:
    ctx.obj = Options(url, token)


app.command()(_auth.login)
app.command()(_auth.logout)
app.add_typer(_datasets.app, name="datasets")
app.command()(_submit.submit)
app.command()(_jobs.jobs)
app.command()(_jobs.show)
app.command()(_follow.logs)
app.command()(_follow.watch)
app.command(context_settings=_steer.HYPER_ARGS)(_steer.adjust)
app.command()(_steer.freeze)
app.command()(_steer.thaw)
app.command()(_steer.pause)
app.command()(_steer.resume)
app.command()(_steer.cancel)
app.command()(_jobs.weights)
app.command()(_workers.workers)


def main() -> None:
    """The ``kiln`` console script."""
    app(prog_name="kiln")
