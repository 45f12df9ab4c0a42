"""The database tables (SQLAlchemy 2 declarative). Migrations in ../../migrations mirror them.

Times are timezone-aware UTC. Ids are random hex strings so that they can be handed out
before insertion and guessed by nobody. JSON columns hold specs and small records; blobs
(datasets, checkpoints, weights) live in the blob store and are referenced by sha256.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ACTIVE",
    "Base",
    "BlobStoreMark",
    "Control",
    "ControlKind",
    "ControlStatus",
    "Dataset",
    "DeviceKind",
    "Epoch",
    "Job",
    "JobDataset",
    "JobDevice",
    "JobRequest",
    "JobStatus",
    "Outcome",
    "StepBatch",
    "Token",
    "User",
    "Worker",
    "new_id",
    "utcnow",
]


def new_id() -> str:
    """A random 128-bit id as 32 hex digits."""
    return secrets.token_hex(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


#: Statuses of a job that has not finished (it holds its datasets, it accepts controls).
ACTIVE = (JobStatus.queued, JobStatus.running, JobStatus.paused)


class Outcome(enum.StrEnum):
    """How a worker ends its hold on a job (its finish): the status the job takes."""

    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"


class JobRequest(enum.StrEnum):
    """A lifecycle change asked of a running job's worker, which carries it out at a step
    boundary (``Job.requested`` until then)."""

    pause = "pause"
    cancel = "cancel"


class DeviceKind(enum.StrEnum):
    """What a worker trains on (the ``kind`` of the device it registers)."""

    cpu = "cpu"
    cuda = "cuda"


class JobDevice(enum.StrEnum):
    """What a job asks to be trained on: any worker, a CPU worker, or a GPU worker."""

    any = "any"
    cpu = "cpu"
    gpu = "gpu"


class ControlKind(enum.StrEnum):
    adjust = "adjust"
    freeze = "freeze"
    thaw = "thaw"
    pause = "pause"
    resume = "resume"
    cancel = "cancel"


class ControlStatus(enum.StrEnum):
    pending = "pending"
    applied = "applied"
    rejected = "rejected"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native PostgreSQL enum): adding a value needs no migration.
    return Enum(cls, native_enum=False, length=16, values_callable=lambda c: [m.value for m in c])


class Tz(TypeDecorator):
    """A timezone-aware UTC timestamp, also on SQLite (which drops the zone on the way in)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: Tz(), dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    """A bearer token, stored as its sha256 only. ``worker`` tokens reach only the worker API.
    ``prefix`` is the start of a generated token, to tell it apart (services/auth.py)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    worker: Mapped[bool] = mapped_column(Boolean, default=False)
    prefix: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """An uploaded .npz: its blob and its arrays' names, shapes and dtypes."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # [{"name", "shape", "dtype"}, with "min" and "max" for integer and boolean arrays
    # uploaded since they are recorded]
    arrays: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    device: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A training job: its validated spec, where it is in its lifecycle, and its lease.

    ``lease_token`` is new at every claim; a worker's writes must carry the current one.
    ``requested`` is a pause or cancel the worker has yet to act on.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_id_updated_at", "owner_id", "updated_at"),
        # The queue in claim order (services/queue.claim's pick), the queued rows only.
        Index("ix_jobs_queue", "queued_at", "id", postgresql_where=text("status = 'queued'"),
              sqlite_where=text("status = 'queued'")),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), index=True,
                                              default=JobStatus.queued)
    spec: Mapped[dict[str, Any]] = mapped_column()
    parameters: Mapped[int] = mapped_column(BigInteger)
    paths: Mapped[list[Any]] = mapped_column()  # the optimiser state's subtree paths
    requested: Mapped[JobRequest | None] = mapped_column(_enum(JobRequest))
    # Which workers may claim it (services/queue.py's claim). The database's default (a
    # job from before 0006, or a row written as an older revision had it) is any.
    device: Mapped[JobDevice] = mapped_column(_enum(JobDevice),
                                              server_default=JobDevice.any.value)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Progress, as the worker holding the job last reported it (heartbeats, logs, finish):
    # epochs and global steps completed; a new claim starts them from its checkpoint.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps_per_epoch: Mapped[int | None] = mapped_column(Integer)  # once a worker reports it
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # live optimiser tree
    # The last epoch row's {epoch, train_loss, val_loss, metrics}, kept here so that a
    # list of jobs shows it without a query per job (services/queue.py writes both).
    latest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # When the job last changed in a way its event streams report: stamped at commit,
    # in commit order (services/stamps.py); the jobs stream's cursor.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    worker: Mapped[Worker | None] = relationship()  # the worker holding it now

    @property
    def has_weights(self) -> bool:
        return self.weights_sha256 is not None


class JobDataset(Base):
    """Which datasets a job reads (a dataset cannot be deleted while an active job does)."""

    __tablename__ = "job_datasets"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)


class Control(Base):
    """A control on a job, numbered per job (``seq`` from 1), and what became of it."""

    __tablename__ = "controls"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[ControlKind] = mapped_column(_enum(ControlKind))
    path: Mapped[str] = mapped_column(String(1000), default="")
    hyper: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[ControlStatus] = mapped_column(_enum(ControlStatus),
                                                  default=ControlStatus.pending)
    applied_epoch: Mapped[int | None] = mapped_column(Integer)
    applied_step: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()


class Epoch(Base):
    """One row per (job, epoch): written again, never doubled, when a resumed job reposts it."""

    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    learning_rates: Mapped[dict[str, Any]] = mapped_column(default=dict)  # path -> eta
    frozen: Mapped[list[Any]] = mapped_column(default=list)
    skipped_steps: Mapped[int] = mapped_column(Integer, default=0)
    samples_per_s: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepBatch(Base):
    """Consecutive per-step losses, compactly: one row per batch a worker posts."""

    __tablename__ = "step_batches"
    # AUTOINCREMENT on SQLite: a batch replaced by a resumed worker's must get a new id,
    # never the one it replaced (event streams resume from the last id they sent).
    __table_args__ = (UniqueConstraint("job_id", "first_step"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    first_step: Mapped[int] = mapped_column(Integer)  # global step of losses[0], from 1
    losses: Mapped[list[Any]] = mapped_column()  # floats; null for a skipped step
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlobStoreMark(Base):
    """The blob store this database's replicas share, named by a random id whose mark the
    store holds (services/blob_store.py). One row, its id 1."""

    __tablename__ = "blob_store"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    store_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
