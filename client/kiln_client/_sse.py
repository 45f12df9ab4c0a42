"""A server-sent events decoder, fed one line at a time (no I/O: the sync and the async
clients share it).

Per the HTML standard's event stream format: ``event:``, ``data:`` (joined by newlines
when repeated), ``id:`` and ``retry:`` fields; a line starting with ``:`` is a comment
(the server's keep-alive); a blank line ends an event.
"""

from __future__ import annotations

import json

from ._types import Event

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Lines in, whole events out. ``last_id`` is the last id the stream gave (kept across
    events, as a browser keeps it, for ``Last-Event-ID`` on reconnection); ``retry_s`` the
    reconnection delay the server asked for, if any."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self.retry_s: float | None = None
        self._kind = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """Take one line (without its line break); the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_s = int(value) / 1000
        return None

    def _dispatch(self) -> Event | None:
        kind, data = self._kind or "message", self._data
        self._kind, self._data = "", []
        if not data:
            return None
        text = "\n".join(data)
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"text": text}
        return Event(kind=kind, data=payload if isinstance(payload, dict) else {"value": payload},
                     id=self.last_id)
