"""The queue as workers see it: register, claim, heartbeat, report, finish; and the reaper.

A claim takes jobs for a batch of workers at once (the claim route gathers the claims
that arrive while the last batch runs, api/claim_batches.py), as if they had claimed one
after another: a statement picks the oldest queued jobs that the workers' device fits
(``jobs.device``: any, cpu, gpu; see CLAIMS) ``FOR UPDATE SKIP LOCKED``, and one
``UPDATE … RETURNING`` marks them all running, each with its worker and lease. A job no
worker present fits just stays queued, in nobody's way. On PostgreSQL two claimers skip
each other's locked rows; SQLAlchemy renders no ``FOR UPDATE`` on SQLite, whose writers
are serialised by ``BEGIN IMMEDIATE`` (db.py).

Every write for a job carries the lease token of its claim. :func:`_leased` locks the
job's row and compares the token and the expiry, so a worker that stalled past its lease
(and whose job the reaper requeued, or another worker claimed) is refused with a
ConflictError and changes nothing in the database. A write that brings a blob (a
checkpoint, the weights) puts it in the blob store first, before its transaction begins:
an upload to S3 must hold neither SQLite's write lock nor the job's row lock. A write
then refused leaves its blob in the store, unreferenced, as a superseded checkpoint is,
until the sweep removes it (blob_sweep.py).

A job's progress (``epoch``, ``step``: epochs and global steps completed) is written in
two places: a claim starts it at the checkpoint the new holder resumes from, and
:func:`_report` (every worker write that reports progress: heartbeat, logs, finish)
advances it, never back, whichever of those writes arrives first.

Reaping is the reaper's alone (app.py runs it every ``reaper_interval_s``): a claim does
not reap, so it stays one statement on an index.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Row, bindparam, case, delete, func, select, update
from sqlalchemy.orm import Session, defer

from ..blobs import BlobStore, Staging
from ..errors import ConflictError, InvalidError, NotFoundError
from ..models import (
    Control,
    ControlStatus,
    Dataset,
    DeviceKind,
    Epoch,
    Job,
    JobDataset,
    JobDevice,
    JobRequest,
    JobStatus,
    Outcome,
    StepBatch,
    Token,
    Worker,
    utcnow,
)
from ..schemas import (
    Action,
    ControlResults,
    EpochIn,
    Finish,
    Heartbeat,
    LogsIn,
    StepsIn,
    WorkerRegister,
)
from ..wakeups import QUEUE, tell, touch
from .settle import LIFECYCLE, settle

__all__ = [
    "CLAIMS",
    "claim",
    "claimable",
    "claimed_context",
    "control_results",
    "controls_after",
    "finish",
    "heartbeat",
    "post_logs",
    "put_blob",
    "put_state",
    "reap",
    "register",
    "release",
    "requeue_held_by",
    "workers_seen",
]


def register(session: Session, token: Token, body: WorkerRegister) -> Worker:
    worker = Worker(token_id=token.id, name=body.name,
                    device=body.device.model_dump(mode="json", exclude_none=True))
    session.add(worker)
    session.flush()
    return worker


#: Marks the workers seen now (a claim's, a heartbeat's); their ids, tokens and devices.
_SEEN = (update(Worker).where(Worker.id.in_(bindparam("workers", expanding=True)))
         .values(last_seen_at=bindparam("now"))
         .returning(Worker.id, Worker.token_id, Worker.device)
         .execution_options(synchronize_session=False))


def workers_seen(session: Session, asks: Sequence[tuple[str, str]]) -> list[Row[Any] | None]:
    """For each ``(token id, worker id)`` asked, the worker (id, token_id, device), marked
    seen now, if one was registered with that token, else None."""
    found = {w.id: w for w in session.execute(
        _SEEN, {"workers": sorted({w for _, w in asks}), "now": utcnow()})}
    return [w if w is not None and w.token_id == token_id else None
            for token_id, worker_id in asks for w in [found.get(worker_id)]]


def _let_go(session: Session, which: ColumnElement[bool], now: datetime, why: str
            ) -> list[str]:
    """End the hold on the running jobs ``which`` selects: each goes back to the queue (or
    to paused / cancelled when that was requested, the request then applied ``why``),
    keeping its attempt and checkpoint for the next holder, its pending controls settled
    for the status it takes (a queued or paused job keeps its adjust, freeze and thaw).
    The ids of the jobs let go."""
    rows = session.execute(update(Job).where(Job.status == JobStatus.running, which).values(
        status=case((Job.requested == JobRequest.cancel, JobStatus.cancelled.value),
                    (Job.requested == JobRequest.pause, JobStatus.paused.value),
                    else_=JobStatus.queued.value),
        finished_at=case((Job.requested == JobRequest.cancel, now), else_=Job.finished_at),
        requested=None, lease_token=None, lease_expires_at=None, worker_id=None,
    ).returning(Job.id, Job.status), execution_options={"synchronize_session": False}).all()
    for job_id, status in rows:
        touch(session, job_id)  # its long-poll learns at once that the lease is gone
        if status == JobStatus.queued:
            touch(session, QUEUE)
    for status in {s for _, s in rows}:
        settle(session, [i for i, s in rows if s == status], status, why)
    return [i for i, _ in rows]


def reap(session: Session, now: datetime | None = None) -> list[str]:
    """Return running jobs whose lease expired to the queue (or to paused / cancelled when
    that was requested); the ids of the jobs reaped. The reaper's round: idempotent, so
    every API replica may run it."""
    now = now or utcnow()
    return _let_go(session, Job.lease_expires_at < now, now,
                   "when the worker's lease expired")


def release(session: Session, job_id: str, lease: str) -> None:
    """The worker lets go of the job (it is stopping, its checkpoint is posted): back to
    the queue at once, as the reaper would return it once the lease lapsed."""
    job = _leased(session, job_id, lease)
    _let_go(session, Job.id == job.id, utcnow(), "when the worker released the job")


def requeue_held_by(session: Session, token_id: str, name: str) -> list[str]:
    """Let go of the running jobs held by the workers registered with this token under
    this name, as :func:`release` does: for a worker known to be dead (its process has
    exited), whose jobs need not wait for their leases to lapse. The ids of the jobs let
    go; a job that another worker has claimed since is that worker's, and stays."""
    workers = select(Worker.id).where(Worker.token_id == token_id, Worker.name == name)
    return _let_go(session, Job.worker_id.in_(workers), utcnow(),
                   "when the worker died")


