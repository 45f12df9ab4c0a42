"""What the commands print: JSON for scripts (``--json``: the server's objects, one
document), aligned plain-text tables and lines for people.

Tables are plain text rather than Rich tables: Rich lays out 1,000 rows in about a
second, plain alignment in milliseconds, and ``kiln jobs`` must answer at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

__all__ = ["JsonFlag", "age", "emit_json", "job_state", "say", "table"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON, for scripts.")]


def emit_json(value: Any) -> None:
    """``value`` as one JSON document on stdout: indented on a terminal, compact into a
    pipe or file (json's C encoder writes only compact JSON: 1,000 jobs take 10 ms
    compact, 40 ms indented)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(value, indent=indent, default=str) + "\n")


def say(line: str = "") -> None:
    """One line on stdout, flushed (so a follower shows it at once, also through a pipe)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Rows under upper-case headers, in columns two spaces apart (the last one unpadded)."""
    cells = [[str(h).upper() for h in headers]]
    cells += [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    sys.stdout.write("\n".join(out) + "\n")


def age(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; '-' for never."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    s = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def job_state(data: dict[str, Any]) -> str:
    """A job's status with any request its worker has yet to carry out:
    ``running (pause requested)``."""
    requested = data.get("requested")
    return f"{data['status']} ({requested} requested)" if requested else data["status"]
