"""``kiln login`` and ``kiln logout``: the server and token later commands use."""

from __future__ import annotations

from typing import Annotated

import typer

from .._config import config_path, forget_config, save_config
from ._output import JsonFlag, emit_json, say
from ._session import Options, new_client

__all__ = ["login", "logout"]


def login(ctx: typer.Context,
          url: Annotated[str | None, typer.Option(help="The server, e.g. "
                                                  "http://127.0.0.1:8000.")] = None,
          token: Annotated[str | None, typer.Option(help="The API token (asked for, "
                                                    "hidden, when not given).")] = None,
          json: JsonFlag = False) -> None:
    """Check a token with the server and save both for later commands (file mode 0600).

    A token the server refuses is not saved.
    """
    given: Options = ctx.find_root().obj or Options()
    token = token or given.token or typer.prompt("Kiln API token", hide_input=True)
    with new_client(url or given.url, token) as client:
        user = client.me()
    path = save_config(client.url, token)
    if json:
        emit_json({"url": client.url, "user": user.raw, "config": str(path)})
    else:
        say(f"Logged in to {client.url} as {user.name}")


def logout(json: JsonFlag = False) -> None:
    """Forget the saved server and token (remove the config file that login wrote)."""
    path, existed = config_path(), forget_config()
    if json:
        emit_json({"logged_out": existed, "config": str(path)})
    else:
        say(f"Logged out (removed {path})" if existed else "Not logged in")
