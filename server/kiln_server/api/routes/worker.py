"""The worker API: how a worker process pulls and runs jobs. Worker tokens only.

Contract (all bodies JSON unless said; ``Authorization: Bearer <worker token>``)::

    POST /v1/worker/register          {name, device}            -> WorkerPublic (keep .id)
    POST /v1/worker/claim             {worker_id, wait_s}       -> 200 ClaimedJob | 204 none
    GET  /v1/worker/blobs/{sha256}                              -> bytes (dataset, checkpoint)
    --- every call below carries the claim's lease:  Kiln-Lease: <lease_token> ---
    POST /v1/worker/jobs/{id}/heartbeat  {epoch, step, steps_per_epoch} -> HeartbeatReply
    GET  /v1/worker/jobs/{id}/controls?after=SEQ&wait_s=S       -> ControlsReply (long-poll)
    POST /v1/worker/jobs/{id}/logs       {steps: StepsIn, epochs: [EpochIn], step} -> 204
    POST /v1/worker/jobs/{id}/controls   {results: [{seq, status, epoch, step, reason}]} -> 204
    PUT  /v1/worker/jobs/{id}/checkpoint?epoch=&step=  raw bytes (opaque)  -> 204
    PUT  /v1/worker/jobs/{id}/weights    raw bytes (safetensors)            -> 204
    PUT  /v1/worker/jobs/{id}/state      {tree}                              -> 204
    POST /v1/worker/jobs/{id}/finish     {status, epoch, step, error, steps, epochs} -> 204
                                         (or multipart: finish=<that JSON>, weights=<file>)
    POST /v1/worker/jobs/{id}/release    (no body)                            -> 204

The worker's loop:

- **Register** the device trained on (a DeviceInfo): a ``cuda`` worker is handed the jobs
  that ask for a ``gpu`` or ``any`` device, a ``cpu`` worker those that ask for a ``cpu`` or
  ``any``; the oldest such job first.
- **Claim** (with ``wait_s``: held while the queue is empty, answered as soon as a job is
  queued, so an idle worker neither polls nor makes a new job wait for its next poll)
  gives the job's spec (as submitted: model, optimiser, loss, data, batch size,
  epochs, seed, schedule, stop, metrics), its datasets (fetch each blob by sha256 and
  cache it), a ``lease_token`` valid for ``lease_expires_at``, and the cadences:
  ``heartbeat_interval_s``, ``log_interval_s``, ``checkpoint_interval_s``.
  If ``checkpoint`` is set, resume from it: load the blob (the bytes this worker's kind
  uploaded), continue at ``checkpoint.step``, and re-apply, at the same step, every
  control in ``controls`` that is ``applied`` with ``applied_step`` after the
  checkpoint's step, so a resumed run equals an uninterrupted one.
- **Blobs**: a blob GET answered 404 (the blob store this server reaches lacks it:
  another replica's may not) or 503 (the store is unavailable) may succeed later: try
  again, with back-off, for ``blob_retry_s``, then release the job (it is queued again)
  rather than fail it.
- **Progress**: the ``epoch`` and ``step`` of a heartbeat, a checkpoint and a finish
  are the epochs and the global steps *completed* (from the start of the job: a resumed
  run goes on from its checkpoint's), so mid-way through the second epoch, epoch is 1;
  users read them as the job's ``epoch`` and ``step``, which never go back within a
  claim. The ``epoch`` of a step batch and of an applied control is the one its step
  belongs to (from 1).
- **Heartbeat** every ``heartbeat_interval_s``, with the progress and the steps in an
  epoch (``steps_per_epoch``, for users' progress displays): it renews the lease and returns
  ``action`` (``continue``; ``pause``: checkpoint, upload, finish with ``paused``;
  ``cancel``: finish with ``cancelled``) and the pending adjust/freeze/thaw controls in
  ``seq`` order. The same control comes back on every heartbeat until it is reported, so
  apply each ``seq`` once.
- **Controls long-poll**, for low latency: keep one ``GET …/controls?after=SEQ&wait_s=S``
  open (``after``: the highest ``seq`` seen so far; the claim's controls to start with).
  It answers as soon as the job has a control numbered above ``after`` (any kind: a
  pause or cancel shows in ``action``), or after ``wait_s`` (at most
  ``controls_wait_max_s``) with nothing new; pass the reply's ``seq`` as the next
  ``after``. It renews nothing: the heartbeat stays the lease's renewal and the
  fallback. A control wakes the poll when it commits, through whichever replica
  it was posted (on SQLite, another process's within ``sqlite_recheck_s``). A 409 means the lease
  is gone (also when this worker has just finished the job). Apply controls at the next
  step boundary, whichever way they came: ``adjust(opt_state[path],
  **hyper)``, ``freeze(opt_state[path])``, ``thaw(opt_state[path])`` (``path`` '' is the
  whole state); report ``applied`` with the epoch and the first step trained under the
  change, or ``rejected`` with the reason.
- **Steps** and **epochs** are posted together every ``log_interval_s`` (global steps
  count from 1; a batch of step losses and the epoch rows that ended since, with
  ``step`` the global step at the end of the last row), each epoch row with the learning
  rate per subtree and the frozen paths in force. A step batch replaces every stored
  batch from its ``first_step`` on, and an epoch posted again replaces its row: a job
  resumed from a checkpoint posts again what its last holder posted after it, and no row
  is doubled (post the steps up to a checkpoint before the checkpoint itself).
- **Checkpoint** at the end of an epoch once the last one (or the start) is
  ``checkpoint_interval_s`` old, and before pausing, with the weights (safetensors,
  served to users at /v1/jobs/{id}/weights) and the state tree (per path: rule,
  hyper-parameters, frozen; served at /v1/jobs/{id}/state).
- **Finish** with ``succeeded`` (with the final weights), ``failed`` (``error`` says
  why), ``cancelled``, or ``paused``; the last step losses (``steps``, a StepsIn) and
  epoch rows (``epochs``) may come with it, stored in the same transaction. The final
  weights come in the same request as a multipart body (``finish``: the JSON above,
  ``weights``: the safetensors file), or before it by ``PUT …/weights``.
- **Release** when the worker stops (SIGTERM) with the job unfinished: checkpoint, post
  what is queued, then ``POST …/release``. The job goes back to the queue at once (a
  pause or cancel requested meanwhile is carried out instead), keeping its attempt, its
  checkpoint and its pending adjust/freeze/thaw for the next worker, which resumes it.
  A worker that dies without releasing leaves the job to its lease's expiry.

Any write whose lease is no longer current (expired, or the job was requeued and claimed
again) gets **409** and changes nothing: stop working on that job at once. Bodies are
validated like the user API (422 naming the field).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ...blobs import BlobStore, Staging
from ...db import session_scope
from ...errors import InvalidError
from ...schemas import (
    COUNT_MAX,
    ClaimedJob,
    ClaimRequest,
    ControlPublic,
    ControlResults,
    ControlsReply,
    Finish,
    Heartbeat,
    HeartbeatReply,
    LogsIn,
    StateReport,
    WorkerPublic,
    WorkerRegister,
)
from ...services import queue
from ...settings import Settings
from ...wakeups import QUEUE
from ..deps import (
    STREAMED,
    BlobsDep,
    CurrentWorkerToken,
    SessionDep,
    SettingsDep,
    committed,
    limited,
    multipart,
    receive,
    stage_file,
)
from ..routing import CommitInHandler

router = APIRouter(prefix="/worker", tags=["worker"], route_class=CommitInHandler)

Lease = Annotated[str, Header(alias="Kiln-Lease", description="the claim's lease_token")]
_LEASE = {409: {"description": "the lease is no longer held; stop working on the job"}}
_BLOB = {200: {"content": {"application/octet-stream": {}}},
         404: {"description": "the blob store this server uses lacks the blob: try again "
                              "(another replica may have it), then release the job"},
         503: {"description": "the blob store is unavailable: try again"}}
_BYTES = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


@router.post("/register", status_code=201)
def register_worker(body: WorkerRegister, session: SessionDep,
                    token: CurrentWorkerToken) -> WorkerPublic:
    """Register a worker process and its device."""
    return WorkerPublic.model_validate(queue.register(session, token, body))


@router.post("/claim", response_model=ClaimedJob,
             responses={204: {"description": "no job is queued (within wait_s)"}})
async def claim_job(body: ClaimRequest, request: Request, token: CurrentWorkerToken,
                    settings: SettingsDep) -> ClaimedJob | Response:
    """Take the oldest queued job, with a lease; while the queue is empty, wait up to
    ``wait_s`` for one (204 if none came)."""
    wakeups, claims = request.app.state.wakeups, request.app.state.claims
    deadline = time.monotonic() + min(body.wait_s, settings.claim_wait_max_s)
    while True:
        bell = wakeups.bell(QUEUE)  # taken before the claim: a later queueing rings it
        claimed = await claims.claim(token.id, body.worker_id)
        left = deadline - time.monotonic()
        if claimed is not None or left <= 0 or wakeups.closed:
            return claimed or Response(status_code=204)
        await wakeups.wait(bell, left)
        if await request.is_disconnected():  # a worker that left gets no job it won't run
            return Response(status_code=204)


@router.get("/blobs/{sha256}", response_class=Response, responses=_BLOB)
def get_blob(sha256: str, token: CurrentWorkerToken, blobs: BlobsDep) -> Response:
    """A dataset or checkpoint by its sha256."""
    return blobs.response(sha256)


@router.post("/jobs/{job_id}/heartbeat", responses=_LEASE)
def heartbeat(job_id: str, body: Heartbeat, lease: Lease, session: SessionDep,
              token: CurrentWorkerToken, settings: SettingsDep) -> HeartbeatReply:
    """Renew the lease; get pending controls and whether to pause or cancel."""
    job, action, pending = queue.heartbeat(session, job_id, lease, body, settings.lease_s)
    return HeartbeatReply(lease_expires_at=job.lease_expires_at, action=action,
                          controls=[ControlPublic.model_validate(c) for c in pending])


@router.get("/jobs/{job_id}/controls", responses=_LEASE)
async def wait_controls(job_id: str, request: Request, lease: Lease, token: CurrentWorkerToken,
                        settings: SettingsDep, after: int = Query(0, ge=0, le=COUNT_MAX),
                        wait_s: float = Query(20.0, ge=0)) -> ControlsReply:
    """Wait until the job has a control numbered above ``after``, or ``wait_s`` passes."""
    wakeups, sessions = request.app.state.wakeups, request.app.state.read_sessions
    deadline = time.monotonic() + min(wait_s, settings.controls_wait_max_s)

    def read() -> ControlsReply:  # one short transaction, off the event loop
        with session_scope(sessions) as session:
            action, pending, seq = queue.controls_after(session, job_id, lease, after)
            return ControlsReply(seq=seq, action=action,
                                 controls=[ControlPublic.model_validate(c) for c in pending])

    while True:
        bell = wakeups.bell(job_id)  # taken before the read: a later commit rings it
        reply = await run_in_threadpool(read)
        left = deadline - time.monotonic()
        if reply.seq > after or left <= 0 or wakeups.closed:
            return reply
        await wakeups.wait(bell, left)


@router.post("/jobs/{job_id}/logs", status_code=204, responses=_LEASE)
def post_logs(job_id: str, body: LogsIn, lease: Lease, session: SessionDep,
              token: CurrentWorkerToken) -> None:
    """Store step losses (idempotent on first_step) and epoch rows (on the epoch number)."""
    queue.post_logs(session, job_id, lease, body)


@router.post("/jobs/{job_id}/controls", status_code=204, responses=_LEASE)
def report_controls(job_id: str, body: ControlResults, lease: Lease, session: SessionDep,
                    token: CurrentWorkerToken) -> None:
    """Report controls applied (with epoch and step) or rejected (with the reason)."""
    queue.control_results(session, job_id, lease, body)


@router.put("/jobs/{job_id}/checkpoint", status_code=204, responses=_LEASE,
            openapi_extra=_BYTES, max_body_size=STREAMED)
async def put_checkpoint(job_id: str, request: Request, lease: Lease, session: SessionDep,
                         token: CurrentWorkerToken, blobs: BlobsDep, settings: SettingsDep,
                         epoch: int = Query(ge=0, le=COUNT_MAX),
                         step: int = Query(ge=0, le=COUNT_MAX)) -> None:
    """Upload the job's checkpoint (opaque bytes the worker can resume from)."""
    staged = await receive(request, blobs, settings.max_upload_bytes)
    await committed(session, queue.put_blob, blobs, job_id, lease, "checkpoint", staged, epoch,
                    step)


