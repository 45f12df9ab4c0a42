"""One claimed job, trained to its end (or until the lease is lost).

Four threads share a job:

- the **training thread** (the caller of :meth:`JobRun.run`) steps the engine's Trainer
  and, at each step boundary, applies the controls that arrived, acts on pause / cancel
  / shutdown, and hands every write to the sender;
- the **controls thread** keeps the server's controls long-poll open, so that a control
  reaches the inbox as soon as it is stored (it waits in a socket read, off the GIL);
- the **heartbeat thread** renews the lease every ``heartbeat_interval_s`` (the server's
  number, from the claim), reports the step reached, and puts the pending controls of
  each reply in the inbox: the fallback that delivers a control the long-poll missed;
- the **sender thread** posts the writes (step losses, epoch rows, control results,
  checkpoints, weights, the state tree) in the order they were made, so the training
  thread never waits on the network between epochs.

Every post costs the server a request and the cores it shares with training, whatever
the post's size, so the training thread keeps step losses and epoch rows and hands them
over every ``log_interval_s``, and checkpoints at an epoch's end only once the last
checkpoint (or the start) is ``checkpoint_interval_s`` old (both the server's numbers,
from the claim): a job of many short epochs costs the server a few requests a second,
not several per epoch, and a crash costs at most that interval of training again. The
steps up to a checkpoint are always posted before it.

Whichever thread first meets a 409 sets ``lost``; from then on nothing more is written
(the sender drops its queue, the heartbeat ends) and the training thread abandons the
job at its next step boundary: another worker may already hold the job, and any write
of ours would be refused anyway.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln_engine.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from kiln_engine.optimisers import leaves_of
from kiln_engine.optimisers.spec import hyper_from_json, rule_to_spec
from kiln_engine.serialise import weights_to_bytes
from kiln_engine.training import EpochRecord, Trainer

from ..models import Outcome
from ..schemas import Action
from .build import build_trainer, load_arrays
from .client import (
    BlobUnavailableError,
    LeaseLostError,
    ServerUnreachableError,
    WorkerAPIError,
    WorkerClient,
)
from .datasets import LoadedDatasets
from .failure import describe_failure

__all__ = ["BLOB_ATTEMPTS", "CONTROLS_WAIT_S", "MAX_STEPS_PER_POST", "JobRun", "epoch_row",
           "heartbeat_interval", "state_tree"]

logger = logging.getLogger(__name__)

#: The most step losses one post carries: a very fast job posts them sooner than every
#: ``log_interval_s`` (a request body stays a few hundred kB).
MAX_STEPS_PER_POST = 10_000
#: When the sender lags, a checkpoint (weights, state tree) that a newer one already
#: follows in the queue is still posted if none was posted for this many seconds.
SUPERSEDED_EVERY_S = 1.0
#: How long one controls long-poll may wait on the server (it caps this itself too).
CONTROLS_WAIT_S = 20.0
#: Seconds before the controls thread asks again after the server did not answer (its
#: own silence costs nothing: the heartbeat decides whether the lease is lost).
CONTROLS_RETRY_S = 1.0
#: The shortest heartbeat interval, whatever the lease (clocks may disagree a little).
HEARTBEAT_MIN_INTERVAL_S = 0.1
#: The claims at which a blob the job needs may be unavailable (each time for the claim's
#: ``blob_retry_s``: the job is released, for another replica or a later try) before the
#: job fails for it.
BLOB_ATTEMPTS = 5
#: Seconds the training thread waits for the sender to post what is queued at the end
#: of a job (or before a pause) before it gives up on the job.
DRAIN_TIMEOUT_S = 120.0


def _finite(v: Any) -> float | None:
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


def heartbeat_interval(claim: dict[str, Any]) -> float:
    """The server's heartbeat interval, but at most a third of the lease, so that a late
    heartbeat or two never costs the lease (a server configured with a lease shorter
    than its heartbeat interval would otherwise lose every job)."""
    lease_s = (datetime.fromisoformat(claim["lease_expires_at"]) - datetime.now(UTC)
               ).total_seconds()
    return max(HEARTBEAT_MIN_INTERVAL_S, min(float(claim["heartbeat_interval_s"]), lease_s / 3))


class _AbandonError(Exception):
    """The lease is gone: leave the job without another write."""


class _Sender(threading.Thread):
    """Posts the job's writes in order; stops at the first lost lease or hard error.

    A write with a ``key`` (the checkpoint, the weights, the state tree) only matters
    as the latest of its kind: when the sender falls behind training (short epochs, a
    slow link), it skips such a write if a newer one with the same key is queued and
    one of that key was posted less than SUPERSEDED_EVERY_S ago. The backlog then stays
    bounded by the logs (step and epoch rows, which are all posted), and the order is
    kept: a checkpoint is never posted before the epoch rows it covers, so a worker
    resuming from it finds no epoch missing.
    """

    def __init__(self, lost: threading.Event) -> None:
        super().__init__(name="kiln-sender", daemon=True)
        # (key, generation, write), or an Event to set once every write before it is
        # done (drain), or None to stop.
        self.jobs: queue.Queue[tuple[str | None, int, Callable[[], None]] | threading.Event
                               | None] = queue.Queue()
        self.latest: dict[str, int] = {}  # key -> generation of its newest queued write
        self.posted_at: dict[str, float] = {}  # key -> when one was last posted
        self.lost = lost
        self.error: BaseException | None = None

    def put(self, write: Callable[[], None], key: str | None = None) -> None:
        gen = 0
        if key is not None:
            # Only the training thread puts, so this read-increment-write is not racy;
            # the sender only reads ``latest`` (a stale read posts one write too many).
            gen = self.latest[key] = self.latest.get(key, 0) + 1
        self.jobs.put((key, gen, write))

    def run(self) -> None:
        while (item := self.jobs.get()) is not None:
            try:
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                key, gen, write = item
                now = time.monotonic()
                skip = key is not None and self.latest[key] != gen and \
                    now - self.posted_at.get(key, -math.inf) < SUPERSEDED_EVERY_S
                if not (skip or self.lost.is_set() or self.error is not None):
                    write()
                    if key is not None:
                        self.posted_at[key] = now
            except (LeaseLostError, ServerUnreachableError) as e:
                logger.warning("lost the lease while posting: %s", e)
                self.lost.set()
            except Exception as e:  # a refused body is a bug here: fail the job with it
                logger.exception("a write for the job failed")
                self.error = e
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def drain(self) -> bool:
        """Wait until everything queued is posted (or dropped after an error); False if
        the lease was lost meanwhile or the posts took longer than DRAIN_TIMEOUT_S."""
        done = threading.Event()
        self.jobs.put(done)
        return done.wait(DRAIN_TIMEOUT_S) and not self.lost.is_set()

    def close(self) -> None:
        self.jobs.put(None)


class JobRun:
    """A claimed job (the claim's JSON body) run on ``device`` until it ends or is lost;
    its datasets come from ``datasets`` if kept there, else from the blob ``cache``."""

    def __init__(self, client: WorkerClient, claim: dict[str, Any], *, device: str,
                 cache: Path, shutdown: threading.Event,
                 datasets: LoadedDatasets | None = None) -> None:
        self.client, self.claim, self.device = client, claim, device
        self.cache, self.shutdown = cache, shutdown
        self.datasets = datasets or LoadedDatasets(0)
        self.job_id: str = claim["job_id"]
        self.lease: str = claim["lease_token"]
        self.spec: dict[str, Any] = claim["spec"]
        self.lost = threading.Event()     # set by any thread that meets a 409
        self.done = threading.Event()     # ends the heartbeat and controls threads
        # Controls to apply, appended by the controls and heartbeat threads (and from
        # the claim) and taken by the training thread (deque's append and popleft are
        # atomic; an empty deque is one check per step, where an empty Queue would
        # raise and catch an exception every step).
        self.inbox: collections.deque[dict[str, Any]] = collections.deque()
        # Seqs already in the inbox: a pending control comes back on every heartbeat
        # until its result is posted, the long-poll and the claim bring it too; each
        # applies once.
        self.seen: set[int] = set()
        self.seen_lock = threading.Lock()
        # An Action's value: pause / cancel once a heartbeat or the long-poll says so.
        self.action: str = Action.continue_
        self.sender = _Sender(self.lost)
        self.trainer: Trainer | None = None
        # Kept by the training thread between posts: the losses of the steps taken since
        # (from global step ``losses_from`` on), and the epoch rows with the global step
        # at the end of the last; when they, and the last checkpoint, went out (at
        # first: when training started).
        self.log_every = float(claim["log_interval_s"])
        self.checkpoint_every = float(claim["checkpoint_interval_s"])
        self.blob_retry_s = float(claim.get("blob_retry_s", 0.0))  # 0: one try
        self.losses: list[float | None] = []
        self.losses_from = 0
        self.rows: list[dict[str, Any]] = []
        self.rows_step = 0
        self.logged_at = self.checkpointed_at = 0.0
        self.state_posted: dict[str, Any] | None = None  # the state tree queued last
        # Progress for heartbeats: plain ints the training thread rebinds and the
        # heartbeat thread only reads (a stale read just reports the previous step).
        self.per_epoch = 0  # steps in an epoch, once the trainer is built
        self.step = 0

    # ------------------------------------------------------------------ threads

    def _heartbeats(self, interval: float) -> None:
        # The first one after an interval: the claim has just given a fresh lease and
        # the controls, and the long-poll is already watching for more.
        while not self.done.wait(interval):
            try:
                epoch, step = self._progress()
                reply = self.client.heartbeat(self.job_id, self.lease, epoch, step,
                                              self.per_epoch or None)
            except (LeaseLostError, ServerUnreachableError) as e:
                logger.warning("job %s: heartbeat failed (%s); abandoning the job",
                               self.job_id, e)
                self.lost.set()
                return
            except WorkerAPIError:
                logger.exception("job %s: heartbeat refused", self.job_id)
            else:
                if reply["action"] != Action.continue_:
                    self.action = reply["action"]
                for control in reply["controls"]:
                    self._receive(control)

    def _listen(self, after: int) -> None:
        """Hold the controls long-poll open from control ``after`` on, until the job ends
        or its lease is lost. A server without the long-poll ends it: the heartbeats
        then bring the controls alone."""
        while not self.done.is_set():
            try:
                reply = self.client.wait_controls(self.job_id, self.lease, after,
                                                  CONTROLS_WAIT_S)
            except LeaseLostError:  # also how every poll ends once the job is finished
                self.lost.set()
                return
            except ServerUnreachableError:
                if self.done.wait(CONTROLS_RETRY_S):
                    return
                continue
            except WorkerAPIError as e:
                logger.warning("job %s: no controls long-poll (%s); controls come with "
                               "heartbeats", self.job_id, e)
                return
            after = max(after, reply["seq"])
            if reply["action"] != Action.continue_:
                self.action = reply["action"]
            for control in reply["controls"]:
                self._receive(control)

    def _receive(self, control: dict[str, Any]) -> None:
        # The training thread (the claim's pending controls), the controls thread and
        # the heartbeat thread get here; the lock makes check-and-add one step.
        with self.seen_lock:
            if control["seq"] in self.seen:
                return
            self.seen.add(control["seq"])
        self.inbox.append(control)

    # ------------------------------------------------------------------ setup

    def _build(self) -> Trainer:
        def load(ds_id: str, sha256: str) -> dict[str, Any]:
            return load_arrays(self.client.fetch_blob(sha256, self.cache, self.blob_retry_s),
                               f"dataset {ds_id}")

        arrays = {ds_id: self.datasets.get(ds["sha256"], functools.partial(load, ds_id,
                                                                           ds["sha256"]))
                  for ds_id, ds in self.claim["datasets"].items()}
        trainer = build_trainer(self.spec, arrays, self.device)
        checkpoint = self.claim.get("checkpoint")
        if checkpoint:
            checkpoint_from_bytes(trainer, self.client.fetch_blob(
                checkpoint["sha256"], self.cache, self.blob_retry_s))
            logger.info("job %s: resuming from the checkpoint of epoch %s, step %s",
                        self.job_id, checkpoint["epoch"], checkpoint["step"])
        return trainer

    def _replays(self) -> dict[int, list[dict[str, Any]]]:
        """Controls a previous holder applied after the checkpoint, by the step where they
        took effect: applying them there again makes the resumed run the same run."""
        after = (self.claim.get("checkpoint") or {}).get("step") or 0
        out: dict[int, list[dict[str, Any]]] = {}
        for c in self.claim["controls"]:
            if c["kind"] in ("adjust", "freeze", "thaw"):
                if c["status"] == "applied" and c["applied_step"] > after:
                    out.setdefault(c["applied_step"], []).append(c)
                elif c["status"] == "pending":
                    self._receive(c)
        return out

    # ------------------------------------------------------------------ step boundary

    def _progress(self) -> tuple[int, int]:
        """Epochs and global steps completed: the job's progress as the server keeps it."""
        step = self.step
        return (step // self.per_epoch if self.per_epoch else 0), step

    def _epoch_of(self, step: int) -> int:
        return (step - 1) // len(self.trainer.loader) + 1

    def _apply(self, control: dict[str, Any]) -> dict[str, Any]:
        """Apply one control before the next step; its result for the server."""
        trainer, path, kind = self.trainer, control["path"], control["kind"]
        step = trainer.steps + 1
        try:
            if kind == "adjust":
                trainer.adjust(path, **hyper_from_json(control["hyper"]))
            elif kind == "freeze":
                trainer.freeze(path)
            elif kind == "thaw":
                trainer.thaw(path)
            else:
                raise ValueError(f"unknown control kind {kind!r}")
        except (KeyError, ValueError, TypeError) as e:
            reason = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            logger.info("job %s: control %d (%s %r) rejected: %s", self.job_id,
                        control["seq"], kind, path, reason)
            return {"seq": control["seq"], "status": "rejected", "reason": reason}
        logger.info("job %s: control %d (%s %r %s) applied from step %d", self.job_id,
                    control["seq"], kind, path, control["hyper"], step)
        return {"seq": control["seq"], "status": "applied", "epoch": self._epoch_of(step),
                "step": step}

    def _take_controls(self, replays: dict[int, list[dict[str, Any]]]) -> None:
        trainer = self.trainer
        for control in replays.pop(trainer.steps + 1, []):
            self._apply(control)  # already reported by the worker that applied it first
        results = []
        while self.inbox:
            results.append(self._apply(self.inbox.popleft()))
        if results:
            self._write(self.client.post_control_results, results)
            self._post_state()

    # ------------------------------------------------------------------ writes

    def _write(self, call: Callable[..., None], *args: Any, key: str | None = None) -> None:
        """Queue ``call(job_id, lease, *args)`` for the sender (``key``: see _Sender).
        The arguments are bound now: a closure over the loop's variables would post
        whatever they hold by the time the sender gets to it."""
        self.sender.put(functools.partial(call, self.job_id, self.lease, *args), key)

    def _post_state(self) -> None:
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
            steps = {"epoch": self._epoch_of(self.losses_from), "first_step": self.losses_from,
                     "losses": self.losses}
        rows = self.rows
        self.losses, self.rows = [], []
        return steps, rows

    def _flush_logs(self) -> None:
        """Queue the kept step losses and epoch rows (one post); the first time, the
        state tree too (not at the start: a job's first moments are spent training, not
        posting)."""
        if self.state_posted is None:
            self._post_state()
        steps, rows = self._take_logs()
        if steps is not None or rows:
            self._write(self.client.post_logs, steps, rows, self.rows_step)
        self.logged_at = time.monotonic()

    def _checkpoint(self) -> None:
        """Queue the logs so far, then the checkpoint, the weights and the state tree as
        they are now (a checkpoint always ends a step batch: see queue.post_logs)."""
        self._flush_logs()
        self.checkpointed_at = time.monotonic()
        trainer = self.trainer
        blob, weights = checkpoint_to_bytes(trainer), weights_to_bytes(trainer.model)
        epoch, step = self._progress()
        self._write(self.client.put_blob, "checkpoint", blob, epoch, step, key="checkpoint")
        self._write(self.client.put_blob, "weights", weights, epoch, step, key="weights")
        self._post_state()

    def _finish(self, status: Outcome, error: str | None = None) -> None:
        """Post what is queued, then the finish itself (synchronously), with the logs
        kept since the last post and, for a success, the final weights (one request, not
        three)."""
        if not self.sender.drain():
            raise _AbandonError()
        if self.sender.error is not None:
            status = Outcome.failed
            error = f"posting results failed: {describe_failure(self.sender.error)}"
        steps, rows = self._take_logs()
        weights = weights_to_bytes(self.trainer.model) if status == Outcome.succeeded else None
        try:
            self.client.finish(self.job_id, self.lease, status, *self._progress(), error,
                               steps, rows, weights)
        except (LeaseLostError, ServerUnreachableError) as e:
            raise _AbandonError() from e
        logger.info("job %s: finished, %s", self.job_id, status)

    def _release(self) -> None:
        """Post what is queued (the checkpoint last), then let go of the job, which the
        server queues again at once, to resume from that checkpoint. If the server cannot
        be told, the job waits for its lease to lapse instead."""
        if not self.sender.drain():
            raise _AbandonError()
        try:
            self.client.release(self.job_id, self.lease)
        except (WorkerAPIError, ServerUnreachableError) as e:
            logger.warning("job %s: could not release it (%s); it is queued again once its "
                           "lease lapses", self.job_id, e)
            return
        logger.info("job %s: released at step %d", self.job_id, self.step)

    # ------------------------------------------------------------------ the loop

    def _train(self) -> Outcome | None:
        """Step until the job ends; how it ended (None for a shutdown)."""
        self.trainer = trainer = self._build()
        self.per_epoch, self.step = len(trainer.loader), trainer.steps
        replays = self._replays()
        last_step = len(trainer.loader) * int(self.spec["epochs"])
        self.logged_at = self.checkpointed_at = time.monotonic()
        # The loop runs once a step: what it does besides trainer.step() is kept to a few
        # attribute checks (a step of a small model is a few hundred µs).
        while True:
            # The step boundary: every decision is taken here, between two updates.
            if self.lost.is_set():
                raise _AbandonError()
            if self.sender.error is not None:
                raise self.sender.error
            if self.action == Action.cancel:
                return Outcome.cancelled  # the kept logs go with the finish
            if self.action == Action.pause or self.shutdown.is_set():
                self._checkpoint()
                return Outcome.paused if self.action == Action.pause else None
            if trainer.stopped is not None or trainer.steps >= last_step:
                # the kept logs and the final weights go with the finish
                self._post_state()  # a schedule may have moved it
                return Outcome.succeeded
            if self.inbox or replays:
                self._take_controls(replays)
            record = trainer.step()
            self.step = record.step
            if not self.losses:
                self.losses_from = record.step
            self.losses.append(_finite(record.loss))
            now = time.monotonic()
            if record.epoch_end is not None:
                self.rows.append(epoch_row(record.epoch_end))
                self.rows_step = record.step
                if now - self.checkpointed_at >= self.checkpoint_every:
                    self._checkpoint()
            if now - self.logged_at >= self.log_every or \
                    len(self.losses) >= MAX_STEPS_PER_POST:
                self._flush_logs()

    def run(self) -> str:
        """Train the job; how it ended: a finish status, 'abandoned' or 'released'."""
        logger.info("job %s: claimed (attempt %s)", self.job_id, self.claim["attempt"])
        beat = threading.Thread(target=self._heartbeats, name="kiln-heartbeat", daemon=True,
                                args=(heartbeat_interval(self.claim),))
        beat.start()
        # Not joined at the end: its poll returns (409) once the job is finished or
        # released; it writes nothing.
        threading.Thread(target=self._listen, name="kiln-controls", daemon=True,
                         args=(max((c["seq"] for c in self.claim["controls"]), default=0),)
                         ).start()
        self.sender.start()
        try:
            try:
                status = self._train()
            except _AbandonError:
                raise
            except BlobUnavailableError as e:  # another replica, or a later try, may serve it
                if self.claim["attempt"] < BLOB_ATTEMPTS:
                    logger.warning("job %s: %s; releasing the job for another try (claim %d of "
                                   "%d)", self.job_id, e, self.claim["attempt"], BLOB_ATTEMPTS)
                    self._release()
                    return "released"
                self._finish(Outcome.failed, f"a blob the job needs was unavailable at each of "
                             f"its {BLOB_ATTEMPTS} claims: {e}")
                return Outcome.failed
            except Exception as e:  # the job's own failure: report it, with where it happened
                logger.exception("job %s failed", self.job_id)
                self._finish(Outcome.failed, describe_failure(e))
                return Outcome.failed
            if status is None:
                self._release()
                return "released"
            self._finish(status)
            return status
        except _AbandonError:
            logger.warning("job %s: the lease is lost; abandoning the job without further "
                           "writes", self.job_id)
            return "abandoned"
        finally:
            self.done.set()
            self.sender.close()
            beat.join(timeout=1.0)
