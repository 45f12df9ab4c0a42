"""The API's request and response bodies (pydantic v2): the OpenAPI document's schemas.

The ladder follows full-stack-fastapi-template: ``XCreate`` is what a client sends,
``XPublic`` what it gets back, ``XsPublic`` a page of them. Model, optimiser and schedule
specs are plain JSON objects here; the engine validates them (services/jobspec.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .models import ControlKind, ControlStatus, JobStatus

__all__ = [
    "ClaimRequest",
    "ClaimedJob",
    "ControlCreate",
    "ControlPublic",
    "ControlResult",
    "ControlResults",
    "ControlsReply",
    "DataRef",
    "DatasetArray",
    "DatasetPublic",
    "DatasetsPublic",
    "EpochIn",
    "EpochPublic",
    "Finish",
    "Heartbeat",
    "HeartbeatReply",
    "JobCreate",
    "JobPublic",
    "JobsPublic",
    "LogsIn",
    "StateReport",
    "StepsIn",
    "StepsPublic",
    "StopCriterion",
    "TokenCreate",
    "TokenPublic",
    "WorkerPublic",
    "WorkerRegister",
    "WorkersPublic",
]

METRICS = ("loss", "accuracy")
#: What a stop criterion may watch: what every epoch row records. Training accuracy is
#: not among them: the trainer records only the training loss (an accuracy over batches
#: of a model that moves within the epoch would also be a poor signal to stop on).
STOP_METRICS = ("train_loss", "val_loss", "val_accuracy")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- datasets ---------------------------------------------------------------------------

class DatasetArray(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class DatasetPublic(_Out):
    id: str
    name: str
    sha256: str
    size_bytes: int
    arrays: list[DatasetArray]
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# --- jobs -------------------------------------------------------------------------------

class DataRef(_In):
    """Which arrays of which uploaded dataset are the inputs and the targets."""

    dataset: str
    x: str = "x"
    y: str = "y"


class StopCriterion(_In):
    """Stop early once ``metric`` (after an epoch) is at least / at most a threshold."""

    metric: Literal["train_loss", "val_loss", "val_accuracy"]
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> StopCriterion:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least and at_most")
        return self


class JobCreate(_In):
    """A training job: the model, optimiser, loss and data, and how long to train."""

    model: dict[str, Any] = Field(description="a model spec, as kiln_engine.model_to_spec")
    optimiser: dict[str, Any] = Field(description="a rule spec, e.g. {'rule': 'Adam'}")
    loss: str = Field(description="a loss in kiln_engine.losses, e.g. 'logitcrossentropy'")
    train: DataRef
    validation: DataRef | None = None
    batch_size: int = Field(gt=0)
    shuffle: bool = True
    epochs: int = Field(gt=0)
    seed: int = Field(0, ge=0, lt=2**63)
    schedule: dict[str, Any] | None = Field(None, description="a schedule spec for eta")
    stop: StopCriterion | None = None
    metrics: list[Literal["loss", "accuracy"]] = ["loss"]
    name: str = Field("", max_length=200)


class JobPublic(_Out):
    id: str
    name: str
    status: JobStatus
    spec: dict[str, Any]
    parameters: int
    requested: str | None
    attempt: int
    epoch: int
    step: int
    error: str | None
    has_weights: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class ControlCreate(_In):
    """``adjust`` hyper-parameters, or ``freeze`` / ``thaw``, on a subtree ('' is all)."""

    kind: Literal["adjust", "freeze", "thaw"]
    path: str = Field("", max_length=1000, description="e.g. 'layers.enc'; '' for the model")
    hyper: dict[str, Any] = Field(default_factory=dict, description="for adjust: {'eta': 1e-4}")

    @model_validator(mode="after")
    def _hyper_only_for_adjust(self) -> ControlCreate:
        if self.kind == "adjust" and not self.hyper:
            raise ValueError("adjust needs hyper-parameters, e.g. {\"eta\": 0.0001}")
        if self.kind != "adjust" and self.hyper:
            raise ValueError(f"{self.kind} takes no hyper-parameters")
        return self


class ControlPublic(_Out):
    seq: int
    kind: ControlKind
    path: str
    hyper: dict[str, Any]
    status: ControlStatus
    applied_epoch: int | None
    applied_step: int | None
    reason: str | None
    created_at: datetime
    resolved_at: datetime | None


class EpochPublic(_Out):
    epoch: int
    train_loss: float | None
    val_loss: float | None
    metrics: dict[str, Any]
    learning_rates: dict[str, Any]
    frozen: list[str]
    skipped_steps: int
    samples_per_s: float | None
    duration_s: float | None


class StepsPublic(BaseModel):
    """Per-step losses, averaged over ``stride`` consecutive steps when there are many."""

    steps: list[int] = Field(description="the first global step of each point")
    losses: list[float | None]
    stride: int


# --- tokens -----------------------------------------------------------------------------

class TokenCreate(_In):
    user: str = Field(min_length=1, max_length=100)
    worker: bool = False


class TokenPublic(BaseModel):
    user: str
    worker: bool
    token: str = Field(description="shown once; the server keeps only its sha256")


# --- worker API -------------------------------------------------------------------------

class WorkerRegister(_In):
    name: str = Field(max_length=200)
    device: dict[str, Any] = Field(description="e.g. {'kind': 'cuda', 'name': 'H100', "
                                               "'memory_bytes': 85899345920}")


class WorkerPublic(_Out):
    """A worker process: what it runs on, when it was last heard from, what it is doing."""

    id: str = Field(description="the worker's id (a worker's claims name it)")
    name: str = Field(description="the name it registered with (e.g. its host)")
    device: dict[str, Any] = Field(description="the device it registered, e.g. "
                                   "{'kind': 'cuda', 'name': 'H100', 'memory_bytes': …}")
    created_at: datetime = Field(description="when it registered")
    last_seen_at: datetime = Field(description="its last claim or heartbeat")
    status: Literal["busy", "idle", "gone"] = Field(
        "idle", description="busy: it holds a running job; idle: it holds none and was seen "
        "within the last two leases; gone: not seen since (stopped, or lost)")
    job_id: str | None = Field(None, description="the running job it holds; null when idle, "
                               "and when the job is another user's (unless you are an admin)")


class WorkersPublic(BaseModel):
    data: list[WorkerPublic] = Field(description="last seen first")
    count: int = Field(description="how many workers are listed")


class ClaimRequest(_In):
    worker_id: str
    wait_s: float = Field(0.0, ge=0, description="while the queue is empty, how long to "
                          "hold the claim for a job to arrive (at most claim_wait_max_s)")


class ClaimedJob(BaseModel):
    job_id: str
    lease_token: str
    lease_expires_at: datetime
    heartbeat_interval_s: float
    log_interval_s: float = Field(description="post step losses and epoch rows this often")
    checkpoint_interval_s: float = Field(
        description="checkpoint at an epoch's end once the last checkpoint (or the start) "
                    "is this old")
    attempt: int
    spec: dict[str, Any]
    datasets: dict[str, DatasetPublic] = Field(description="by id; fetch blobs by sha256")
    checkpoint: dict[str, Any] | None = Field(
        None, description="{'sha256', 'epoch', 'step'} to resume from, or null")
    controls: list[ControlPublic] = Field(
        description="every control so far; re-apply those applied after the checkpoint's step")


class Heartbeat(_In):
    epoch: int = Field(ge=0)
    step: int = Field(ge=0)


class HeartbeatReply(BaseModel):
    lease_expires_at: datetime
    action: Literal["continue", "pause", "cancel"]
    controls: list[ControlPublic] = Field(description="pending adjust/freeze/thaw, by seq")


class ControlsReply(BaseModel):
    seq: int = Field(description="the highest control number seen: pass it as ?after= next")
    action: Literal["continue", "pause", "cancel"]
    controls: list[ControlPublic] = Field(
        description="pending adjust/freeze/thaw numbered above ?after=, by seq")


class StepsIn(_In):
    epoch: int = Field(ge=1, description="the epoch of first_step (a batch may run on into "
                                         "the next epochs)")
    first_step: int = Field(ge=1)
    losses: list[float | None] = Field(min_length=1, max_length=100_000)


class EpochIn(_In):
    epoch: int = Field(ge=1)
    train_loss: float | None = None
    val_loss: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    learning_rates: dict[str, float] = Field(default_factory=dict)
    frozen: list[str] = Field(default_factory=list)
    skipped_steps: int = Field(0, ge=0)
    samples_per_s: float | None = None
    duration_s: float | None = None


class LogsIn(_In):
    """What a worker logged since its last post: step losses, epoch rows, or both (one
    request a ``log_interval_s``, not one of each)."""

    steps: StepsIn | None = Field(None, description="a batch of step losses")
    epochs: list[EpochIn] = Field(default_factory=list, description="epoch rows")
    step: int = Field(0, ge=0, description="the global step at the end of the last epoch row")

    @model_validator(mode="after")
    def _not_empty(self) -> LogsIn:
        if self.steps is None and not self.epochs:
            raise ValueError("a log post needs steps, epochs or both")
        return self


class ControlResult(_In):
    seq: int
    status: Literal["applied", "rejected"]
    epoch: int | None = None
    step: int | None = None
    reason: str | None = None


class ControlResults(_In):
    results: list[ControlResult] = Field(min_length=1)


class StateReport(_In):
    """The live optimiser tree: per path, rule, hyper-parameters, frozen."""

    tree: dict[str, Any]


class Finish(_In):
    status: Literal["succeeded", "failed", "cancelled", "paused"]
    epoch: int = Field(ge=0)
    step: int = Field(ge=0)
    error: str | None = Field(None, max_length=100_000)
    steps: StepsIn | None = Field(
        None, description="the last step losses, stored as by POST …/logs (saves a request)")
    epochs: list[EpochIn] = Field(
        default_factory=list, description="the last epoch rows, stored as by POST …/logs")
