"""Jobs: submit, list, get, pause / resume / cancel, live controls, logs, weights, events."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from ...blobs import BlobMissingError
from ...db import session_scope
from ...errors import InvalidError, NotFoundError
from ...models import JobStatus
from ...schemas import (
    ControlCreate,
    ControlPublic,
    EpochPublic,
    JobCreate,
    JobPublic,
    JobsPublic,
    StepsPublic,
)
from ...services import jobs
from ...settings import Settings
from ...wakeups import news, owner_news
from ..deps import BlobsDep, CurrentUser, SessionDep, SettingsDep
from ..routing import CommitInHandler

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=CommitInHandler)

_409 = {409: {"description": "the job has finished, or is not in a state that allows this"}}


@router.post("", status_code=201)
def create_job(body: JobCreate, session: SessionDep, user: CurrentUser,
               settings: SettingsDep) -> JobPublic:
    """Validate a job against the engine and its datasets, then queue it."""
    return JobPublic.model_validate(jobs.create(session, user, body, settings))


@router.get("")
def list_jobs(session: SessionDep, user: CurrentUser, settings: SettingsDep,
              status: JobStatus | None = None, cursor: str | None = None,
              limit: int | None = Query(None, gt=0)) -> JobsPublic:
    """List your jobs, newest first, a page at a time."""
    limit = min(limit or settings.page_size, settings.max_page_size)
    rows, next_cursor = jobs.list_(session, user, status, cursor, limit)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in rows], next_cursor=next_cursor)


_JOBS_EVENTS_DOC = {200: {"content": {"text/event-stream": {}}},
                    422: {"description": "since is not a timestamp with a time zone, or "
                                         "Last-Event-ID (or ?last_event_id=) is not an id "
                                         "this stream gave"}}


# Before /{job_id}, which would take "events" for a job id.
@router.get("/events", response_class=StreamingResponse, responses=_JOBS_EVENTS_DOC)
async def jobs_events(request: Request, user: CurrentUser, settings: SettingsDep,
                      since: Annotated[AwareDatetime | None, Query(
                          description="send the jobs changed after this time (RFC 3339, "
                          "with its zone: 2026-12-03T10:00:00Z); default: those changed "
                          "after the stream opens")] = None,
                      last_event_id: Annotated[str | None, Header(
                          description="the id of the last event received: the stream "
                          "resumes after it, and since is ignored")] = None,
                      last_event_id_query: Annotated[str | None, Query(
                          alias="last_event_id", description="the same, for a first "
                          "request that cannot set headers; the header wins")] = None,
                      ) -> StreamingResponse:
    """Server-sent events: each of your jobs, whenever it is created or changes.

    Each event is ``event: job`` with a JobPublic as ``data:`` (the job as it is now:
    status, requested, epoch and step, latest, worker, …), sent when the job is submitted
    and after every change: a claim, progress, an epoch row, a control or its outcome, a
    pause, resume or cancel, the end. Jobs come in the order they changed; a job that
    changed twice while the stream was away comes once, as it is now.

    Every event has an ``id:``, an opaque cursor: reconnect with it (``Last-Event-ID``)
    to receive every job changed after it, once. The stream begins with the ``retry:``
    ms to wait before reconnecting and the ``id:`` of its start point (no event), so a
    client reconnecting before any event resumes from there too. It sends a ``: ping``
    comment after ``events_keepalive_s`` of silence, and ends after
    ``jobs_stream_max_s`` (reconnect with the last id).
    """
    raw, where = _last_event_id(last_event_id, last_event_id_query)
    try:
        cursor = jobs.JobsCursor.decode(raw) if raw else None
    except ValueError as e:
        raise InvalidError(where, str(e)) from None
    if cursor is None and since is not None:
        try:
            cursor = jobs.JobsCursor(since.astimezone(UTC))
        except OverflowError:
            raise InvalidError(["query", "since"], "is out of range in UTC") from None
    factory, page = request.app.state.read_sessions, settings.max_page_size

    def poll() -> _Polled:
        nonlocal cursor
        with session_scope(factory) as session:
            if cursor is None:
                cursor = jobs.jobs_now(session, user)
            start = cursor.encode()
            events, cursor = jobs.changed_jobs(session, user, cursor, page)
        return _Polled(events, more=len(events) == page, start_id=start)

    return await _stream(request, settings, owner_news(user.id), poll,
                         max_s=settings.jobs_stream_max_s)


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, user: CurrentUser) -> JobPublic:
    """One job."""
    return JobPublic.model_validate(jobs.get(session, user, job_id))


@router.post("/{job_id}/pause", responses=_409)
def pause_job(job_id: str, session: SessionDep, user: CurrentUser) -> JobPublic:
    """Pause a job: at once if no worker holds it; a running job shows ``requested:
    "pause"`` until its worker has checkpointed and let it go (status paused)."""
    return JobPublic.model_validate(jobs.pause(session, user, job_id))


@router.post("/{job_id}/resume", responses=_409)
def resume_job(job_id: str, session: SessionDep, user: CurrentUser) -> JobPublic:
    """Queue a paused job again; it continues from its checkpoint."""
    return JobPublic.model_validate(jobs.resume(session, user, job_id))


@router.post("/{job_id}/cancel", responses=_409)
def cancel_job(job_id: str, session: SessionDep, user: CurrentUser) -> JobPublic:
    """Cancel a job: at once if no worker holds it; a running job shows ``requested:
    "cancel"`` until its worker stops (status cancelled)."""
    return JobPublic.model_validate(jobs.cancel(session, user, job_id))


@router.post("/{job_id}/controls", status_code=201, responses=_409)
def create_control(job_id: str, body: ControlCreate, session: SessionDep, user: CurrentUser,
                   settings: SettingsDep) -> ControlPublic:
    """Adjust hyper-parameters, or freeze / thaw a subtree, of an unfinished job."""
    return ControlPublic.model_validate(jobs.add_control(session, user, job_id, body, settings))


@router.get("/{job_id}/controls")
def list_controls(job_id: str, session: SessionDep, user: CurrentUser) -> list[ControlPublic]:
    """Every control of a job, by sequence number, with what became of it."""
    return [ControlPublic.model_validate(c) for c in jobs.controls(session, user, job_id)]


@router.get("/{job_id}/state")
def get_state(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The live optimiser tree as the worker last reported it (per parameter path: rule,
    hyper-parameters, frozen, the fields a schedule drives); before the first report, the
    tree the job starts with."""
    return jobs.state(session, user, job_id)


