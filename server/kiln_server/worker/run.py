"""One claimed job, trained to its end (or until the lease is lost): the step loop.

The claim is parsed once (:class:`.claim.Claim`). Four threads share a job:

- the **training thread** (the caller of :meth:`JobRun.run`) steps the engine's Trainer
  and, at each step boundary, applies the controls that arrived, acts on pause / cancel
  / shutdown, and keeps the record in the job's book (:mod:`.book`);
- the **controls** and **heartbeat** threads fill the job's controls inbox
  (:mod:`.inbox`), the heartbeat also renewing the lease;
- the **sender thread** posts what the book hands it, in order (:mod:`.sender`).

Whichever thread first meets a 409 sets ``lost``; from then on nothing more is written
(the sender drops its queue, the heartbeat ends) and the training thread abandons the
job at its next step boundary: another worker may already hold the job, and any write
of ours would be refused anyway.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
from pathlib import Path
from typing import Any

from kiln_engine.checkpoint import checkpoint_from_bytes
from kiln_engine.optimisers.spec import hyper_from_json
from kiln_engine.training import Trainer

from ..models import Outcome
from ..schemas import Action
from .book import AbandonError, Book, state_tree
from .build import build_trainer, load_arrays
from .claim import Claim, Control
from .client import BlobUnavailableError, WorkerClient
from .datasets import LoadedDatasets
from .failure import describe_failure
from .inbox import ControlsInbox

__all__ = ["BLOB_ATTEMPTS", "JobRun", "Left", "state_tree"]

logger = logging.getLogger(__name__)

#: The claims at which a blob the job needs may be unavailable (each time for the claim's
#: ``blob_retry_s``: the job is released, for another replica or a later try) before the
#: job fails for it.
BLOB_ATTEMPTS = 5


class Left(enum.StrEnum):
    """How a run ends without a finish (an Outcome): the job handed back to the queue
    (the worker is stopping, or a blob was unavailable), or left to its lease (lost)."""

    released = "released"
    abandoned = "abandoned"


class JobRun:
    """A claimed job (the claim's JSON body) run on ``device`` until it ends or is lost;
    its datasets come from ``datasets`` if kept there, else from the blob ``cache``."""

    def __init__(self, client: WorkerClient, claim: dict[str, Any], *, device: str,
                 cache: Path, shutdown: threading.Event,
                 datasets: LoadedDatasets | None = None) -> None:
        self.client, self.claim, self.device = client, Claim.from_json(claim), device
        self.cache, self.shutdown = cache, shutdown
        self.datasets = datasets or LoadedDatasets(0)
        self.job_id = self.claim.job_id
        self.lost = threading.Event()  # set by any thread that meets a 409
        self.inbox = ControlsInbox(client, self.claim, self.lost, lambda: self.book.heartbeat())
        self.book = Book(client, self.claim, self.lost, hush=self.inbox.close)
        self.trainer: Trainer | None = None

    # ------------------------------------------------------------------ setup

    def _build(self) -> Trainer:
        claim = self.claim

        def load(ds_id: str, sha256: str) -> dict[str, Any]:
            return load_arrays(self.client.fetch_blob(sha256, self.cache, claim.blob_retry_s),
                               f"dataset {ds_id}")

        arrays = {ds_id: self.datasets.get(sha256, functools.partial(load, ds_id, sha256))
                  for ds_id, sha256 in claim.datasets.items()}
        trainer = build_trainer(claim.spec, arrays, self.device)
        if claim.checkpoint:
            checkpoint_from_bytes(trainer, self.client.fetch_blob(
                claim.checkpoint.sha256, self.cache, claim.blob_retry_s))
            logger.info("job %s: resuming from the checkpoint of epoch %s, step %s",
                        self.job_id, claim.checkpoint.epoch, claim.checkpoint.step)
        return trainer

    def _replays(self) -> dict[int, list[Control]]:
        """Controls a previous holder applied after the checkpoint, by the step where they
        took effect: applying them there again makes the resumed run the same run. The
        pending ones go to the inbox."""
        out: dict[int, list[Control]] = {}
        for c in self.claim.controls:
            if c.kind in ("adjust", "freeze", "thaw"):
                if c.status == "applied" and c.applied_step > self.claim.resumed_at:
                    out.setdefault(c.applied_step, []).append(c)
                elif c.status == "pending":
                    self.inbox.receive(c)
        return out

    # ------------------------------------------------------------------ step boundary

    def _apply(self, control: Control) -> dict[str, Any]:
        """Apply one control before the next step; its result for the server."""
        trainer, path, kind = self.trainer, control.path, control.kind
        step = trainer.steps + 1
        try:
            if kind == "adjust":
                trainer.adjust(path, **hyper_from_json(control.hyper))
            elif kind == "freeze":
                trainer.freeze(path)
            elif kind == "thaw":
                trainer.thaw(path)
            else:
                raise ValueError(f"unknown control kind {kind!r}")
        except (KeyError, ValueError, TypeError) as e:
            reason = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            logger.info("job %s: control %d (%s %r) rejected: %s", self.job_id,
                        control.seq, kind, path, reason)
            return {"seq": control.seq, "status": "rejected", "reason": reason}
        logger.info("job %s: control %d (%s %r %s) applied from step %d", self.job_id,
                    control.seq, kind, path, control.hyper, step)
        return {"seq": control.seq, "status": "applied", "epoch": self.book.epoch_of(step),
                "step": step}

    def _take_controls(self, replays: dict[int, list[Control]]) -> None:
        for control in replays.pop(self.trainer.steps + 1, []):
            self._apply(control)  # already reported by the worker that applied it first
        results = [self._apply(control) for control in self.inbox.take()]
        if results:
            self.book.control_results(results)

    # ------------------------------------------------------------------ the loop

    def _train(self) -> Outcome | Left:
        """Step until the job ends; how it ended (released: the worker is stopping)."""
        self.trainer = trainer = self._build()
        book, inbox = self.book, self.inbox
        replays = self._replays()
        last_step = len(trainer.loader) * self.claim.epochs
        book.open(trainer)
        # The loop runs once a step: what it does besides trainer.step() is kept to a few
        # attribute checks (a step of a small model is a few hundred µs).
        while True:
            # The step boundary: every decision is taken here, between two updates.
            if self.lost.is_set():
                raise AbandonError()
            if book.sender.error is not None:
                raise book.sender.error
            action = inbox.action
            if action == Action.cancel:
                return Outcome.cancelled  # the kept logs go with the finish
            if action == Action.pause or self.shutdown.is_set():
                book.checkpoint()
                return Outcome.paused if action == Action.pause else Left.released
            if trainer.stopped is not None or trainer.steps >= last_step:
                # the kept logs and the final weights go with the finish
                book.post_state()  # a schedule may have moved it
                return Outcome.succeeded
            if inbox.controls or replays:
                self._take_controls(replays)
            book.record(trainer.step())

    def _failed(self, e: Exception) -> Outcome | Left:
        """The job's own failure, reported with where it happened; or, for a blob the
        server could not serve, a release for another try while tries are left."""
        attempt = self.claim.attempt
        if not isinstance(e, BlobUnavailableError):
            logger.exception("job %s failed", self.job_id)
            return self.book.finish(Outcome.failed, describe_failure(e))
        if attempt < BLOB_ATTEMPTS:  # another replica, or a later try, may serve it
            logger.warning("job %s: %s; releasing the job for another try (claim %d of %d)",
                           self.job_id, e, attempt, BLOB_ATTEMPTS)
            self.book.release()
            return Left.released
        return self.book.finish(Outcome.failed, f"a blob the job needs was unavailable at "
                                f"each of its {BLOB_ATTEMPTS} claims: {e}")

    def run(self) -> Outcome | Left:
        """Train the job; how it ended: the finish posted, or how it was left."""
        logger.info("job %s: claimed (attempt %s)", self.job_id, self.claim.attempt)
        self.inbox.start()
        self.book.start()
        try:
            try:
                ended = self._train()
            except AbandonError:
                raise
            except Exception as e:
                return self._failed(e)
            if ended is Left.released:
                self.book.release()
                return ended
            return self.book.finish(ended)
        except AbandonError:
            logger.warning("job %s: the lease is lost; abandoning the job without further "
                           "writes", self.job_id)
            return Left.abandoned
        finally:
            self.book.close()
            self.inbox.close()