#: The jobs a worker may claim, by the kind of device it registered.
CLAIMS = {DeviceKind.cpu: (JobDevice.any, JobDevice.cpu),
          DeviceKind.cuda: (JobDevice.any, JobDevice.gpu)}


class _Claimant(Protocol):
    id: str
    device: dict[str, Any]


def claimable(worker: _Claimant) -> tuple[JobDevice, ...]:
    """The devices of the jobs ``worker`` may claim (a device stored without a known kind,
    by a worker from before the kinds were checked, is a CPU)."""
    return CLAIMS.get(worker.device.get("kind"), CLAIMS[DeviceKind.cpu])


#: The oldest ``n`` queued jobs of the ``devices`` bound but those ``taken`` already,
#: locked, skipping those that another claim has locked (built once: building a
#: statement costs more than running it).
_PICK = (select(Job.id).where(Job.status == JobStatus.queued,
                              Job.device.in_(bindparam("devices", expanding=True)),
                              Job.id.not_in(bindparam("taken", expanding=True)))
         .order_by(Job.queued_at, Job.id).limit(bindparam("n"))
         .with_for_update(skip_locked=True))


def claim(session: Session, workers: Sequence[_Claimant], lease_s: float
          ) -> list[Job | None]:
    """Take for each of ``workers``, in order, the oldest queued job of a device it has (a
    job waiting for another kind of worker holds up no other), with a lease of its own;
    None for a worker left without one: what as many claims one after another would
    take. When the workers are of one kind, one statement picks all their jobs, and one
    more hands them out: a batch of claims costs about what one does. (Workers of both
    kinds pick one after the other: the oldest jobs that either may run must go to the
    first to ask.)"""
    if not workers:
        return []
    kinds = [claimable(worker) for worker in workers]
    picks = ([(kinds[0], list(range(len(workers))))] if len(set(kinds)) == 1
             else [(kind, [i]) for i, kind in enumerate(kinds)])
    now = utcnow()
    handed: dict[str, int] = {}  # job id -> the worker's place in ``workers``
    for devices, places in picks:
        picked = session.scalars(_PICK, {"devices": list(devices), "n": len(places),
                                         "taken": list(handed)}).all()
        handed.update(zip(picked, places, strict=False))
    claimed: list[Job | None] = [None] * len(workers)
    if not handed:
        return claimed
    leases = {job_id: secrets.token_hex(16) for job_id in handed}
    jobs = session.scalars(
        update(Job).where(Job.id.in_(list(handed)))
        .values(status=JobStatus.running,
                worker_id=case({j: workers[i].id for j, i in handed.items()}, value=Job.id),
                lease_token=case(leases, value=Job.id),
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempt=Job.attempt + 1, epoch=func.coalesce(Job.checkpoint_epoch, 0),
                step=func.coalesce(Job.checkpoint_step, 0),
                started_at=func.coalesce(Job.started_at, now))
        .returning(Job),
        execution_options={"synchronize_session": False, "populate_existing": True})
    for job in jobs:
        claimed[handed[job.id]] = job
        tell(session, job.id)  # its streams report it running
    return claimed


