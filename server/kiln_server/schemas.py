"""The API's request and response bodies (pydantic v2): the OpenAPI document's schemas.

The ladder follows full-stack-fastapi-template: ``XCreate`` is what a client sends,
``XPublic`` what it gets back, ``XsPublic`` a page of them. Model, optimiser and schedule
specs are plain JSON objects here; the engine validates them (services/jobspec.py), and
its JSON Schemas of them (``kiln_engine.json_schema``, put among the document's schemas by
openapi.py) document them: ``JobCreate`` refers to ``ModelSpec``, ``OptimiserSpec`` and
``ScheduleSpec``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .errors import NUL_MESSAGE, InvalidError, nul_at
from .models import (
    ControlKind,
    ControlStatus,
    DeviceKind,
    JobDevice,
    JobRequest,
    JobStatus,
    Outcome,
)

__all__ = [
    "EXAMPLE_JOB",
    "SPEC_MARK",
    "Action",
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
    "DeviceInfo",
    "EpochIn",
    "EpochPublic",
    "Finish",
    "Heartbeat",
    "HeartbeatReply",
    "JobCreate",
    "JobLatest",
    "JobPublic",
    "JobWorker",
    "JobsPublic",
    "LogsIn",
    "StateReport",
    "StepsIn",
    "StepsPublic",
    "StopCriterion",
    "TokenCreate",
    "TokenInfo",
    "TokenKind",
    "TokenPublic",
    "TokensPublic",
    "UserPublic",
    "WorkerPublic",
    "WorkerRegister",
    "WorkersPublic",
]

METRICS = ("loss", "accuracy")
#: What a stop criterion may watch: what every epoch row records. Training accuracy is
#: not among them: the trainer records only the training loss (an accuracy over batches
#: of a model that moves within the epoch would also be a poor signal to stop on).
STOP_METRICS = ("train_loss", "val_loss", "val_accuracy")


class Action(enum.StrEnum):
    """What a heartbeat or the controls long-poll asks of the worker holding a job: go on,
    or carry out the pause or cancel requested (``Job.requested``)."""

    continue_ = "continue"
    pause = JobRequest.pause.value
    cancel = JobRequest.cancel.value


#: The largest count (epoch, step, sequence number) a request may carry: what a database
#: INTEGER column holds (PostgreSQL's is 32-bit).
COUNT_MAX = 2**31 - 1


class _In(BaseModel):
    # Numbers JSON cannot carry (NaN, infinities, which pydantic would take as strings)
    # are refused: stored, they could not be sent back.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        """PostgreSQL stores no NUL character in text: one anywhere in a body (a name, a
        dataset id, a spec) is a 422 naming its place, not a failed query."""
        if (where := nul_at(data)) is not None:
            raise InvalidError(["body", *where], NUL_MESSAGE)
        return data


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- datasets ---------------------------------------------------------------------------

class DatasetArray(BaseModel):
    """One array of an uploaded .npz."""

    name: str = Field(description="its name in the .npz")
    shape: list[int] = Field(description="its shape; the first axis counts the samples")
    dtype: str = Field(description="its numpy dtype, e.g. float32, int64, bool")
    min: int | None = Field(None, description="the smallest value of an integer or boolean "
                            "array (false is 0), which submission checks class labels with; "
                            "null for floats, empty arrays and datasets uploaded before it "
                            "was recorded")
    max: int | None = Field(None, description="the largest value, as for min")


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

#: The keyword that marks a spec's place in a schema with the name of the engine's JSON
#: Schema of it; openapi.py turns each mark into a reference to that schema (pydantic
#: cannot: it refuses a reference to a schema that is not one of its models).
SPEC_MARK = "x-kiln-spec"


def _spec(name: str) -> WithJsonSchema:
    """A spec taken as plain JSON (the engine validates it), documented by the engine's
    JSON Schema ``name``."""
    return WithJsonSchema({SPEC_MARK: name})


#: The example job of the OpenAPI document (shown by /docs for POST /v1/jobs): the digits
#: MLP, Chain(enc=Dense 64->32 relu, dec=Dense 32->10), on a dataset holding x, y (training)
#: and xv, yv (validation), as examples/digits.py uploads it.
EXAMPLE_JOB: dict[str, Any] = {
    "name": "digits-mlp",
    "model": {"type": "Chain", "layers": {
        "enc": {"type": "Dense", "in": 64, "out": 32, "activation": "relu"},
        "dec": {"type": "Dense", "in": 32, "out": 10}}},
    "optimiser": {"rule": "OptimiserChain", "rules": [
        {"rule": "WeightDecay", "lambda": 1e-4}, {"rule": "Adam", "eta": 0.003}]},
    "loss": "logitcrossentropy",
    "train": {"dataset": "DATASET_ID", "x": "x", "y": "y"},
    "validation": {"dataset": "DATASET_ID", "x": "xv", "y": "yv"},
    "batch_size": 32, "epochs": 30, "seed": 0, "metrics": ["loss", "accuracy"],
    "stop": {"metric": "val_accuracy", "at_least": 0.97},
}


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

    model: Annotated[dict[str, Any], _spec("ModelSpec")] = Field(
        description="a model spec, as kiln_engine.model_to_spec writes it")
    optimiser: Annotated[dict[str, Any], _spec("OptimiserSpec")] = Field(
        description="an optimiser spec, as kiln_engine.optimisers.rule_to_spec writes it")
    loss: str = Field(description="a loss in kiln_engine.losses, e.g. 'logitcrossentropy'")
    train: DataRef
    validation: DataRef | None = None
    batch_size: int = Field(gt=0)
    shuffle: bool = True
    epochs: int = Field(gt=0)
    seed: int = Field(0, ge=0, lt=2**63)
    schedule: Annotated[dict[str, Any], _spec("ScheduleSpec")] | None = Field(
        None, description="a schedule of the learning rate (eta), by step")
    stop: StopCriterion | None = None
    metrics: list[Literal["loss", "accuracy"]] = ["loss"]
    name: str = Field("", max_length=200)
    device: JobDevice = Field(
        JobDevice.any, description="what to train on: any worker, a cpu worker, or a gpu "
        "worker (one that registered a cuda device). A job whose device no registered "
        "worker has stays queued until such a worker claims it; jobs queued after it are "
        "claimed by the workers they fit meanwhile")


class JobLatest(BaseModel):
    """The figures of a job's last epoch row (its whole row: GET …/epochs)."""

    epoch: int = Field(description="the epoch's number, from 1")
    train_loss: float | None = Field(description="its training loss (the mean of its steps' "
                                     "finite losses)")
    val_loss: float | None = Field(description="the loss on the validation set at its end; "
                                   "null without one")
    metrics: dict[str, Any] = Field(description="what was measured at its end, by name "
                                    "(train_loss, val_loss, val_accuracy, …)")


