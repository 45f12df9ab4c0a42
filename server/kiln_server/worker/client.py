"""The worker's side of the worker HTTP API (``/v1/worker``), over httpx.

Errors, drawn as the worker handles them::

    WorkerAPIError          a 4xx the worker cannot fix by retrying (a bug: logged, job failed)
    └── LeaseLostError           409: the lease is gone (expired, reclaimed, job finished);
                            the worker abandons the job at once and writes nothing more

Connection failures and 5xx answers are retried with backoff (the server may be
restarting) until ``retry_for_s`` has passed, or the worker is stopping, then raised as
``ServerUnreachableError``. A blob the server cannot send (404: the blob store that
replica reaches lacks it; 503: the store is unavailable) is asked for again the same way
for as long as the claim says (``blob_retry_s``), then raised as ``BlobUnavailableError``:
the worker releases the job, for another try, rather than fail it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = ["BlobUnavailableError", "LeaseLostError", "ServerUnreachableError", "WorkerAPIError",
           "WorkerClient"]

logger = logging.getLogger(__name__)

#: Seconds one request may take before it is retried (checkpoints are a few MB at most).
REQUEST_TIMEOUT_S = 30.0
#: Backoff between retries of a failed request: doubling from the first to the last.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
#: The header that carries a claim's lease token on every write for its job.
LEASE_HEADER = "Kiln-Lease"
#: Bytes per chunk when streaming a blob to the cache.
CHUNK_BYTES = 1 << 20


class WorkerAPIError(RuntimeError):
    """The server refused a request in a way retrying will not change."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, body


class LeaseLostError(WorkerAPIError):
    """The server no longer recognises this worker's lease on the job."""


class ServerUnreachableError(RuntimeError):
    """The server did not answer (connection refused, 5xx) for longer than allowed."""


class BlobUnavailableError(RuntimeError):
    """The server could not send a blob (404, 503, no answer) for as long as the worker
    asked: another replica, or a later claim, may."""


class _TryAgainError(Exception):
    """A try that may succeed later; its message says what went wrong."""


_T = TypeVar("_T")


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500]


