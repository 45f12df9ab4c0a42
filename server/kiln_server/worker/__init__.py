"""The worker process: ``kiln-server worker --url URL --token TOKEN [--device cpu|cuda:N]``.

It registers its device, then claims jobs one at a time and trains each with the engine
(:mod:`.run`), until SIGTERM or SIGINT: then the job in hand is checkpointed at the next
step boundary and released (the server queues it again at once, and the next worker
resumes it from there).
While the queue is empty its claim waits on the server for a job, up to CLAIM_WAIT_S a
request; a signal ends that wait at once.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import LeaseLostError, ServerUnreachableError, WorkerAPIError, WorkerClient
from .datasets import DEFAULT_MEMORY_MB, LoadedDatasets
from .run import JobRun

__all__ = ["CLAIM_POLL_BACKOFF", "CLAIM_POLL_FIRST_S", "CLAIM_POLL_MAX_S", "CLAIM_WAIT_S",
           "DEFAULT_MEMORY_MB", "ClaimInterruptedError", "claim_loop", "describe_device", "main",
           "worker_name"]

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

_DEVICE = re.compile(r"^(cpu|cuda(?::(\d+))?)$")


def worker_name(pid: int | None = None) -> str:
    """The name a worker process registers with unless given one: host and pid (how
    ``serve`` finds the jobs of a local worker that died)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def describe_device(device: str) -> dict[str, Any]:
    """What the worker registers: the GPU's model and memory (via CuPy), or the CPU's."""
    m = _DEVICE.match(device)
    if m is None:
        raise ValueError(f"--device must be 'cpu' or 'cuda:N'; got {device!r}")
    if device == "cpu":
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return {"kind": "cpu", "name": os.uname().machine, "cores": os.cpu_count(),
                "memory_bytes": pages * page}
    import cupy  # a GPU worker needs kiln-engine[gpu]; the ImportError says so plainly

    index = int(m.group(2) or 0)
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return {"kind": "cuda", "index": index,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "memory_bytes": int(props["totalGlobalMem"])}


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


def main(url: str, token: str, device: str = "cpu", *, cache: Path | None = None,
         name: str | None = None, dataset_memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """Run the worker until SIGTERM / SIGINT; the process's exit status. It keeps up to
    ``dataset_memory_mb`` of loaded datasets in memory for the jobs that follow."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the log
    device = "cuda:0" if device == "cuda" else device
    described = describe_device(device)
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
        worker_id = client.register(name or worker_name(), described)
        logger.info("worker %s registered at %s with %s", worker_id, url, described)
        claim_loop(client, worker_id, shutdown, lambda claim: JobRun(
            client, claim, device=device, cache=cache, shutdown=shutdown,
            datasets=datasets).run(), holding)
    except (LeaseLostError, WorkerAPIError, ServerUnreachableError) as e:
        logger.error("worker stopping: %s", e)
        return 1
    finally:
        client.close()
    logger.info("worker stopped")
    return 0
