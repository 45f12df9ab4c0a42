"""Reading a job's event stream in the tests: each event with its id, the retry hint and the
keep-alive comments, stopping whenever the test says."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Event", "Stream", "read_events", "read_stream"]


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]

    def key(self) -> tuple[str, str]:
        """What the event says, for comparing streams (ids aside)."""
        return self.kind, json.dumps(self.data, sort_keys=True)


@dataclass
class Stream:
    """What one connection gave: its events, its retry hint and its comments."""

    status_code: int
    events: list[Event] = field(default_factory=list)
    retry: str | None = None
    start_id: str | None = None  # an id sent without an event: where the stream began
    comments: list[str] = field(default_factory=list)
    body: str = ""


def read_events(client: httpx.Client, job_id: str, **kw: Any) -> Stream:
    """:func:`read_stream` of the job's stream, ``/v1/jobs/{job_id}/events``."""
    return read_stream(client, f"/v1/jobs/{job_id}/events", **kw)


def read_stream(client: httpx.Client, path: str, *, last_id: str | None = None,
                params: dict[str, str] | None = None,
                stop: Callable[[list[Event]], bool] = lambda events: False,
                within_s: float | None = None) -> Stream:
    """Follow the event stream at ``path`` (resuming after ``last_id`` if given) until
    it ends, ``stop(events so far)`` holds, or (at the next line, a keep-alive at the
    latest) ``within_s`` has passed; then drop the connection."""
    deadline = time.monotonic() + within_s if within_s is not None else None
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    with client.stream("GET", path, headers=headers, params=params) as r:
        out = Stream(r.status_code)
        if r.status_code != 200:
            r.read()
            out.body = r.text
            return out
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if deadline is not None and time.monotonic() > deadline:
                break
            if line.startswith(":"):
                out.comments.append(line)
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                out.retry = fields.pop("retry", out.retry)
                if "data" in fields:
                    out.events.append(Event(fields["id"], fields["event"],
                                            json.loads(fields["data"])))
                elif "id" in fields:
                    out.start_id = fields["id"]
                fields = {}
                if out.events and stop(out.events):
                    break
    return out
