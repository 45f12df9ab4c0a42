"""The exit codes scripts can rely on, and how an error becomes one line on stderr.

    0  it worked
    1  the server refused (any APIError: a wrong token, no such job, a spec error, a
       conflict), or the job the command waited for failed or was cancelled
    2  usage: a bad option or argument (the Typer/Click usage errors), a job file that
       cannot be read, a broken config file
    3  the server cannot be reached, or the connection dropped and could not be reopened

No traceback is ever shown for these: ``KilnGroup`` catches them around every command.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from .._errors import KilnConnectionError, KilnError

__all__ = ["EXIT_API", "EXIT_CONNECT", "EXIT_OK", "EXIT_USAGE", "CliError", "KilnGroup",
           "exit_code", "report"]

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3


class CliError(Exception):
    """A failure the CLI itself finds (a bad job file, an unknown dataset name): its
    message and the exit code it ends with."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_code(error: Exception) -> int:
    """The exit code of an error the CLI reports (see the module docstring)."""
    if isinstance(error, CliError):
        return error.code
    if isinstance(error, KilnConnectionError):
        return EXIT_CONNECT
    if isinstance(error, KilnError):  # APIError, JobFailed, WaitTimeout
        return EXIT_API
    raise TypeError(f"not an error the CLI reports: {error!r}")


def report(error: Exception) -> None:
    """``error: <message>`` as one line on stderr (the SDK's message is the server's own,
    with each field path of a 422)."""
    message = " ".join(str(error).split()) or type(error).__name__
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


class KilnGroup(TyperGroup):
    """The command group: reports SDK and CLI errors of any command in one line, with the
    exit code of their kind, instead of a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KilnError, CliError) as e:
            report(e)
            raise typer.Exit(exit_code(e)) from None
