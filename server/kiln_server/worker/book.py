"""A held job's book: what the training thread keeps of the run (step losses, epoch rows,
where it is) and hands to the sender thread to post, on the server's cadence, with the
checkpoints, the weights and the state tree; and the job's last words, its finish or its
release.

Every post costs the server a request and the cores it shares with training, whatever
the post's size, so the book keeps step losses and epoch rows and hands them over every
``log_interval_s``, and checkpoints at an epoch's end only once the last checkpoint (or
the start) is ``checkpoint_interval_s`` old (both the server's numbers, from the claim):
a job of many short epochs costs the server a few requests a second, not several per
epoch, and a crash costs at most that interval of training again. The steps up to a
checkpoint are always posted before it.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from kiln_engine.checkpoint import checkpoint_to_bytes
from kiln_engine.optimisers import leaves_of
from kiln_engine.optimisers.spec import rule_to_spec
from kiln_engine.serialise import weights_to_bytes
from kiln_engine.training import EpochRecord, StepRecord, Trainer

from ..models import Outcome
from .claim import Claim
from .client import LeaseLostError, ServerUnreachableError, WorkerAPIError, WorkerClient
from .failure import describe_failure
from .sender import Sender

__all__ = ["MAX_STEPS_PER_POST", "AbandonError", "Book", "epoch_row", "state_tree"]

logger = logging.getLogger(__name__)

#: The most step losses one post carries: a very fast job posts them sooner than every
#: ``log_interval_s`` (a request body stays a few hundred kB).
MAX_STEPS_PER_POST = 10_000


class AbandonError(Exception):
    """The lease is gone: leave the job without another write."""


def _finite(v: Any) -> float | None:
    """A number as JSON can carry it: None for a missing or non-finite one."""
    return float(v) if v is not None and math.isfinite(v) else None


def epoch_row(record: EpochRecord) -> dict[str, Any]:
    """An engine EpochRecord as the worker API's EpochIn (non-finite numbers as null)."""
    m = record.metrics
    return {"epoch": record.epoch, "train_loss": _finite(m.get("train_loss")),
            "val_loss": _finite(m.get("val_loss")),
            "metrics": {k: _finite(v) for k, v in m.items()},
            "learning_rates": {p: float(v) for p, v in record.hyper.get("eta", {}).items()},
            "frozen": list(record.frozen), "skipped_steps": len(record.skipped),
            "samples_per_s": _finite(record.samples_per_s), "duration_s": record.seconds}


def state_tree(trainer: Trainer) -> dict[str, Any]:
    """The live optimiser tree, per leaf path: rule spec (with its hyper-parameters),
    frozen flag, and the fields a schedule drives there (with the path it was bound at)."""
    scheduled = trainer.controls.in_force()
    return {p: {"rule": rule_to_spec(leaf.rule), "frozen": leaf.frozen,
                "scheduled": scheduled[p]["scheduled"]}
            for p, leaf in leaves_of(trainer.opt_state)}


