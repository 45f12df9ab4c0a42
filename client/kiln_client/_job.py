"""What the sync ``Job`` and the async ``AsyncJob`` share: the job's fields, the rules
of following its event stream, and rebuilding the trained model.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ._base import STREAM_READ_TIMEOUT_S, BaseClient
from ._errors import KilnConnectionError, WaitTimeout
from ._types import FINISHED, Event, parse_time

__all__ = ["STREAM_RECONNECTS", "JobFields", "StreamFollower", "build_model"]

log = logging.getLogger("kiln_client")

#: Times in a row a dropped event stream is reopened (with back-off) before giving up.
STREAM_RECONNECTS = 6


class JobFields:
    """A job as the server last described it (``refresh()`` asks again). ``data`` is the
    server's whole object."""

    def __init__(self, client: BaseClient, data: dict[str, Any]) -> None:
        self._client = client
        self.data = data

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def name(self) -> str:
        return self.data.get("name", "")

    @property
    def status(self) -> str:
        """queued, running, paused, succeeded, failed or cancelled."""
        return self.data["status"]

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in FINISHED

    @property
    def requested(self) -> str | None:
        """"pause" or "cancel" while the worker has yet to act on that request."""
        return self.data.get("requested")

    @property
    def spec(self) -> dict[str, Any]:
        """The job as submitted (model, optimiser, loss, data, batch size, epochs, ...)."""
        return self.data["spec"]

    @property
    def parameters(self) -> int:
        return self.data.get("parameters", 0)

    @property
    def device(self) -> str:
        """What it asked to be trained on: any, cpu or gpu (only such a worker claims it)."""
        return self.data.get("device", "any")

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.data.get("epoch", 0)

    @property
    def total_epochs(self) -> int:
        """Epochs the job was submitted to train (it may stop earlier)."""
        return int(self.data.get("epochs") or self.spec.get("epochs", 0))

    @property
    def step(self) -> int:
        """Training steps completed, counted from the start of the job."""
        return self.data.get("step", 0)

    @property
    def attempt(self) -> int:
        return self.data.get("attempt", 0)

    @property
    def error(self) -> str | None:
        """Why the job failed."""
        return self.data.get("error")

    @property
    def has_weights(self) -> bool:
        return bool(self.data.get("has_weights"))

    @property
    def created_at(self) -> datetime | None:
        return parse_time(self.data.get("created_at"))

    @property
    def started_at(self) -> datetime | None:
        return parse_time(self.data.get("started_at"))

    @property
    def finished_at(self) -> datetime | None:
        return parse_time(self.data.get("finished_at"))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(id={self.id!r}, status={self.status!r}, "
                f"epoch={self.epoch}/{self.total_epochs}, step={self.step})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobFields) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class StreamFollower:
    """The rules for following a job's event stream across reconnections.

    The stream ends on its own once the job has finished (its last event is a status
    event with a final status). Ending any other way, or failing, means the connection
    dropped: it is reopened with ``Last-Event-ID`` (the server then sends each later
    event once, none lost, none repeated), after a back-off, up to STREAM_RECONNECTS
    times in a row; any event received resets that count.
    """

    def __init__(self, client: BaseClient, job_id: str, deadline: float | None = None
                 ) -> None:
        self.client, self.job_id, self.deadline = client, job_id, deadline
        self.last_id: str | None = None
        self.done = False
        self.failures = 0

    def headers(self) -> dict[str, str]:
        return {"Accept": "text/event-stream",
                **({"Last-Event-ID": self.last_id} if self.last_id else {})}

    def read_timeout(self, now: float) -> float:
        """How long one read may wait: the keep-alive bound, or less near the deadline."""
        if self.deadline is None:
            return STREAM_READ_TIMEOUT_S
        return max(0.01, min(STREAM_READ_TIMEOUT_S, self.deadline - now))

    def _check_deadline(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            raise WaitTimeout("the job did not finish before the timeout")

    def seen(self, event: Event, now: float) -> None:
        """Note an event received at ``now``; WaitTimeout past the deadline."""
        self._check_deadline(now)
        self.failures = 0
        if event.id is not None:
            self.last_id = event.id
        if event.kind == "status" and event.data.get("status") in FINISHED:
            self.done = True

    def dropped(self, now: float, error: KilnConnectionError | None) -> float:
        """The stream ended early (``error`` if it failed): seconds to wait before
        reopening it; raises WaitTimeout past the deadline, KilnConnectionError when it
        keeps failing."""
        self._check_deadline(now)
        self.failures += 1
        if self.failures > STREAM_RECONNECTS:
            raise error or KilnConnectionError(f"the event stream of job {self.job_id} "
                                               f"keeps closing early")
        delay = self.client._retry_delay(self.failures)  # at most BACKOFF_MAX_S
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - now))
        log.warning("the event stream of job %s dropped (%s); reopening it in %.1f s",
                    self.job_id, error or "closed early", delay)
        return delay


def build_model(spec: dict[str, Any], weights: bytes) -> Any:
    """The engine model of a job's spec, with the job's trained weights loaded."""
    from kiln_engine.serialise import load_weights, model_from_spec

    model = model_from_spec(spec, "model")
    load_weights(model, weights)
    return model