@router.get("/{job_id}/epochs")
def list_epochs(job_id: str, session: SessionDep, user: CurrentUser) -> list[EpochPublic]:
    """One row per finished epoch."""
    return [EpochPublic.model_validate(e) for e in jobs.epochs(session, user, job_id)]


@router.get("/{job_id}/steps")
def get_steps(job_id: str, session: SessionDep, user: CurrentUser, settings: SettingsDep,
              max_points: int | None = Query(None, gt=0)) -> StepsPublic:
    """Per-step losses; past max_points steps, the mean, lowest and highest loss of each
    run of stride steps."""
    cap = min(max_points or settings.max_step_points, settings.max_step_points)
    return jobs.steps(session, user, job_id, cap)


@router.get("/{job_id}/weights", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}},
                       503: {"description": "the blob store is unavailable: try again"}})
def get_weights(job_id: str, session: SessionDep, user: CurrentUser,
                blobs: BlobsDep) -> Response:
    """The job's latest weights (safetensors): final once it has succeeded."""
    job = jobs.get(session, user, job_id)
    if job.weights_sha256 is None:
        raise NotFoundError(f"job {job_id!r} has no weights yet")
    try:
        return blobs.response(job.weights_sha256, filename=f"{job_id}.safetensors")
    except BlobMissingError:
        raise BlobMissingError(job.weights_sha256, f"job {job_id!r}'s weights") from None


_EVENTS_DOC = {200: {"content": {"text/event-stream": {}}},
               422: {"description": "Last-Event-ID (or ?last_event_id=) is not an event id "
                                    "this server gave for this job"}}


