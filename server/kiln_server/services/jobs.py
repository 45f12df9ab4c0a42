"""Jobs as their owners see them: submit, list, control, read logs.

A user reaches only their own jobs: another user's id is a NotFoundError, exactly like an id
that does not exist. Lifecycle controls (pause, resume, cancel) act at once on a job no
worker holds; on a running job they are requests for the worker, which its controls
long-poll answers with as soon as they commit (its heartbeats carry them too).
Every control is a row numbered per job; rows are numbered under the job's row lock.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, defer, selectinload

from ..errors import ConflictError, InvalidError, NotFoundError
from ..models import (
    ACTIVE,
    Control,
    ControlKind,
    ControlStatus,
    Dataset,
    Epoch,
    Job,
    JobDataset,
    JobRequest,
    JobStatus,
    StepBatch,
    User,
    utcnow,
)
from ..schemas import (
    ControlCreate,
    ControlPublic,
    EpochPublic,
    JobCreate,
    JobPublic,
    StepsPublic,
)
from ..settings import Settings
from ..wakeups import QUEUE, tell, touch
from .jobspec import check_control, check_job, initial_state
from .settle import settle

__all__ = [
    "EventCursor",
    "JobsCursor",
    "add_control",
    "cancel",
    "changed_jobs",
    "controls",
    "create",
    "epochs",
    "get",
    "jobs_now",
    "list_",
    "news",
    "pause",
    "resume",
    "state",
    "steps",
]


def create(session: Session, owner: User, spec: JobCreate, settings: Settings) -> Job:
    """Validate and queue a job (InvalidError, and nothing stored, if any part is wrong)."""
    refs = [spec.train.dataset] + ([spec.validation.dataset] if spec.validation else [])
    datasets = {d.id: d for d in session.scalars(
        select(Dataset).where(Dataset.id.in_(refs), Dataset.owner_id == owner.id))}
    checked = check_job(spec, datasets, settings)
    job = Job(owner_id=owner.id, name=spec.name, spec=spec.model_dump(mode="json"),
              parameters=checked.parameters, paths=checked.paths, device=spec.device)
    session.add(job)
    session.flush()
    session.add_all(JobDataset(job_id=job.id, dataset_id=d) for d in checked.dataset_ids)
    touch(session, QUEUE)  # a claim held by an idle worker takes it as soon as this commits
    tell(session, job.id)  # its owner's jobs stream sends it
    return job


#: How jobs are read for a list of them: their workers in one more query, not one each,
#: and without the columns a list does not show.
_LISTED = (selectinload(Job.worker), defer(Job.state), defer(Job.paths))


def _cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        when, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(when), job_id
    except ValueError:
        raise InvalidError(["query", "cursor"], "is not a cursor this server handed out") from None


def list_(session: Session, owner: User, status: JobStatus | None, cursor: str | None,
          limit: int) -> tuple[list[Job], str | None]:
    """A page of the owner's jobs, newest first, and the cursor of the next page."""
    q = select(Job).where(Job.owner_id == owner.id).options(*_LISTED)
    if status is not None:
        q = q.where(Job.status == status)
    if cursor:
        when, job_id = _parse_cursor(cursor)
        q = q.where((Job.created_at < when) | ((Job.created_at == when) & (Job.id < job_id)))
    rows = list(session.scalars(q.order_by(Job.created_at.desc(), Job.id.desc())
                                .limit(limit + 1)))
    return rows[:limit], _cursor(rows[limit - 1]) if len(rows) > limit else None


def get(session: Session, owner: User, job_id: str, *, lock: bool = False) -> Job:
    """The owner's job (locked for update when ``lock``); NotFoundError otherwise."""
    q = select(Job).where(Job.id == job_id)
    job = session.scalar(q.with_for_update() if lock else q)
    if job is None or job.owner_id != owner.id:
        raise NotFoundError(f"no job {job_id!r}")
    return job


def state(session: Session, owner: User, job_id: str) -> dict[str, Any]:
    """The optimiser tree as the job's worker last reported it; before any report, the
    tree the job starts with (so a queued job's subtrees can be shown and steered)."""
    job = get(session, owner, job_id)
    return job.state if job.state is not None else initial_state(job.spec, job.paths)