class JobWorker(_Out):
    """The worker holding a job."""

    id: str = Field(description="the worker's id (as GET /v1/workers lists it)")
    name: str = Field(description="the name it registered with (e.g. its host)")


class JobPublic(_Out):
    """A job: where it is in its lifecycle, how far it has trained, and what it was given."""

    id: str = Field(description="the job's id")
    name: str = Field(description="the name it was submitted with ('' if none)")
    status: JobStatus = Field(
        description="queued (waiting for a worker), running (a worker holds it), paused "
        "(checkpointed, holds no worker; resume to queue it again), or finished: succeeded, "
        "failed (see error), cancelled. A lost worker puts a running job back to queued")
    requested: JobRequest | None = Field(
        description="a pause or cancel asked for that the job's worker has yet to carry out "
        "(it does so at its next step boundary, within a heartbeat or so; status then "
        "becomes paused or cancelled); null when nothing is waiting")
    spec: dict[str, Any] = Field(description="the job as submitted, with the defaults filled "
                                             "in (a JobCreate)")
    parameters: int = Field(description="the model's number of trainable parameters")
    device: JobDevice = Field(description="what it asked to be trained on (any, cpu, gpu): "
                              "only a worker of that kind claims it")
    attempt: int = Field(description="how many times a worker has claimed the job (a resume "
                                     "after a pause, or after a lost worker, claims it again)")
    epoch: int = Field(description="epochs completed, 0 before the first ends: the epoch in "
                       "progress is epoch + 1. Counted from the start of the job, as the "
                       "worker last reported it (every few seconds); a job resumed after "
                       "its worker was lost goes back to its last checkpoint's")
    step: int = Field(description="training steps (batches) completed, counted from the "
                      "start of the job over all epochs; reported and reset as epoch is")
    epochs: int = Field(validation_alias=AliasChoices("epochs", AliasPath("spec", "epochs")),
                        description="epochs planned (the spec's epochs); a stop criterion "
                        "may end the job sooner")
    steps_per_epoch: int | None = Field(
        description="steps in one epoch (batches of the training set), known once a worker "
        "has reported it; null before. Progress in the epoch in progress is step - epoch * "
        "steps_per_epoch")
    latest: JobLatest | None = Field(
        description="the figures of the last epoch row (the highest epoch stored); null "
        "before the first epoch ends")
    worker: JobWorker | None = Field(description="the worker holding the job now; null "
                                     "unless it is running")
    error: str | None = Field(description="why the job failed; null unless failed")
    has_weights: bool = Field(description="whether GET …/weights has weights to give "
                              "(the last checkpoint's, or the final ones once succeeded)")
    created_at: datetime = Field(description="when it was submitted")
    started_at: datetime | None = Field(description="when a worker first claimed it")
    finished_at: datetime | None = Field(description="when it succeeded, failed or was "
                                         "cancelled; null while unfinished")