@router.get("/{job_id}/events", response_class=StreamingResponse, responses=_EVENTS_DOC)
async def job_events(job_id: str, request: Request, user: CurrentUser, settings: SettingsDep,
                     last_event_id: Annotated[str | None, Header(
                         description="the id of the last event received: the stream "
                         "resumes after it (EventSource sends it when it reconnects)")] = None,
                     last_event_id_query: Annotated[str | None, Query(
                         alias="last_event_id", description="the same, for a first request "
                         "that cannot set headers; the header wins")] = None,
                     ) -> StreamingResponse:
    """Server-sent events, until the job finishes: its progress, live.

    Events (``event:`` kind, ``data:`` JSON):

    - ``steps``: ``{epoch, first_step, losses}``, a batch of step losses as posted (the
      epoch of its first step, from 1; a batch replaced by a resumed worker comes again);
    - ``epoch``: an EpochPublic, once per finished epoch;
    - ``control``: a ControlPublic, when a control appears and again when it is applied
      or rejected;
    - ``status``: ``{status, epoch, step, error}`` when the status or the epochs completed
      change (the last event, once the job has finished).

    Every event has an ``id:``, an opaque cursor of what the stream has sent. Reconnect
    with it (``Last-Event-ID``) to receive every later event once: the steps and epochs
    not yet received, each control whose state changed since (one pending then resolved
    while away arrives resolved), and the status if it changed. The stream asks clients
    to wait ``retry:`` ms before reconnecting, and sends a ``: ping`` comment after
    ``events_keepalive_s`` of silence.
    """
    raw, where = _last_event_id(last_event_id, last_event_id_query)
    try:
        cursor = jobs.EventCursor.decode(raw, job_id) if raw else jobs.EventCursor()
    except ValueError as e:
        raise InvalidError(where, str(e)) from None
    factory = request.app.state.read_sessions

    def poll() -> _Polled:
        with session_scope(factory) as session:
            events, done = jobs.news(session, user, job_id, cursor)
        return _Polled(events, done=done)

    return await _stream(request, settings, news(job_id), poll)


def _last_event_id(header: str | None, query: str | None) -> tuple[str | None, list[str]]:
    """The id to resume after (the header wins) and where it came from, for a 422."""
    if header is not None:
        return header, ["header", "last-event-id"]
    return query, ["query", "last_event_id"]


class _Polled(NamedTuple):
    """What one read of a stream found: its events, each (kind, data, id); whether the
    stream is over; whether there is more to read at once; and, from the first read,
    the id of the stream's start, sent before any event."""

    events: list[tuple[str, dict[str, Any], str]]
    done: bool = False
    more: bool = False
    start_id: str | None = None


async def _stream(request: Request, settings: Settings, bell_key: str,
                  poll: Callable[[], _Polled], max_s: float | None = None
                  ) -> StreamingResponse:
    """Server-sent events of what ``poll`` reads: first at once (a 404 or 422 comes now,
    not mid-stream), then whenever ``bell_key`` rings (on any replica's commit);
    until ``poll`` says it is done, the client leaves, the
    server shuts down, or ``max_s`` has passed. A ``retry:`` hint first (with the
    ``id:`` of the start, if the first read gave one: a client that reconnects before
    any event resumes from there), a ``: ping`` after ``events_keepalive_s`` of
    silence."""
    wakeups = request.app.state.wakeups
    first_bell = wakeups.bell(bell_key)  # taken before the read, as a long-poll does
    first = await run_in_threadpool(poll)
    ends = time.monotonic() + max_s if max_s is not None else math.inf

    async def stream() -> AsyncIterator[str]:
        start = f"id: {first.start_id}\n" if first.start_id else ""
        yield f"retry: {settings.events_retry_ms}\n{start}\n"
        polled, bell = first, first_bell
        quiet_since = time.monotonic()
        while True:
            for kind, data, event_id in polled.events:
                yield f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
                quiet_since = time.monotonic()
            if polled.done or time.monotonic() >= ends:
                return
            if time.monotonic() - quiet_since >= settings.events_keepalive_s:
                yield ": ping\n\n"
                quiet_since = time.monotonic()
            if not polled.more:
                # Woken by any replica's commit that concerns the stream (wakeups.py);
                # read again, too, in time for the next ping and for the end.
                wake = min(ends, quiet_since + settings.events_keepalive_s)
                await wakeups.wait(bell, wake - time.monotonic())
            if wakeups.closed or await request.is_disconnected():
                return  # shutting down: the client resumes elsewhere with its last id
            bell = wakeups.bell(bell_key)
            polled = await run_in_threadpool(poll)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