_CONTEXT_DATASETS = (select(JobDataset.job_id, Dataset)
                     .join(Dataset, JobDataset.dataset_id == Dataset.id)
                     .where(JobDataset.job_id.in_(bindparam("jobs", expanding=True))))
_CONTEXT_CONTROLS = (select(Control).where(Control.job_id.in_(bindparam("jobs", expanding=True)))
                     .order_by(Control.job_id, Control.seq))


def claimed_context(session: Session, jobs: Sequence[Job]
                    ) -> dict[str, tuple[dict[str, Dataset], list[Control]]]:
    """By job id, the datasets and every control of each claimed job, for the claim's
    reply."""
    ids = [job.id for job in jobs]
    context: dict[str, tuple[dict[str, Dataset], list[Control]]] = {i: ({}, []) for i in ids}
    for job_id, dataset in session.execute(_CONTEXT_DATASETS, {"jobs": ids}):
        context[job_id][0][dataset.id] = dataset
    for control in session.scalars(_CONTEXT_CONTROLS, {"jobs": ids}):
        context[control.job_id][1].append(control)
    return context


_JOB = select(Job).where(Job.id == bindparam("job")).options(
    # The JSON columns wait until asked for: most writes never read them, and parsing
    # them was a good part of a request's cost.
    defer(Job.spec), defer(Job.paths), defer(Job.state))
_JOB_LOCKED = _JOB.with_for_update()


def _leased(session: Session, job_id: str, lease: str, *, lock: bool = True) -> Job:
    """The job, row-locked unless ``lock`` is False (a read), if ``lease`` is its current,
    unexpired lease; ConflictError if not."""
    job = session.scalar(_JOB_LOCKED if lock else _JOB, {"job": job_id})
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    if (job.status != JobStatus.running or job.lease_token is None
            or not secrets.compare_digest(job.lease_token, lease)
            or job.lease_expires_at < utcnow()):
        raise ConflictError(f"the lease on job {job_id!r} is no longer held (the job is "
                            f"{job.status.value}); stop working on it")
    return job


