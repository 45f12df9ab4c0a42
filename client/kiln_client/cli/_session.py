"""The global options (``kiln --url URL --token TOKEN …``) and the SDK client that every
command of one invocation shares."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from .._client import Client
from ._errors import CliError

__all__ = ["Options", "connect", "new_client"]


@dataclass(frozen=True)
class Options:
    """What the global options gave; None leaves it to the SDK (KILN_URL / KILN_TOKEN,
    then what ``kiln login`` saved)."""

    url: str | None = None
    token: str | None = None


def new_client(url: str | None, token: str | None) -> Client:
    """An SDK client; a broken config file is a usage error, not a traceback."""
    try:
        return Client(url, token)
    except ValueError as e:
        raise CliError(str(e)) from None


def connect(ctx: typer.Context) -> Client:
    """The client of this invocation, closed when the command ends."""
    options = ctx.find_root().obj or Options()
    return ctx.with_resource(new_client(options.url, options.token))
