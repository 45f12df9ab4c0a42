"""``kiln-server serve``: uvicorn running Kiln's app, with local workers beside it.

Shutdown (SIGTERM, SIGINT) goes in this order: the local workers stop first, while the
API still answers, so that each checkpoints the job in hand and lets go of it; then the
held controls long-polls are woken (each would otherwise hold uvicorn's wait for open
requests for its whole wait); then uvicorn closes.

An idle worker's claim is held on the server until a job is queued or its wait runs out,
then asked again; the access log leaves out the claims that found no job, which would
otherwise bury every other line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

__all__ = ["WORKER_STOP_TIMEOUT_S", "LocalWorkers", "Server", "serve"]

log = logging.getLogger("kiln_server")

#: How long a stopping local worker may take to checkpoint its job and exit before it
#: is killed (its job then resumes from its last checkpoint elsewhere).
WORKER_STOP_TIMEOUT_S = 30.0


class LocalWorkers:
    """``kiln-server worker`` processes for the server at ``url``."""

    def __init__(self, url: str, token: str, n: int) -> None:
        cmd = [sys.executable, "-m", "kiln_server", "worker", "--url", url]
        env = {**os.environ, "KILN_WORKER_TOKEN": token}
        self.procs = [subprocess.Popen(cmd, env=env) for _ in range(n)]

    def stop(self) -> None:
        """SIGTERM each worker and wait for it (idempotent)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("local worker %d did not stop in %.0f s; killing it", p.pid,
                            WORKER_STOP_TIMEOUT_S)
                p.kill()
                p.wait()


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