class JobsPublic(BaseModel):
    data: list[JobPublic] = Field(description="a page of jobs, newest first")
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; "
                                    "null on the last page")


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
    """A control on a job and what became of it."""

    seq: int = Field(description="its number within the job, from 1, in the order received")
    kind: ControlKind = Field(description="adjust, freeze, thaw (on a subtree), or pause, "
                              "resume, cancel (of the job)")
    path: str = Field(description="the subtree of the model it acts on ('' for the whole "
                      "model; '' for pause, resume and cancel)")
    hyper: dict[str, Any] = Field(description="for adjust: the hyper-parameters it sets, "
                                  "e.g. {'eta': 0.0001}; {} otherwise")
    status: ControlStatus = Field(description="pending (the worker has yet to act on it), "
                                  "applied, or rejected (see reason)")
    applied_epoch: int | None = Field(
        description="adjust, freeze, thaw: the epoch (from 1) of the first step trained under "
        "it; pause, cancel, resume: epochs completed when it took effect; null unless applied")
    applied_step: int | None = Field(
        description="adjust, freeze, thaw: the first global step trained under it; pause, "
        "cancel, resume: steps completed when it took effect; null unless applied")
    reason: str | None = Field(description="why it was rejected, or how it was applied when "
                               "not by the worker; null otherwise")
    created_at: datetime = Field(description="when it was received")
    resolved_at: datetime | None = Field(description="when it was applied or rejected")


class EpochPublic(_Out):
    """One finished epoch, and what was in force during it."""

    epoch: int = Field(description="the epoch's number, from 1")
    train_loss: float | None = Field(description="the mean of its steps' finite losses")
    val_loss: float | None = Field(description="the loss on the validation set at its end; "
                                   "null without one")
    metrics: dict[str, Any] = Field(description="what was measured at its end, by name "
                                    "(train_loss, val_loss, val_accuracy, …)")
    learning_rates: dict[str, Any] = Field(description="the learning rate (eta) in force "
                                           "at its end, by subtree path ('' the whole model)")
    frozen: list[str] = Field(description="the subtrees frozen at its end")
    skipped_steps: int = Field(description="steps whose loss was not finite, so whose update "
                               "was skipped")
    samples_per_s: float | None = Field(description="training throughput over the epoch")
    duration_s: float | None = Field(description="how long the epoch took")