@router.put("/jobs/{job_id}/weights", status_code=204, responses=_LEASE, openapi_extra=_BYTES,
            max_body_size=STREAMED)
async def put_weights(job_id: str, request: Request, lease: Lease, session: SessionDep,
                      token: CurrentWorkerToken, blobs: BlobsDep, settings: SettingsDep) -> None:
    """Upload the job's current weights (safetensors)."""
    staged = await receive(request, blobs, settings.max_upload_bytes)
    await committed(session, queue.put_blob, blobs, job_id, lease, "weights", staged, 0, 0)


@router.put("/jobs/{job_id}/state", status_code=204, responses=_LEASE)
def put_state(job_id: str, body: StateReport, lease: Lease, session: SessionDep,
              token: CurrentWorkerToken) -> None:
    """Report the live optimiser tree."""
    queue.put_state(session, job_id, lease, body.tree)


_FINISH_SCHEMA = {k: v for k, v in Finish.model_json_schema(
    ref_template="#/components/schemas/{model}").items() if k != "$defs"}
_FINISH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _FINISH_SCHEMA},
    "multipart/form-data": {"schema": {"type": "object", "required": ["finish"], "properties": {
        "finish": {"type": "string", "description": "the Finish, as JSON"},
        "weights": {"type": "string", "format": "binary",
                    "description": "the final weights (safetensors), as by PUT …/weights"}}}}}}}