def _record(session: Session, job: Job, kind: ControlKind, *, path: str = "",
            hyper: dict[str, Any] | None = None) -> Control:
    """A new pending control with the job's next number (the caller holds the job's lock)."""
    seq = (session.scalar(select(func.max(Control.seq)).where(Control.job_id == job.id)) or 0) + 1
    control = Control(job_id=job.id, seq=seq, kind=kind, path=path, hyper=hyper or {})
    session.add(control)
    session.flush()
    touch(session, job.id)  # the worker's long-poll answers as soon as this commits
    return control


def _carry_out(session: Session, job: Job, kind: ControlKind, status: JobStatus) -> None:
    """A pause, resume or cancel that no worker has to carry out: the job is ``status``
    now, and its controls, this one among them, are settled as any change to ``status``
    settles them."""
    job.status = status
    _record(session, job, kind)
    settle(session, [job.id], status)


def _active(job: Job, action: str) -> None:
    if job.status not in ACTIVE:
        raise ConflictError(f"cannot {action} job {job.id!r}: it has finished ({job.status.value})")


def _already_requested(job: Job) -> ConflictError:
    return ConflictError(f"job {job.id!r} has a {job.requested} requested already; its "
                         "worker carries it out at its next step boundary")


def add_control(session: Session, owner: User, job_id: str, body: ControlCreate,
                settings: Settings) -> Control:
    """Store an adjust/freeze/thaw for the worker to apply at its next step boundary."""
    job = get(session, owner, job_id, lock=True)
    _active(job, body.kind)
    count = session.scalar(select(func.count()).where(Control.job_id == job.id))
    if count >= settings.max_controls_per_job:
        raise ConflictError(f"job {job_id!r} has {count} controls, the limit")
    check_control(body.kind, body.path, body.hyper, job.paths, job.spec["optimiser"])
    return _record(session, job, ControlKind(body.kind), path=body.path, hyper=body.hyper)


def pause(session: Session, owner: User, job_id: str) -> Job:
    """Pause: at once if no worker holds the job, else at the worker's next heartbeat."""
    job = get(session, owner, job_id, lock=True)
    _active(job, "pause")
    if job.status == JobStatus.paused:
        raise ConflictError(f"job {job_id!r} is already paused")
    if job.requested is not None:
        raise _already_requested(job)
    if job.status == JobStatus.queued:
        _carry_out(session, job, ControlKind.pause, JobStatus.paused)
    else:
        job.requested = JobRequest.pause
        _record(session, job, ControlKind.pause)
    return job


def resume(session: Session, owner: User, job_id: str) -> Job:
    """Put a paused job back in the queue; whichever worker claims it resumes it."""
    job = get(session, owner, job_id, lock=True)
    if job.status != JobStatus.paused:
        raise ConflictError(f"cannot resume job {job_id!r}: it is {job.status.value}, not paused")
    job.queued_at = utcnow()
    touch(session, QUEUE)
    _carry_out(session, job, ControlKind.resume, JobStatus.queued)
    return job


def cancel(session: Session, owner: User, job_id: str) -> Job:
    """Cancel: at once if no worker holds the job, else at the worker's next heartbeat."""
    job = get(session, owner, job_id, lock=True)
    _active(job, "cancel")
    if job.requested == JobRequest.cancel:  # a pause requested may still become a cancel
        raise _already_requested(job)
    if job.status == JobStatus.running:
        job.requested = JobRequest.cancel
        _record(session, job, ControlKind.cancel)
    else:
        job.finished_at = utcnow()
        _carry_out(session, job, ControlKind.cancel, JobStatus.cancelled)
    return job


def controls(session: Session, owner: User, job_id: str) -> list[Control]:
    get(session, owner, job_id)
    return list(session.scalars(select(Control).where(Control.job_id == job_id)
                                .order_by(Control.seq)))


def epochs(session: Session, owner: User, job_id: str) -> list[Epoch]:
    get(session, owner, job_id)
    return list(session.scalars(select(Epoch).where(Epoch.job_id == job_id)
                                .order_by(Epoch.epoch)))