class StepsPublic(BaseModel):
    """Per-step losses; past ``max_points`` steps, each point stands for ``stride``
    consecutive steps, with their mean, lowest and highest loss (spikes stay visible)."""

    steps: list[int] = Field(description="the first global step of each point")
    losses: list[float | None] = Field(description="each point's mean loss over its stride "
                                       "steps; null where none of them had a finite loss")
    min: list[float | None] = Field(description="each point's lowest finite loss over its "
                                    "stride steps (null as for losses); with stride 1, the "
                                    "loss itself")
    max: list[float | None] = Field(description="each point's highest finite loss, as for min")
    stride: int = Field(description="how many consecutive steps each point stands for (1: "
                        "every step as it is)")
    count: int = Field(description="how many steps are stored in all (the last point may "
                       "stand for fewer than stride)")


# --- tokens -----------------------------------------------------------------------------

TokenKind = Literal["user", "worker", "admin"]


class TokenCreate(_In):
    user: str = Field(min_length=1, max_length=100, description="the user (created if new)")
    worker: bool = Field(False, description="a token for the worker API only")
    admin: bool = Field(False, description="make the user an admin (not with worker)")

    @field_validator("admin")
    @classmethod
    def _admin_is_no_worker(cls, admin: bool, info: ValidationInfo) -> bool:
        if admin and info.data.get("worker"):
            raise ValueError("a worker token cannot be an admin's: give worker or admin")
        return admin


class TokenInfo(BaseModel):
    """A token as listed: never its secret."""

    id: str = Field(description="revoke it by this id")
    user: str = Field(description="the user it belongs to")
    kind: TokenKind = Field(description="what it reaches: the user API (user), also the "
                            "admin's routes (admin), or only the worker API (worker)")
    prefix: str | None = Field(description="the token's first characters, to recognise it "
                               "(null for KILN_ADMIN_TOKEN and tokens older than this field)")
    created_at: datetime = Field(description="when it was created")


class TokensPublic(BaseModel):
    data: list[TokenInfo] = Field(description="every token, oldest first")
    count: int = Field(description="how many there are")


class TokenPublic(TokenInfo):
    """A new token: the one time its secret is shown."""

    worker: bool = Field(description="a token for the worker API only (kind 'worker')")
    token: str = Field(description="shown once; the server keeps only its sha256")


class UserPublic(BaseModel):
    name: str = Field(description="the user's name")
    admin: bool = Field(description="whether the user may create and revoke tokens")


# --- worker API -------------------------------------------------------------------------

class DeviceInfo(_In):
    """What a worker trains on, as it registers it: a GPU claims the jobs that ask for a
    gpu (or any device), a CPU those that ask for a cpu (or any)."""

    kind: DeviceKind = Field(DeviceKind.cpu, description="cpu, or cuda (an NVIDIA GPU)")
    index: int | None = Field(None, ge=0, le=COUNT_MAX,
                              description="the GPU's number on its host (cuda:N)")
    name: str | None = Field(None, max_length=200,
                             description="the GPU's model, or the CPU's architecture")
    memory_bytes: int | None = Field(None, ge=0, le=2**63 - 1,
                                     description="the GPU's memory, or the host's")
    cores: int | None = Field(None, ge=1, le=COUNT_MAX, description="the host's CPU cores")


class WorkerRegister(_In):
    name: str = Field(max_length=200)
    device: DeviceInfo = Field(description="e.g. {'kind': 'cuda', 'index': 0, 'name': "
                               "'NVIDIA H100', 'memory_bytes': 85899345920}")


class WorkerPublic(_Out):
    """A worker process: what it runs on, when it was last heard from, what it is doing."""

    id: str = Field(description="the worker's id (a worker's claims name it)")
    name: str = Field(description="the name it registered with (e.g. its host)")
    device: dict[str, Any] = Field(description="the device it registered (a DeviceInfo, "
                                   "without its null fields), e.g. {'kind': 'cuda', "
                                   "'index': 0, 'name': 'NVIDIA H100', 'memory_bytes': …}")
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
    blob_retry_s: float = Field(
        description="how long to keep trying to fetch a blob that the server cannot serve "
                    "(404, 503) before releasing the job")
    attempt: int
    spec: dict[str, Any]
    datasets: dict[str, DatasetPublic] = Field(description="by id; fetch blobs by sha256")
    checkpoint: dict[str, Any] | None = Field(
        None, description="{'sha256', 'epoch', 'step'} to resume from, or null")
    controls: list[ControlPublic] = Field(
        description="every control so far; re-apply those applied after the checkpoint's step")


