"""The worker process: ``kiln-server worker --url URL --token TOKEN [--device cpu|cuda:N]``.

It registers its device, then claims jobs one at a time and trains each with the engine
(:mod:`.run`), until SIGTERM or SIGINT: then the job in hand is checkpointed at the next
step boundary and released (the server queues it again at once, and the next worker
resumes it from there). The server hands it only the jobs its device fits (a GPU job to
a GPU worker).
While the queue is empty its claim waits on the server for a job, up to CLAIM_WAIT_S a
request; a signal ends that wait at once.

``--gpus 0,1`` runs one such worker per GPU of the host instead (:func:`per_gpu`), each
with ``--device cuda:N``, supervised as ``serve`` supervises its local workers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .client import LeaseLostError, ServerUnreachableError, WorkerAPIError, WorkerClient
from .datasets import DEFAULT_MEMORY_MB, LoadedDatasets
from .device import Device, describe_device, parse_gpus
from .run import JobRun

__all__ = ["CLAIM_POLL_BACKOFF", "CLAIM_POLL_FIRST_S", "CLAIM_POLL_MAX_S", "CLAIM_WAIT_S",
           "DEFAULT_MEMORY_MB", "ClaimInterruptedError", "Device", "claim_loop",
           "describe_device", "main", "parse_gpus", "per_gpu", "worker_name"]

logger = logging.getLogger(__name__)

#: How long a claim is held on the server while the queue is empty: a job queued
#: meanwhile is handed out at once, and an idle worker costs the server one request in
#: this long.
CLAIM_WAIT_S = 20.0
#: Seconds between claims when a server answers empty claims at once (one that does not
#: hold them): the first wait, its growth factor while the queue stays empty, and the
#: longest (a job then waits at most that for an idle worker).
CLAIM_POLL_FIRST_S = 0.25
CLAIM_POLL_BACKOFF = 1.5
CLAIM_POLL_MAX_S = 2.0
#: Where fetched datasets and checkpoints are cached by sha256 (KILN_WORKER_CACHE overrides).
DEFAULT_CACHE = Path.home() / ".cache" / "kiln-worker"

def worker_name(pid: int | None = None) -> str:
    """The name a worker process registers with unless given one: host and pid (how
    ``serve`` finds the jobs of a local worker that died)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


class ClaimInterruptedError(Exception):
    """Raised by the signal handler into a held claim, so that a stopping worker need not
    wait for the server to answer it."""


def claim_loop(client: WorkerClient, worker_id: str, shutdown: threading.Event,
               run: Callable[[dict[str, Any]], object],
               holding: threading.Event | None = None) -> None:
    """Claim jobs and ``run`` each until ``shutdown``. Each claim is held on the server
    up to CLAIM_WAIT_S while the queue is empty; a server that answers an empty claim
    sooner (one that does not hold claims, or is stopping) is asked less and less often.
    ``holding`` is set while a claim is held: see ClaimInterruptedError."""
    holding = holding or threading.Event()
    wait = CLAIM_POLL_FIRST_S
    while not shutdown.is_set():
        asked = time.monotonic()
        holding.set()
        try:
            claim = client.claim(worker_id, CLAIM_WAIT_S)
        except ServerUnreachableError as e:
            logger.warning("cannot claim: %s", e)
            claim = None
        except ClaimInterruptedError:
            return
        finally:
            holding.clear()
        if claim is None:
            if time.monotonic() - asked < CLAIM_WAIT_S / 2:
                shutdown.wait(wait)
                wait = min(wait * CLAIM_POLL_BACKOFF, CLAIM_POLL_MAX_S)
            continue
        run(claim)
        wait = CLAIM_POLL_FIRST_S


def main(url: str, token: str, device: Device, *, cache: Path | None = None,
         name: str | None = None, dataset_memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """Run the worker on ``device`` (see describe_device) until SIGTERM / SIGINT; the
    process's exit status. It keeps up to ``dataset_memory_mb`` of loaded datasets in
    memory for the jobs that follow."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the log
    cache = cache or Path(os.environ.get("KILN_WORKER_CACHE", DEFAULT_CACHE))
    datasets = LoadedDatasets(dataset_memory_mb << 20)
    shutdown, holding = threading.Event(), threading.Event()

    def stop(*_: object) -> None:
        shutdown.set()  # a job in hand is checkpointed and let go at its next step
        if holding.is_set():
            raise ClaimInterruptedError()  # ends the held claim's wait for a reply now

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    client = WorkerClient(url, token, stop=shutdown)
    try:
        worker_id = client.register(name or worker_name(), device.info)
        logger.info("worker %s registered at %s with %s", worker_id, url, device.info)
        claim_loop(client, worker_id, shutdown, lambda claim: JobRun(
            client, claim, device=device.id, cache=cache, shutdown=shutdown,
            datasets=datasets).run(), holding)
    except (LeaseLostError, WorkerAPIError, ServerUnreachableError) as e:
        logger.error("worker stopping: %s", e)
        return 1
    finally:
        client.close()
    logger.info("worker stopped")
    return 0


def per_gpu(url: str, token: str, gpus: Sequence[Device], worker_args: Sequence[str] = (),
            *, command: Sequence[str] | None = None) -> int:
    """Run one worker per GPU of ``gpus`` (each given its ``--device cuda:N`` and
    ``worker_args``), supervised (one that exits is started again, as ``serve``'s local
    workers are), until SIGTERM / SIGINT: then each checkpoints and releases its job.
    ``command`` replaces the worker's command line (tests)."""
    from ..serving import LocalWorkers  # the supervisor: only this process needs it

    for gpu in gpus:
        logger.info("a worker for %s: %s", gpu.id, gpu.info)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    cmd = list(command or [sys.executable, "-m", "kiln_server", "worker", "--url", url,
                           *worker_args])
    workers = LocalWorkers(url, token, len(gpus), command=cmd, devices=[g.id for g in gpus])
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        workers.stop()
    logger.info("the workers of %s stopped", ", ".join(g.id for g in gpus))
    return 0