def _finish_from_json(raw: str | bytes, where: list[str]) -> Finish:
    """The Finish in ``raw``; a 422 at ``where`` if it is not one. Malformed JSON (or bytes
    that are not UTF-8) is not echoed back: its ``input`` would be the whole body."""
    try:
        return Finish.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError([
            {**err, "loc": (*where, *err["loc"]),
             **({"input": {}} if err["type"] == "json_invalid" else {})}
            for err in e.errors(include_url=False)]) from None


async def _read_finish(request: Request, blobs: BlobStore, settings: Settings
                       ) -> tuple[Finish, Staging | None]:
    """The Finish of a JSON body, or of a multipart body's ``finish`` field with the final
    weights of its ``weights`` file streamed to staging (at most max_upload_bytes; the
    JSON, at most max_body_bytes)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raw = b"".join([c async for c in limited(request.stream(), settings.max_body_bytes)])
        return _finish_from_json(raw, ["body"]), None
    async with multipart(request, settings.max_body_bytes + settings.max_upload_bytes,
                         max_files=1, max_fields=1,
                         max_field_bytes=settings.max_body_bytes) as form:
        text, upload = form.get("finish"), form.get("weights")
        if not isinstance(text, str):
            raise InvalidError(["body", "finish"], "a multipart finish needs a 'finish' field "
                               "holding the Finish as JSON")
        if isinstance(upload, str):
            raise InvalidError(["body", "weights"], "'weights' must be a file")
        body = _finish_from_json(text, ["body", "finish"])
        if upload is None:
            return body, None
        return body, await stage_file(upload, blobs, settings.max_upload_bytes)


@router.post("/jobs/{job_id}/finish", status_code=204, responses=_LEASE,
             openapi_extra=_FINISH_BODY, max_body_size=STREAMED)
async def finish_job(job_id: str, request: Request, lease: Lease, session: SessionDep,
                     token: CurrentWorkerToken, blobs: BlobsDep, settings: SettingsDep) -> None:
    """End this worker's hold on the job: succeeded, failed, cancelled or paused. A
    multipart body carries the final weights with it (one request, not two)."""
    body, weights = await _read_finish(request, blobs, settings)
    await committed(session, queue.finish, job_id, lease, body, blobs, weights)


@router.post("/jobs/{job_id}/release", status_code=204, responses=_LEASE)
def release_job(job_id: str, lease: Lease, session: SessionDep,
                token: CurrentWorkerToken) -> None:
    """Let go of an unfinished job (the worker is stopping): it is queued again at once,
    to resume from its last checkpoint."""
    queue.release(session, job_id, lease)