class Heartbeat(_In):
    epoch: int = Field(ge=0, le=COUNT_MAX, description="epochs completed (0 during the first)")
    step: int = Field(ge=0, le=COUNT_MAX, description="global steps completed, over all epochs")
    steps_per_epoch: int | None = Field(None, ge=1, le=COUNT_MAX,
                                        description="steps in one epoch")


class HeartbeatReply(BaseModel):
    lease_expires_at: datetime
    action: Action
    controls: list[ControlPublic] = Field(description="pending adjust/freeze/thaw, by seq")


class ControlsReply(BaseModel):
    seq: int = Field(description="the highest control number seen: pass it as ?after= next")
    action: Action
    controls: list[ControlPublic] = Field(
        description="pending adjust/freeze/thaw numbered above ?after=, by seq")


class StepsIn(_In):
    epoch: int = Field(ge=1, le=COUNT_MAX, description="the epoch of first_step (a batch may "
                       "run on into the next epochs)")
    first_step: int = Field(ge=1, le=COUNT_MAX)
    losses: list[float | None] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _last_step_counts(self) -> StepsIn:
        if self.first_step + len(self.losses) - 1 > COUNT_MAX:
            raise ValueError(f"the steps of a batch must end by step {COUNT_MAX}")
        return self


class EpochIn(_In):
    epoch: int = Field(ge=1, le=COUNT_MAX)
    train_loss: float | None = None
    val_loss: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    learning_rates: dict[str, float] = Field(default_factory=dict)
    frozen: list[str] = Field(default_factory=list)
    skipped_steps: int = Field(0, ge=0, le=COUNT_MAX)
    samples_per_s: float | None = None
    duration_s: float | None = None


class LogsIn(_In):
    """What a worker logged since its last post: step losses, epoch rows, or both (one
    request a ``log_interval_s``, not one of each)."""

    steps: StepsIn | None = Field(None, description="a batch of step losses")
    epochs: list[EpochIn] = Field(default_factory=list, description="epoch rows")
    step: int = Field(0, ge=0, le=COUNT_MAX,
                      description="the global step at the end of the last epoch row")

    @model_validator(mode="after")
    def _not_empty(self) -> LogsIn:
        if self.steps is None and not self.epochs:
            raise ValueError("a log post needs steps, epochs or both")
        return self


class ControlResult(_In):
    seq: int = Field(ge=1, le=COUNT_MAX)
    status: Literal["applied", "rejected"]
    epoch: int | None = Field(None, ge=1, le=COUNT_MAX)
    step: int | None = Field(None, ge=1, le=COUNT_MAX)
    reason: str | None = None


class ControlResults(_In):
    results: list[ControlResult] = Field(min_length=1)


class StateReport(_In):
    """The live optimiser tree: per path, rule, hyper-parameters, frozen."""

    tree: dict[str, Any]


class Finish(_In):
    # Its values in place: the route documents Finish by hand (api/routes/worker.py),
    # without the schemas it refers to, and the document has no Outcome of its own.
    status: Annotated[Outcome, WithJsonSchema({"enum": [o.value for o in Outcome],
                                                "type": "string"})]
    epoch: int = Field(ge=0, le=COUNT_MAX, description="epochs completed")
    step: int = Field(ge=0, le=COUNT_MAX, description="global steps completed")
    error: str | None = Field(None, max_length=100_000)
    steps: StepsIn | None = Field(
        None, description="the last step losses, stored as by POST …/logs (saves a request)")
    epochs: list[EpochIn] = Field(
        default_factory=list, description="the last epoch rows, stored as by POST …/logs")
