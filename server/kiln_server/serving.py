"""``kiln-server serve``: uvicorn running Kiln's app, with local workers beside it.

The local workers are supervised (:class:`LocalWorkers`): one that dies is replaced, and
the jobs it held are queued again at once, not when their leases lapse.

Shutdown (SIGTERM, SIGINT) goes in this order: the supervision ends (nothing is
restarted from then on) and the local workers stop, while the API still answers, so
that each checkpoints the job in hand and releases it; then the held controls
long-polls are woken (each would otherwise hold uvicorn's wait for open requests for its
whole wait); then uvicorn closes.

An idle worker's claim is held on the server until a job is queued or its wait runs out,
then asked again; the access log leaves out the claims that found no job, which would
otherwise bury every other line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import uvicorn
from fastapi import FastAPI

__all__ = ["RESTART_FIRST_S", "RESTART_MAX_S", "RESTART_STABLE_S", "SUPERVISE_EVERY_S",
           "WORKER_STOP_TIMEOUT_S", "LocalWorkers", "Server", "serve"]

log = logging.getLogger("kiln_server")

#: How long a stopping local worker may take to checkpoint its job and exit before it
#: is killed (its job then resumes from its last checkpoint elsewhere).
WORKER_STOP_TIMEOUT_S = 30.0


#: A local worker that dies is replaced after RESTART_FIRST_S; if the replacement dies
#: too before it has run RESTART_STABLE_S, the next waits twice as long, and so on up to
#: RESTART_MAX_S (a worker that cannot start does not spin).
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
RESTART_STABLE_S = 60.0
#: How often the supervisor looks for local workers that exited.
SUPERVISE_EVERY_S = 0.2


@dataclasses.dataclass
class _Slot:
    """One local worker's place: its command line, its process (None while a replacement
    waits), when that started, and the wait before the next replacement."""

    cmd: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float = 0.0


def _how(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


class LocalWorkers:
    """``n`` supervised ``kiln-server worker`` processes for the server at ``url``.

    A supervisor thread replaces a worker that exits, with the back-off above, and first
    calls ``on_exit(pid)``, which hands the jobs that worker held back to the queue and
    returns their ids (the process is gone: nothing of it can write to them again).
    ``command`` replaces the worker's command line (tests; ``worker --gpus``, to pass its
    options on). ``devices``, if given, holds one ``--device`` per worker (``n`` of them),
    added to each one's command line.
    """

    def __init__(self, url: str, token: str, n: int, *,
                 on_exit: Callable[[int], Iterable[str]] | None = None,
                 command: list[str] | None = None, devices: Sequence[str] = (),
                 first_s: float = RESTART_FIRST_S, max_s: float = RESTART_MAX_S,
                 stable_s: float = RESTART_STABLE_S) -> None:
        if devices and len(devices) != n:
            raise ValueError(f"{len(devices)} devices for {n} local workers")
        cmd = command or [sys.executable, "-m", "kiln_server", "worker", "--url", url]
        self.env = {**os.environ, "KILN_WORKER_TOKEN": token}
        self.on_exit = on_exit
        self.first_s, self.max_s, self.stable_s = first_s, max_s, stable_s
        self.slots = [_Slot([*cmd, "--device", d]) for d in devices] or \
            [_Slot(list(cmd)) for _ in range(n)]
        for slot in self.slots:
            slot.proc, slot.started, slot.delay = self._start(slot), time.monotonic(), first_s
        self.stopping = threading.Event()
        self.stopped = False
        self.supervisor = threading.Thread(target=self._supervise, name="kiln-supervisor",
                                           daemon=True)
        self.supervisor.start()

    def _start(self, slot: _Slot) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(slot.cmd, env=self.env)
        log.info("local worker %d started", proc.pid)
        return proc

    def _died(self, pid: int) -> None:
        """Hand the dead worker's jobs back (a failure only leaves them to their leases)."""
        if self.on_exit is None:
            return
        try:
            jobs = list(self.on_exit(pid))
        except Exception:
            log.exception("could not queue again the jobs of local worker %d; they wait "
                          "for their leases", pid)
            return
        if jobs:
            log.info("queued again the job(s) local worker %d held: %s", pid,
                     ", ".join(jobs))

    def _supervise(self) -> None:
        while not self.stopping.wait(SUPERVISE_EVERY_S):
            for slot in self.slots:
                self._look_after(slot, time.monotonic())

    def _look_after(self, slot: _Slot, now: float) -> None:
        if slot.proc is None:
            if now >= slot.restart_at:
                slot.proc, slot.started = self._start(slot), now
            return
        status = slot.proc.poll()
        if status is None:
            return
        up = now - slot.started
        if up >= self.stable_s:
            slot.delay = self.first_s
        log.warning("local worker %d %s after %.1f s; starting another in %.1f s",
                    slot.proc.pid, _how(status), up, slot.delay)
        self._died(slot.proc.pid)
        slot.proc, slot.restart_at = None, now + slot.delay
        slot.delay = min(slot.delay * 2, self.max_s)

    def stop(self) -> None:
        """End the supervision, then SIGTERM each worker and wait for it (idempotent). A
        worker that must be killed, or had died already, has its jobs handed back."""
        if self.stopped:
            return
        self.stopped = True
        self.stopping.set()
        self.supervisor.join()
        procs = [slot.proc for slot in self.slots if slot.proc is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
            else:
                self._died(p.pid)
        for p in procs:
            try:
                p.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("local worker %d did not stop in %.0f s; killing it", p.pid,
                            WORKER_STOP_TIMEOUT_S)
                p.kill()
                p.wait()
                self._died(p.pid)


class Server(uvicorn.Server):
    """uvicorn's server for ``app``; ``before_shutdown`` runs (in a thread) while the
    API still answers."""

    def __init__(self, app: FastAPI, host: str, port: int,
                 before_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="info"))
        self.app, self.before_shutdown = app, before_shutdown
        self.claim_path = app.url_path_for("claim_job")
        # After the Config: it configures uvicorn's loggers.
        logging.getLogger("uvicorn.access").addFilter(self._not_an_idle_claim)

    def _not_an_idle_claim(self, record: logging.LogRecord) -> bool:
        # uvicorn's access line: (client, method, path, http version, status)
        args = record.args
        return not (isinstance(args, tuple) and len(args) == 5 and args[1] == "POST"
                    and args[2] == self.claim_path and args[4] == 204)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.before_shutdown is not None:
            await asyncio.to_thread(self.before_shutdown)
        self.app.state.wakeups.close()
        await super().shutdown(sockets)


def serve(app: FastAPI, host: str, port: int,
          start_workers: Callable[[], LocalWorkers] | None = None) -> None:
    """Start the workers and run ``app`` until SIGTERM or SIGINT; then stop both.

    uvicorn handles the signals while it runs, and once it is done raises the signal
    again into the handler that was in place before it: the one set here, before the
    workers start, which only asks uvicorn to stop. So the process does not die there
    (a default SIGTERM would, leaving the workers orphaned), and a signal that comes
    before uvicorn took over stops it as soon as it has started.
    """
    server = Server(app, host, port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.handle_exit)
    workers = start_workers() if start_workers is not None else None
    server.before_shutdown = workers.stop if workers is not None else None
    try:
        server.run()
    finally:
        if workers is not None:
            workers.stop()
