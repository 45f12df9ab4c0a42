"""Workers' claims, answered in batches: one transaction for every claim that arrived
while the last one ran.

Under many workers a claim's cost is mostly its transaction's (its statements, the
owners' stamp locks, the commit), not its rows: services/queue.claim hands out jobs to a
batch of workers in as many statements as to one. So a replica runs one claim
transaction at a time, on a thread, and each claim that arrives meanwhile waits for the
next, which takes them all (up to ``claim_batch_max``). A lone claim runs at once; under
load the batches grow by themselves, as a database's group commit does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from ..db import session_scope
from ..errors import NotFoundError
from ..schemas import ClaimedJob, ControlPublic, DatasetPublic
from ..services import queue
from ..settings import Settings

__all__ = ["ClaimBatches"]


@dataclass
class _Ask:
    """One worker's claim, waiting for its batch."""

    token_id: str
    worker_id: str
    reply: asyncio.Future[ClaimedJob | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class ClaimBatches:
    """The claims of one replica, run a batch at a time (see the module's doc)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions, self._settings = sessions, settings
        self._waiting: list[_Ask] = []
        self._running: asyncio.Task[None] | None = None

    async def claim(self, token_id: str, worker_id: str) -> ClaimedJob | None:
        """A job for the worker ``worker_id`` (registered with the token ``token_id``), or
        None if none is queued; NotFoundError for a worker not registered with it."""
        ask = _Ask(token_id, worker_id)
        self._waiting.append(ask)
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(ask.reply)  # a client gone leaves its batch be

    async def _run(self) -> None:
        try:
            while self._waiting:
                cut = self._settings.claim_batch_max
                batch, self._waiting = self._waiting[:cut], self._waiting[cut:]
                try:
                    replies = await run_in_threadpool(self._claim, batch)
                except Exception as e:  # the transaction failed: every claim in it did
                    replies = [e] * len(batch)
                for ask, reply in zip(batch, replies, strict=True):
                    if isinstance(reply, Exception):
                        ask.reply.set_exception(reply)
                    else:
                        ask.reply.set_result(reply)
        finally:
            self._running = None

    def _claim(self, batch: list[_Ask]) -> list[ClaimedJob | Exception | None]:
        """One transaction: a job (or None) for each claim of ``batch``, or the error
        that claim gets."""
        settings = self._settings
        with session_scope(self._sessions) as session:
            workers = queue.workers_seen(session, [(a.token_id, a.worker_id) for a in batch])
            present = [w for w in workers if w is not None]
            jobs = iter(queue.claim(session, present, settings.lease_s))
            claimed = [None if w is None else next(jobs) for w in workers]
            context = queue.claimed_context(session, [j for j in claimed if j is not None])
            replies: list[ClaimedJob | Exception | None] = []
            for ask, worker, job in zip(batch, workers, claimed, strict=True):
                if worker is None:
                    replies.append(NotFoundError(
                        f"no worker {ask.worker_id!r} registered with this token"))
                    continue
                if job is None:
                    replies.append(None)
                    continue
                datasets, controls = context[job.id]
                checkpoint = None if job.checkpoint_sha256 is None else {
                    "sha256": job.checkpoint_sha256, "epoch": job.checkpoint_epoch,
                    "step": job.checkpoint_step}
                replies.append(ClaimedJob(
                    job_id=job.id, lease_token=job.lease_token,
                    lease_expires_at=job.lease_expires_at,
                    heartbeat_interval_s=settings.heartbeat_interval_s,
                    log_interval_s=settings.log_interval_s,
                    checkpoint_interval_s=settings.checkpoint_interval_s,
                    blob_retry_s=settings.blob_retry_s, attempt=job.attempt, spec=job.spec,
                    datasets={i: DatasetPublic.model_validate(d) for i, d in datasets.items()},
                    checkpoint=checkpoint,
                    controls=[ControlPublic.model_validate(c) for c in controls]))
            return replies
