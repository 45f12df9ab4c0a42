"""The sender thread of a job: it posts the job's writes (step losses, epoch rows, control
results, checkpoints, weights, the state tree) in the order they were made, so that the
training thread never waits on the network between epochs.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable

from .client import LeaseLostError, ServerUnreachableError

__all__ = ["DRAIN_TIMEOUT_S", "SUPERSEDED_EVERY_S", "Sender"]

logger = logging.getLogger(__name__)

#: When the sender lags, a checkpoint (weights, state tree) that a newer one already
#: follows in the queue is still posted if none was posted for this many seconds.
SUPERSEDED_EVERY_S = 1.0
#: Seconds the training thread waits for the sender to post what is queued at the end
#: of a job (or before a pause) before it gives up on the job.
DRAIN_TIMEOUT_S = 120.0


class Sender(threading.Thread):
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