class Book:
    """The book of ``claim``'s run, written by the training thread alone; its posts go out
    through a Sender, which stops at a lost lease (``lost``)."""

    def __init__(self, client: WorkerClient, claim: Claim, lost: threading.Event,
                 hush: Callable[[], None]) -> None:
        # ``hush`` ends the heartbeats before the last write (finish or release), so that
        # the last write is the job's last request: a heartbeat after it would be refused.
        self.client, self.claim, self.hush = client, claim, hush
        self.sender = Sender(lost)
        self.trainer: Trainer | None = None
        # Progress for heartbeats: plain ints the training thread rebinds and the
        # heartbeat thread only reads (a stale read just reports the previous step).
        self.per_epoch = 0  # steps in an epoch, once the trainer is built
        self.step = 0
        # Kept between posts: the losses of the steps taken since (from global step
        # ``losses_from`` on), and the epoch rows with the global step at the end of the
        # last; when they, and the last checkpoint, went out (at first: when training
        # started).
        self.losses: list[float | None] = []
        self.losses_from = 0
        self.rows: list[dict[str, Any]] = []
        self.rows_step = 0
        self.logged_at = self.checkpointed_at = 0.0
        self.state_posted: dict[str, Any] | None = None  # the state tree queued last

    def start(self) -> None:
        self.sender.start()

    def close(self) -> None:
        """Nothing more to post: the sender ends once it has done what is queued."""
        self.sender.close()

    # ------------------------------------------------------------------ where it is

    def open(self, trainer: Trainer) -> None:
        """Training starts (or resumes) with ``trainer``: the cadences count from now."""
        self.trainer = trainer
        self.per_epoch, self.step = len(trainer.loader), trainer.steps
        self.logged_at = self.checkpointed_at = time.monotonic()

    def progress(self) -> tuple[int, int]:
        """Epochs and global steps completed: the job's progress as the server keeps it."""
        step = self.step
        return (step // self.per_epoch if self.per_epoch else 0), step

    def heartbeat(self) -> tuple[int, int, int | None]:
        """What a heartbeat reports: the progress, and the steps in an epoch if known."""
        return *self.progress(), self.per_epoch or None

    def epoch_of(self, step: int) -> int:
        """The epoch (from 1) that global step ``step`` belongs to."""
        return (step - 1) // self.per_epoch + 1

    # ------------------------------------------------------------------ the record

    def record(self, record: StepRecord) -> None:
        """Keep a step's loss (and the row of the epoch it ended); post them, or a
        checkpoint, when the cadence says so."""
        self.step = record.step
        if not self.losses:
            self.losses_from = record.step
        self.losses.append(_finite(record.loss))
        now = time.monotonic()
        if record.epoch_end is not None:
            self.rows.append(epoch_row(record.epoch_end))
            self.rows_step = record.step
            if now - self.checkpointed_at >= self.claim.checkpoint_interval_s:
                self.checkpoint()
        if now - self.logged_at >= self.claim.log_interval_s or \
                len(self.losses) >= MAX_STEPS_PER_POST:
            self.flush_logs()

    def control_results(self, results: list[dict[str, Any]]) -> None:
        """Queue the results of the controls just applied, and the state they made."""
        self._write(self.client.post_control_results, results)
        self.post_state()

    # ------------------------------------------------------------------ writes

    def _write(self, call: Callable[..., None], *args: Any, key: str | None = None) -> None:
        """Queue ``call(job_id, lease, *args)`` for the sender (``key``: see Sender).
        The arguments are bound now: a closure over the loop's variables would post
        whatever they hold by the time the sender gets to it."""
        self.sender.put(functools.partial(call, self.claim.job_id, self.claim.lease, *args),
                        key)

    def post_state(self) -> None:
        """Queue the state tree as it is now, unless it is the one queued last (taken now:
        the sender runs while training goes on)."""
        tree = state_tree(self.trainer)
        if tree != self.state_posted:
            self.state_posted = tree
            self._write(self.client.put_state, tree, key="state")

    def _take_logs(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The kept step losses as one batch (a StepsIn, or None) and the kept epoch rows,
        handed over: kept no more."""
        steps = None
        if self.losses:
            steps = {"epoch": self.epoch_of(self.losses_from), "first_step": self.losses_from,
                     "losses": self.losses}
        rows = self.rows
        self.losses, self.rows = [], []
        return steps, rows

    def flush_logs(self) -> None:
        """Queue the kept step losses and epoch rows (one post); the first time, the
        state tree too (not at the start: a job's first moments are spent training, not
        posting)."""
        if self.state_posted is None:
            self.post_state()
        steps, rows = self._take_logs()
        if steps is not None or rows:
            self._write(self.client.post_logs, steps, rows, self.rows_step)
        self.logged_at = time.monotonic()

    def checkpoint(self) -> None:
        """Queue the logs so far, then the checkpoint, the weights and the state tree as
        they are now (a checkpoint always ends a step batch: see queue.post_logs)."""
        self.flush_logs()
        self.checkpointed_at = time.monotonic()
        trainer = self.trainer
        blob, weights = checkpoint_to_bytes(trainer), weights_to_bytes(trainer.model)
        epoch, step = self.progress()
        self._write(self.client.put_blob, "checkpoint", blob, epoch, step, key="checkpoint")
        self._write(self.client.put_blob, "weights", weights, epoch, step, key="weights")
        self.post_state()

    # ------------------------------------------------------------------ the end

    def finish(self, status: Outcome, error: str | None = None) -> Outcome:
        """Post what is queued, then the finish itself (synchronously), with the logs
        kept since the last post and, for a success, the final weights (one request, not
        three); the status posted (failed if a queued write failed)."""
        if not self.sender.drain():
            raise AbandonError()
        if self.sender.error is not None:
            status = Outcome.failed
            error = f"posting results failed: {describe_failure(self.sender.error)}"
        steps, rows = self._take_logs()
        weights = weights_to_bytes(self.trainer.model) if status == Outcome.succeeded else None
        self.hush()
        try:
            self.client.finish(self.claim.job_id, self.claim.lease, status, *self.progress(),
                               error, steps, rows, weights)
        except (LeaseLostError, ServerUnreachableError) as e:
            raise AbandonError() from e
        logger.info("job %s: finished, %s", self.claim.job_id, status)
        return status

    def release(self) -> None:
        """Post what is queued (the checkpoint last), then let go of the job, which the
        server queues again at once, to resume from that checkpoint. If the server cannot
        be told, the job waits for its lease to lapse instead."""
        if not self.sender.drain():
            raise AbandonError()
        self.hush()
        try:
            self.client.release(self.claim.job_id, self.claim.lease)
        except (WorkerAPIError, ServerUnreachableError) as e:
            logger.warning("job %s: could not release it (%s); it is queued again once its "
                           "lease lapses", self.claim.job_id, e)
            return
        logger.info("job %s: released at step %d", self.claim.job_id, self.step)
