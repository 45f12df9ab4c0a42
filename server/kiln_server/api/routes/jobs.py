"""Jobs: submit, list, get, pause / resume / cancel, live controls, logs, weights, events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from ...db import session_scope
from ...errors import NotFoundError
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
from ..deps import BlobsDep, CurrentUser, SessionDep, SettingsDep

router = APIRouter(prefix="/jobs", tags=["jobs"])

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
    """The live optimiser tree as the worker last reported it (per path: rule, hyper-
    parameters, frozen); empty before the first report."""
    return jobs.get(session, user, job_id).state or {}


@router.get("/{job_id}/epochs")
def list_epochs(job_id: str, session: SessionDep, user: CurrentUser) -> list[EpochPublic]:
    """One row per finished epoch."""
    return [EpochPublic.model_validate(e) for e in jobs.epochs(session, user, job_id)]


@router.get("/{job_id}/steps")
def get_steps(job_id: str, session: SessionDep, user: CurrentUser, settings: SettingsDep,
              max_points: int | None = Query(None, gt=0)) -> StepsPublic:
    """Per-step losses, averaged over runs of steps when there are more than max_points."""
    cap = min(max_points or settings.max_step_points, settings.max_step_points)
    steps, losses, stride = jobs.steps(session, user, job_id, cap)
    return StepsPublic(steps=steps, losses=losses, stride=stride)


@router.get("/{job_id}/weights", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_weights(job_id: str, session: SessionDep, user: CurrentUser,
                blobs: BlobsDep) -> FileResponse:
    """The job's latest weights (safetensors): final once it has succeeded."""
    job = jobs.get(session, user, job_id)
    if job.weights_sha256 is None:
        raise NotFoundError(f"job {job_id!r} has no weights yet")
    return FileResponse(blobs.path(job.weights_sha256), media_type="application/octet-stream",
                        filename=f"{job_id}.safetensors")


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, user: CurrentUser,
                     settings: SettingsDep) -> StreamingResponse:
    """Server-sent events: steps, epoch, control and status, until the job finishes."""
    factory = request.app.state.sessions

    def poll(cursor: jobs.EventCursor) -> tuple[list[tuple[str, dict]], bool]:
        with session_scope(factory) as session:
            return jobs.news(session, user, job_id, cursor)

    cursor = jobs.EventCursor()
    await run_in_threadpool(poll, jobs.EventCursor())  # a 404 now, not mid-stream

    async def stream() -> AsyncIterator[str]:
        while not await request.is_disconnected():
            events, done = await run_in_threadpool(poll, cursor)
            for kind, data in events:
                yield f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
            if done:
                return
            await asyncio.sleep(settings.events_poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream")