class WorkerClient:
    """Calls of the worker API. Thread-safe: a job's heartbeat, controls and sender
    threads share it."""

    def __init__(self, url: str, token: str, *, retry_for_s: float = 60.0,
                 stop: threading.Event | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/") + "/v1/worker",
                                 headers={"Authorization": f"Bearer {token}"},
                                 timeout=REQUEST_TIMEOUT_S, transport=transport)
        self.retry_for_s = retry_for_s
        self.stop = stop or threading.Event()  # once set, failed requests are not retried

    def close(self) -> None:
        self.http.close()

    # -------------------------------------------------------------- the request loop

    def _retrying(self, what: str, once: Callable[[], _T], retry_for_s: float,
                  give_up: type[Exception]) -> _T:
        """``once()``, tried again with backoff while it raises _TryAgainError, until
        ``retry_for_s`` has passed or the worker is stopping (then ``give_up``)."""
        deadline = time.monotonic() + retry_for_s
        wait = RETRY_FIRST_S
        while True:
            try:
                return once()
            except _TryAgainError as e:
                problem = str(e)
            if time.monotonic() + wait > deadline or self.stop.is_set():
                raise give_up(f"{what}: {problem}")
            logger.warning("%s failed (%s); retrying in %.1f s", what, problem, wait)
            # Jitter, so that the workers of a restarted server do not all call at once.
            if self.stop.wait(wait * (0.5 + random.random() / 2)):
                raise give_up(f"{what}: {problem} (shutting down)")
            wait = min(wait * 2, RETRY_MAX_S)

    def _request(self, method: str, path: str, *, lease: str | None = None,
                 retry_for_s: float | None = None, **kwargs: Any) -> httpx.Response:
        """One call, retried on connection errors and 5xx; 409 raises LeaseLostError."""
        headers = {LEASE_HEADER: lease} if lease else {}

        def once() -> httpx.Response:
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as e:
                raise _TryAgainError(f"{type(e).__name__}: {e}") from e
            if response.status_code >= 500:
                raise _TryAgainError(f"HTTP {response.status_code}: {_detail(response)}")
            return response

        response = self._retrying(f"{method} {path}", once, self.retry_for_s
                                  if retry_for_s is None else retry_for_s,
                                  ServerUnreachableError)
        if response.status_code == 409:
            raise LeaseLostError(f"{method} {path}: {_detail(response)}", 409, _detail(response))
        if response.status_code >= 400:
            raise WorkerAPIError(f"{method} {path}: HTTP {response.status_code}: "
                                 f"{_detail(response)}", response.status_code, _detail(response))
        return response

    # -------------------------------------------------------------- worker and queue

    def register(self, name: str, device: dict[str, Any]) -> str:
        """Register this process; its worker id."""
        r = self._request("POST", "/register", json={"name": name, "device": device})
        return r.json()["id"]

    def claim(self, worker_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The next queued job with a fresh lease (the ClaimedJob body), or None if none
        was queued within ``wait_s`` (the server holds the claim that long at most)."""
        r = self._request("POST", "/claim", json={"worker_id": worker_id, "wait_s": wait_s},
                          timeout=wait_s + REQUEST_TIMEOUT_S)
        return None if r.status_code == 204 else r.json()

    def fetch_blob(self, sha256: str, cache: Path, retry_for_s: float = 0.0) -> bytes:
        """A blob by hash, from the local cache or the server (checked against its hash).
        One the server cannot send now (404, 5xx, no answer, bytes of another hash) is
        asked for again for ``retry_for_s``; then BlobUnavailableError."""
        dest = cache / sha256[:2] / sha256
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._retrying(f"GET blob {sha256}", lambda: self._download(sha256, dest),
                           retry_for_s, BlobUnavailableError)
        return dest.read_bytes()

    def _download(self, sha256: str, dest: Path) -> None:
        """One try at fetching the blob into ``dest`` (_TryAgainError if a later one may do)."""
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f, self.http.stream("GET", f"/blobs/{sha256}") as r:
                if r.status_code >= 400:
                    r.read()
                    if r.status_code == 404 or r.status_code >= 500:
                        raise _TryAgainError(f"HTTP {r.status_code}: {_detail(r)}")
                    raise WorkerAPIError(f"GET blob {sha256}: HTTP {r.status_code}: "
                                         f"{_detail(r)}", r.status_code, _detail(r))
                for chunk in r.iter_bytes(CHUNK_BYTES):
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != sha256:
                raise _TryAgainError(f"the server sent content whose sha256 is "
                                     f"{digest.hexdigest()}")
            # Atomic: a worker sharing the cache sees the whole blob or none of it.
            os.replace(tmp, dest)
        except httpx.TransportError as e:
            raise _TryAgainError(f"{type(e).__name__}: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -------------------------------------------------------------- writes for a job

    def heartbeat(self, job_id: str, lease: str, epoch: int, step: int,
                  steps_per_epoch: int | None = None) -> dict[str, Any]:
        """Renew the lease (with the epochs and steps completed); the reply's action and
        pending controls."""
        return self._request("POST", f"/jobs/{job_id}/heartbeat", lease=lease, json={
            "epoch": epoch, "step": step, "steps_per_epoch": steps_per_epoch}).json()

    def wait_controls(self, job_id: str, lease: str, after: int, wait_s: float
                      ) -> dict[str, Any]:
        """The controls long-poll: the reply (seq, action, pending controls) once the job
        has a control numbered above ``after``, or after ``wait_s`` with nothing new.
        Not retried: the caller asks again (ServerUnreachableError at the first failure)."""
        return self._request("GET", f"/jobs/{job_id}/controls", lease=lease,
                             params={"after": after, "wait_s": wait_s}, retry_for_s=0,
                             timeout=wait_s + REQUEST_TIMEOUT_S).json()

    def post_logs(self, job_id: str, lease: str, steps: dict[str, Any] | None,
                  epochs: list[dict[str, Any]], step: int) -> None:
        """A batch of step losses (a StepsIn, or None) and epoch rows, in one request;
        ``step``: the global step at the end of the last row."""
        self._request("POST", f"/jobs/{job_id}/logs", lease=lease,
                      json={"steps": steps, "epochs": epochs, "step": step})

    def post_control_results(self, job_id: str, lease: str, results: list[dict[str, Any]]
                             ) -> None:
        self._request("POST", f"/jobs/{job_id}/controls", lease=lease,
                      json={"results": results})

    def put_state(self, job_id: str, lease: str, tree: dict[str, Any]) -> None:
        self._request("PUT", f"/jobs/{job_id}/state", lease=lease, json={"tree": tree})

    def put_blob(self, job_id: str, lease: str, kind: str, blob: bytes, epoch: int,
                 step: int) -> None:
        """Upload the job's ``checkpoint`` or final ``weights``."""
        self._request("PUT", f"/jobs/{job_id}/{kind}", lease=lease, content=blob,
                      params={"epoch": epoch, "step": step})

    def release(self, job_id: str, lease: str) -> None:
        """Let go of an unfinished job: the server queues it again at once."""
        self._request("POST", f"/jobs/{job_id}/release", lease=lease)

    def finish(self, job_id: str, lease: str, status: str, epoch: int, step: int,
               error: str | None = None, steps: dict[str, Any] | None = None,
               epochs: list[dict[str, Any]] | None = None, weights: bytes | None = None
               ) -> None:
        """End the job's lease, with the last step batch and epoch rows, and the final
        weights (then as a multipart body), if given."""
        body = {"status": status, "epoch": epoch, "step": step, "error": error,
                "steps": steps, "epochs": epochs or []}
        if weights is None:
            self._request("POST", f"/jobs/{job_id}/finish", lease=lease, json=body)
        else:
            self._request("POST", f"/jobs/{job_id}/finish", lease=lease,
                          data={"finish": json.dumps(body)},
                          files={"weights": ("weights.safetensors", weights,
                                             "application/octet-stream")})