def heartbeat(session: Session, job_id: str, lease: str, body: Heartbeat, lease_s: float
              ) -> tuple[Job, Action, list[Control]]:
    """Renew the lease; what the worker should do, and the controls it has yet to apply."""
    job = _leased(session, job_id, lease)
    now = utcnow()
    job.lease_expires_at = now + timedelta(seconds=lease_s)
    moved = _report(session, job, body.epoch, body.step)
    if body.steps_per_epoch not in (None, job.steps_per_epoch):
        job.steps_per_epoch = body.steps_per_epoch
        moved = True
    if moved:  # a renewed lease alone is no news
        tell(session, job.id)
    if job.worker_id:
        session.execute(_SEEN, {"workers": [job.worker_id], "now": now})
    return job, _action(job), list(session.scalars(_PENDING, {"job": job.id}))


# A heartbeat's and a controls long-poll's statements, built once.
_PENDING = (select(Control).where(Control.job_id == bindparam("job"),
                                  Control.status == ControlStatus.pending,
                                  Control.kind.not_in(LIFECYCLE)).order_by(Control.seq))
_CONTROLS_AFTER = (select(Control).where(Control.job_id == bindparam("job"),
                                         Control.seq > bindparam("after"))
                   .order_by(Control.seq))


def _action(job: Job) -> Action:
    """What the worker holding ``job`` is asked to do."""
    return Action(job.requested) if job.requested else Action.continue_


def controls_after(session: Session, job_id: str, lease: str, after: int
                   ) -> tuple[Action, list[Control], int]:
    """What a worker's controls long-poll reads: the action asked of it, the pending
    adjust/freeze/thaw numbered above ``after``, and the highest number above ``after``
    (``after`` if none): every control up to it has now been seen."""
    job = _leased(session, job_id, lease, lock=False)
    rows = list(session.scalars(_CONTROLS_AFTER, {"job": job.id, "after": after}))
    pending = [c for c in rows
               if c.status == ControlStatus.pending and c.kind not in LIFECYCLE]
    return _action(job), pending, rows[-1].seq if rows else after


def post_logs(session: Session, job_id: str, lease: str, body: LogsIn) -> None:
    """Store a batch of step losses and epoch rows.

    A step batch replaces every stored batch from its first step on. A worker that
    resumes a job from a checkpoint posts again, from the step after it, what the job's
    last holder posted, though not in the same batches (workers post on a timer);
    batches always end at a checkpoint (the worker posts its steps before the
    checkpoint), so dropping what starts at or after the new batch leaves each step once.
    An epoch row posted again overwrites its row, never doubles it.
    """
    job = _leased(session, job_id, lease)
    _report(session, job, step=body.step if body.epochs else 0, steps=body.steps,
            epochs=body.epochs)
    tell(session, job.id)


def _report(session: Session, job: Job, epoch: int = 0, step: int = 0,
            steps: StepsIn | None = None, epochs: Sequence[EpochIn] = ()) -> bool:
    """What a worker reports under the job's lease: the progress it states, and a step
    batch and epoch rows (either optional) to store, which count as progress too. The one
    writer of a claimed job's progress: it never goes back (a heartbeat sent before a log
    post may arrive after it). Whether it moved."""
    if steps is not None:
        _store_steps(session, job, steps)
        step = max(step, steps.first_step + len(steps.losses) - 1)
    if epochs:
        epoch = max(epoch, _store_epochs(session, job, epochs))
    before = job.epoch, job.step
    job.epoch, job.step = max(job.epoch, epoch), max(job.step, step)
    return (job.epoch, job.step) != before


def _store_steps(session: Session, job: Job, body: StepsIn) -> None:
    session.execute(delete(StepBatch).where(StepBatch.job_id == job.id,
                                            StepBatch.first_step >= body.first_step))
    session.add(StepBatch(job_id=job.id, epoch=body.epoch, first_step=body.first_step,
                          losses=body.losses))


