"""``kiln workers``: the workers the server knows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import typer

from ._output import JsonFlag, age, emit_json, table
from ._session import connect

__all__ = ["device_text", "workers"]


def device_text(device: dict[str, Any]) -> str:
    """``cpu x86_64`` or ``cuda:0 NVIDIA H100``."""
    kind = str(device.get("kind", "?"))
    if device.get("index") is not None:
        kind += f":{device['index']}"
    return f"{kind} {device['name']}" if device.get("name") else kind


def workers(ctx: typer.Context,
            status: Annotated[Literal["busy", "idle", "gone"] | None,
                              typer.Option(help="Only workers in this state.")] = None,
            json: JsonFlag = False) -> None:
    """List the workers: device, busy / idle / gone, the job each holds (yours only),
    and when each was last heard from."""
    found = connect(ctx).workers.list(status)
    if json:
        emit_json([w.raw for w in found])
        return
    now = datetime.now(UTC)
    table(["name", "device", "status", "job", "last seen"],
          [(w.name, device_text(w.device), w.status, w.job_id or "-", age(w.last_seen_at, now))
           for w in found])
