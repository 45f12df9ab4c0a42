"""A held job's controls inbox: the controls (and the pause or cancel asked) that reach the
worker while it trains, kept for the training thread to take at its next step boundary.

Two threads fill it:

- the **controls thread** keeps the server's controls long-poll open, so that a control
  reaches the inbox as soon as it is stored (it waits in a socket read, off the GIL);
- the **heartbeat thread** renews the lease every ``heartbeat_interval_s`` (the server's
  number, from the claim), reports the step reached, and puts the pending controls of
  each reply in the inbox: the fallback that delivers a control the long-poll missed.

A pending control comes back on every heartbeat until its result is posted, and the
long-poll and the claim bring it too: each ``seq`` enters the inbox once. Either thread
that meets a 409 sets ``lost``.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..schemas import Action
from .claim import Claim, Control
from .client import LeaseLostError, ServerUnreachableError, WorkerAPIError, WorkerClient

__all__ = ["CONTROLS_RETRY_S", "CONTROLS_WAIT_S", "ControlsInbox"]

logger = logging.getLogger(__name__)

#: How long one controls long-poll may wait on the server (it caps this itself too).
CONTROLS_WAIT_S = 20.0
#: Seconds before the controls thread asks again after the server did not answer (its
#: own silence costs nothing: the heartbeat decides whether the lease is lost).
CONTROLS_RETRY_S = 1.0


class ControlsInbox:
    """The controls of ``claim``'s job as they arrive, and the Action asked of it.

    ``progress`` gives what a heartbeat reports: epochs and global steps completed, and
    the steps in an epoch (None until known). ``lost`` is set, by either thread, once the
    lease is gone.
    """

    def __init__(self, client: WorkerClient, claim: Claim, lost: threading.Event,
                 progress: Callable[[], tuple[int, int, int | None]]) -> None:
        self.client, self.claim, self.lost, self.progress = client, claim, lost, progress
        self.done = threading.Event()  # ends both threads
        # Appended by the controls and heartbeat threads (and from the claim), taken by
        # the training thread: deque's append and popleft are atomic, and an empty deque
        # is one check per step (an empty Queue would raise and catch every step).
        self.controls: collections.deque[Control] = collections.deque()
        self.seen: set[int] = set()  # seqs already received
        self.seen_lock = threading.Lock()
        # Pause / cancel once a heartbeat or the long-poll says so: rebound by those
        # threads, read by the training thread at each step boundary.
        self.action = Action.continue_
        self.beat: threading.Thread | None = None

    def receive(self, control: Control) -> None:
        """Keep ``control`` for the next step boundary, unless it came before. The
        training thread (the claim's pending controls) and both threads get here; the
        lock makes check-and-add one step."""
        with self.seen_lock:
            if control.seq in self.seen:
                return
            self.seen.add(control.seq)
        self.controls.append(control)

    def take(self) -> Iterator[Control]:
        """The controls received, in order, until none is left (those that arrive
        meanwhile too)."""
        while self.controls:
            yield self.controls.popleft()

    def start(self) -> None:
        """Start both threads: the heartbeats (the first after an interval: the claim
        has just given a fresh lease and the controls) and the long-poll, from the
        claim's last control on."""
        self.beat = threading.Thread(target=self._heartbeats, name="kiln-heartbeat",
                                     daemon=True, args=(self.claim.heartbeat_interval(),))
        self.beat.start()
        # Not joined at the end: its poll returns (409) once the job is finished or
        # released; it writes nothing.
        threading.Thread(target=self._listen, name="kiln-controls", daemon=True,
                         args=(max((c.seq for c in self.claim.controls), default=0),)
                         ).start()

    def close(self) -> None:
        """End both threads (the job is over); wait a little for the heartbeat's."""
        self.done.set()
        if self.beat is not None:
            self.beat.join(timeout=1.0)

    def _reply(self, reply: dict[str, Any]) -> None:
        """What a heartbeat or the long-poll brought: the action, and controls."""
        try:
            action = Action(reply["action"])
        except ValueError:  # a newer server's: not one this worker carries out
            logger.warning("job %s: unknown action %r ignored", self.claim.job_id,
                           reply["action"])
        else:
            if action != Action.continue_:
                self.action = action
        for control in reply["controls"]:
            self.receive(Control.from_json(control))

    def _heartbeats(self, interval: float) -> None:
        job_id, lease = self.claim.job_id, self.claim.lease
        while not self.done.wait(interval):
            try:
                reply = self.client.heartbeat(job_id, lease, *self.progress())
            except (LeaseLostError, ServerUnreachableError) as e:
                logger.warning("job %s: heartbeat failed (%s); abandoning the job", job_id, e)
                self.lost.set()
                return
            except WorkerAPIError:
                logger.exception("job %s: heartbeat refused", job_id)
            else:
                self._reply(reply)

    def _listen(self, after: int) -> None:
        """Hold the controls long-poll open from control ``after`` on, until the job ends
        or its lease is lost. A server without the long-poll ends it: the heartbeats
        then bring the controls alone."""
        job_id, lease = self.claim.job_id, self.claim.lease
        while not self.done.is_set():
            try:
                reply = self.client.wait_controls(job_id, lease, after, CONTROLS_WAIT_S)
            except LeaseLostError:  # also how every poll ends once the job is finished
                self.lost.set()
                return
            except ServerUnreachableError:
                if self.done.wait(CONTROLS_RETRY_S):
                    return
                continue
            except WorkerAPIError as e:
                logger.warning("job %s: no controls long-poll (%s); controls come with "
                               "heartbeats", job_id, e)
                return
            after = max(after, reply["seq"])
            self._reply(reply)