def _store_epochs(session: Session, job: Job, rows: Sequence[EpochIn]) -> int:
    """Store the epoch rows (and the last as the job's ``latest``); the last's number."""
    existing = {e.epoch: e for e in session.scalars(select(Epoch).where(
        Epoch.job_id == job.id, Epoch.epoch.in_([e.epoch for e in rows])))}
    for e in rows:
        row = existing.get(e.epoch) or Epoch(job_id=job.id, epoch=e.epoch)
        for k, v in e.model_dump().items():
            setattr(row, k, v)
        session.add(row)
    last = max(rows, key=lambda e: e.epoch)
    if job.latest is None or last.epoch >= job.latest["epoch"]:
        job.latest = {"epoch": last.epoch, "train_loss": last.train_loss,
                      "val_loss": last.val_loss, "metrics": last.metrics}
    return last.epoch


def control_results(session: Session, job_id: str, lease: str, body: ControlResults) -> None:
    """Mark controls applied (with the epoch and step) or rejected (with the reason)."""
    job = _leased(session, job_id, lease)
    tell(session, job.id)
    seqs = [r.seq for r in body.results]
    by_seq = {c.seq: c for c in session.scalars(select(Control).where(
        Control.job_id == job.id, Control.seq.in_(seqs)))}
    for i, r in enumerate(body.results):
        control = by_seq.get(r.seq)
        if control is None or control.kind in LIFECYCLE:
            raise InvalidError(["body", "results", i, "seq"], f"job {job_id!r} has no adjust, "
                               f"freeze or thaw control {r.seq}")
        if control.status != ControlStatus.pending:
            continue  # reported again after a retry: the first report stands
        if r.status == ControlStatus.applied and (r.epoch is None or r.step is None):
            raise InvalidError(["body", "results", i],
                               "an applied control needs its epoch and step")
        control.status = ControlStatus(r.status)
        control.applied_epoch, control.applied_step = r.epoch, r.step
        control.reason, control.resolved_at = r.reason, utcnow()


def put_blob(session: Session, blobs: BlobStore, job_id: str, lease: str, kind: str,
             staged: Staging, epoch: int, step: int) -> str:
    """Keep an uploaded checkpoint or the job's weights; the blob's sha256. A checkpoint
    older than the one the job holds changes nothing: a job's checkpoints only move on
    (a resumed job trains on from its checkpoint), and an upload that arrives late (its
    first try retried, the retry done first) must not send the next holder back."""
    sha = blobs.commit(staged)  # before the transaction begins (see the module's doc)
    job = _leased(session, job_id, lease)
    if kind == "checkpoint":
        if job.checkpoint_step is None or step >= job.checkpoint_step:
            job.checkpoint_sha256, job.checkpoint_epoch, job.checkpoint_step = sha, epoch, step
    else:
        job.weights_sha256 = sha
        tell(session, job.id)  # it has weights now
    return sha


def put_state(session: Session, job_id: str, lease: str, tree: dict[str, Any]) -> None:
    _leased(session, job_id, lease).state = tree


def finish(session: Session, job_id: str, lease: str, body: Finish,
           blobs: BlobStore | None = None, weights: Staging | None = None) -> Job:
    """End the worker's hold on a job: finished, failed, cancelled, or paused (to resume),
    with the last step losses and epoch rows, and the final weights, if it sends them."""
    sha = None if weights is None else blobs.commit(weights)  # before the transaction
    job = _leased(session, job_id, lease)
    if sha is not None:
        job.weights_sha256 = sha
    _report(session, job, body.epoch, body.step, body.steps, body.epochs)
    tell(session, job.id)
    job.status = JobStatus(body.status)
    job.error = body.error if body.status == Outcome.failed else None
    job.requested = None
    job.lease_token = job.lease_expires_at = job.worker_id = None
    touch(session, job.id)  # the job's long-poll ends now, not when its wait runs out
    if body.status != Outcome.paused:
        job.finished_at = utcnow()
    settle(session, [job.id], job.status)
    return job