def steps(session: Session, owner: User, job_id: str, max_points: int) -> StepsPublic:
    """Per-step losses, at most ``max_points``: each point is ``stride`` consecutive stored
    steps, with the mean, the lowest and the highest of their finite losses (a spike
    survives the downsampling). numpy over the whole series: 100,000 steps take a few ms
    beyond reading them."""
    get(session, owner, job_id)
    rows = session.execute(select(StepBatch.first_step, StepBatch.losses)
                           .where(StepBatch.job_id == job_id)
                           .order_by(StepBatch.first_step)).all()
    first = np.concatenate([np.arange(start, start + len(batch)) for start, batch in rows]
                           or [np.empty(0, np.int64)])
    losses = np.array([v for _, batch in rows for v in batch], dtype=np.float64)  # None: nan
    count = len(losses)
    stride = max(1, -(-count // max_points))
    buckets = np.concatenate([losses, np.full(-count % stride, np.nan)]).reshape(-1, stride)
    finite = np.isfinite(buckets)
    n = finite.sum(axis=1)
    mean = np.where(finite, buckets, 0.0).sum(axis=1) / np.maximum(n, 1)
    low = np.min(buckets, axis=1, where=finite, initial=np.inf)
    high = np.max(buckets, axis=1, where=finite, initial=-np.inf)
    empty = (n == 0).tolist()

    def points(values: np.ndarray) -> list[float | None]:
        return [None if e else v for v, e in zip(values.tolist(), empty, strict=True)]

    return StepsPublic(steps=first[::stride].tolist(), losses=points(mean), min=points(low),
                       max=points(high), stride=stride, count=count)


@dataclass
class EventCursor:
    """What an event stream has sent, so that a stream resumed from it sends the rest once.

    Step batches and epoch rows are sent in the order of their row ids (a job's rows are
    written one transaction at a time, under its lock, so ids grow in commit order), and
    controls by ``seq`` (numbered under the same lock: every control up to ``control_seq``
    has been sent, those in ``pending`` only as pending). A control's state and the job's
    (status, epoch) are sent when they differ from what was sent last.
    """

    step_id: int = 0
    epoch_id: int = 0
    control_seq: int = 0
    pending: set[int] = field(default_factory=set)
    status: str | None = None
    epoch: int = -1

    def encode(self, job_id: str) -> str:
        """The cursor as an SSE event id: opaque, URL-safe, bound to its job."""
        text = ":".join(["1", job_id[:_JOB_PREFIX], str(self.step_id), str(self.epoch_id),
                         str(self.control_seq), "-".join(map(str, sorted(self.pending))),
                         self.status or "", str(self.epoch)])
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, event_id: str, job_id: str) -> EventCursor:
        """The cursor of an id that :meth:`encode` gave for this job (ValueError if not)."""
        try:
            text = base64.urlsafe_b64decode(event_id + "=" * (-len(event_id) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            text = ""
        m = _EVENT_ID.fullmatch(text)
        if m is None or m["status"] not in {"", *JobStatus}:
            raise ValueError("is not an event id of this server")
        if m["job"] != job_id[:_JOB_PREFIX]:
            raise ValueError(f"is an event id of another job, not of {job_id!r}")
        pending = {int(n) for n in m["pending"].split("-")} if m["pending"] else set()
        cursor = cls(int(m["step_id"]), int(m["epoch_id"]), int(m["seq"]), pending,
                     m["status"] or None, int(m["epoch"]))
        if any(n > cursor.control_seq for n in pending):
            raise ValueError("is not an event id of this server")
        return cursor


#: How much of the job id an event id carries: enough to refuse another job's ids.
_JOB_PREFIX = 8
_EVENT_ID = re.compile(r"1:(?P<job>\w{0,8}):(?P<step_id>\d{1,18}):(?P<epoch_id>\d{1,18}):"
                       r"(?P<seq>\d{1,18}):(?P<pending>(?:\d{1,18}(?:-\d{1,18})*)?):"
                       r"(?P<status>[a-z]*):(?P<epoch>-1|\d{1,18})", re.ASCII)


def news(session: Session, owner: User, job_id: str, cursor: EventCursor
         ) -> tuple[list[tuple[str, dict[str, Any], str]], bool]:
    """Events since ``cursor`` (which it advances), each as (kind, data, the event id of
    the cursor just after it), and whether the job has finished."""
    job = get(session, owner, job_id)
    out: list[tuple[str, dict[str, Any], str]] = []

    def sent(kind: str, data: dict[str, Any]) -> None:
        out.append((kind, data, cursor.encode(job_id)))

    for row in session.scalars(select(StepBatch).where(StepBatch.job_id == job_id,
                                                       StepBatch.id > cursor.step_id)
                               .order_by(StepBatch.id)):
        cursor.step_id = row.id
        sent("steps", {"epoch": row.epoch, "first_step": row.first_step, "losses": row.losses})
    for row in session.scalars(select(Epoch).where(Epoch.job_id == job_id,
                                                   Epoch.id > cursor.epoch_id)
                               .order_by(Epoch.id)):
        cursor.epoch_id = row.id
        sent("epoch", EpochPublic.model_validate(row).model_dump(mode="json"))
    for c in session.scalars(select(Control).where(
            Control.job_id == job_id,
            (Control.seq > cursor.control_seq) | Control.seq.in_(cursor.pending))
            .order_by(Control.seq)):
        pending = c.status == ControlStatus.pending
        if c.seq in cursor.pending and pending:
            continue  # sent as pending already; sent again once resolved
        cursor.control_seq = max(cursor.control_seq, c.seq)
        if pending:
            cursor.pending.add(c.seq)
        else:
            cursor.pending.discard(c.seq)
        sent("control", ControlPublic.model_validate(c).model_dump(mode="json"))
    if (job.status.value, job.epoch) != (cursor.status, cursor.epoch):
        cursor.status, cursor.epoch = job.status.value, job.epoch
        sent("status", {"status": job.status.value, "epoch": job.epoch, "step": job.step,
                        "error": job.error})
    return out, job.status not in ACTIVE


@dataclass(frozen=True)
class JobsCursor:
    """Where a user's jobs stream is, in the order of (``updated_at``, id): past every job
    changed before ``at``, and past those changed at ``at`` up to ``job_id`` (all of them
    when None). Stamps grow in commit order (services/stamps.py), so whatever commits
    later comes after the cursor."""

    at: datetime  # UTC
    job_id: str | None = None

    def encode(self) -> str:
        """The cursor as an SSE event id: opaque, URL-safe."""
        text = f"j1|{self.at.isoformat()}|{self.job_id or ''}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, event_id: str) -> JobsCursor:
        """The cursor of an id that :meth:`encode` gave (ValueError if it is not one)."""
        try:
            text = base64.urlsafe_b64decode(event_id + "=" * (-len(event_id) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            text = ""
        m = _JOBS_EVENT_ID.fullmatch(text)
        try:
            at = datetime.fromisoformat(m["at"]).astimezone(UTC) if m else None
        except (ValueError, OverflowError):
            at = None
        if at is None:
            raise ValueError("is not an event id of this server's jobs stream")
        return cls(at, m["job"] or None)

    def after(self) -> ColumnElement[bool]:
        """The jobs past the cursor."""
        if self.job_id is None:
            return Job.updated_at > self.at
        return (Job.updated_at > self.at) | ((Job.updated_at == self.at)
                                             & (Job.id > self.job_id))


_JOBS_EVENT_ID = re.compile(r"j1\|(?P<at>[0-9T:.+-]{19,40})\|(?P<job>[0-9a-f]{0,32})", re.ASCII)


def jobs_now(session: Session, owner: User) -> JobsCursor:
    """A cursor past every change of the owner's jobs committed so far."""
    last = session.execute(select(Job.updated_at, Job.id).where(Job.owner_id == owner.id)
                           .order_by(Job.updated_at.desc(), Job.id.desc()).limit(1)).first()
    if last is None:
        return JobsCursor(datetime.min.replace(tzinfo=UTC))
    return JobsCursor(last.updated_at.astimezone(UTC), last.id)


def changed_jobs(session: Session, owner: User, cursor: JobsCursor, limit: int
                 ) -> tuple[list[tuple[str, dict[str, Any], str]], JobsCursor]:
    """The owner's jobs changed after ``cursor``, at most ``limit``, in the cursor's order:
    each as ("job", its JobPublic, the event id just after it); and the cursor after them."""
    out: list[tuple[str, dict[str, Any], str]] = []
    for job in session.scalars(select(Job).where(Job.owner_id == owner.id, cursor.after())
                               .options(*_LISTED).order_by(Job.updated_at, Job.id)
                               .limit(limit)):
        cursor = JobsCursor(job.updated_at.astimezone(UTC), job.id)
        out.append(("job", JobPublic.model_validate(job).model_dump(mode="json"),
                    cursor.encode()))
    return out, cursor
