"""Helpers of the end-to-end tests: real worker processes, the digits job, waiting, and an
uninterrupted run of the same job by the engine alone to compare the service against.

Each end-to-end module starts its own server (conftest's ``Server``), so workers never
meet another module's queued jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from kiln_engine import state_dict
from kiln_engine.serialise import weights_from_bytes
from kiln_server.schemas import JobCreate
from kiln_server.worker.build import build_trainer

from .conftest import ADMIN_TOKEN, Server, database, mlp_job, npz_bytes, upload

__all__ = ["Workers", "digits_job", "digits_split", "e2e_server", "epochs", "finished",
           "get_job", "make_workers", "new_client", "reference_run", "submit", "upload_digits",
           "wait_for", "weights"]

#: How long a test waits for something the service should do within seconds.
WAIT_S = 60.0
FINAL = ("succeeded", "failed", "cancelled")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT_S,
             every: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def new_client(server: Server, *, worker: bool = False) -> tuple[httpx.Client, str]:
    """A client for a new user of its own (or a worker token), and its token."""
    with server.client(ADMIN_TOKEN) as admin:
        r = admin.post("/v1/tokens", json={"user": f"u{time.monotonic_ns()}", "worker": worker})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    return server.client(token), token


@pytest.fixture(scope="module")
def e2e_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """A server of this module's own, on a database of its own."""
    with database(backend) as url:
        srv = Server(tmp_path_factory.mktemp(f"e2e-server-{backend}"), database_url=url)
        yield srv
        srv.stop()


class Workers:
    """``kiln-server worker`` subprocesses against one server, each logging to a file."""

    def __init__(self, server: Server, token: str, root: Path) -> None:
        self.server, self.token, self.root = server, token, root
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int = 1) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            log = self.root / f"worker-{len(self.procs)}.log"
            env = {**os.environ, "KILN_WORKER_CACHE": str(self.root / "cache")}
            with open(log, "w") as f:
                p = subprocess.Popen([sys.executable, "-m", "kiln_server", "worker", "--url",
                                      self.server.url, "--token", self.token], env=env,
                                     stdout=f, stderr=subprocess.STDOUT)
            p.log_path = log  # type: ignore[attr-defined]
            self.procs.append(p)
            started.append(p)
        return started

    def logs(self) -> list[str]:
        return [p.log_path.read_text() for p in self.procs]  # type: ignore[attr-defined]

    def kill(self, p: subprocess.Popen) -> None:
        """SIGKILL: no checkpoint, no finish, no goodbye."""
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def make_workers(tmp_path: Path) -> Iterator[Callable[[Server], Workers]]:
    """``make_workers(server)``: a Workers group with a fresh worker token; all stopped
    when the test ends."""
    groups: list[Workers] = []

    def make(server: Server) -> Workers:
        client, token = new_client(server, worker=True)
        client.close()
        group = Workers(server, token, tmp_path / f"workers-{len(groups)}")
        group.root.mkdir()
        groups.append(group)
        return group

    yield make
    for g in groups:
        g.stop()


def digits_split() -> dict[str, np.ndarray]:
    """scikit-learn's digits, shuffled once, as x/y (training) and xv/yv (validation)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16).astype(np.float32)[order], d.target.astype(np.int64)[order]
    return {"x": x[:1400], "y": y[:1400], "xv": x[1400:], "yv": y[1400:]}


def upload_digits(client: httpx.Client, arrays: dict[str, np.ndarray]) -> str:
    r = upload(client, npz_bytes(**arrays), "digits")
    assert r.status_code == 201, r.text
    return r.json()["id"]


def digits_job(dataset: str, **changes: Any) -> dict[str, Any]:
    """conftest's Chain(enc=Dense, dec=Dense) job on the split: validated on xv/yv."""
    job = mlp_job(dataset, validation={"dataset": dataset, "x": "xv", "y": "yv"},
                  batch_size=32, seed=3, optimiser={"rule": "Adam", "eta": 0.003})
    job.update(changes)
    return job


def submit(client: httpx.Client, job: dict[str, Any]) -> str:
    r = client.post("/v1/jobs", json=job)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def finished(client: httpx.Client, job_id: str, timeout: float = WAIT_S) -> dict[str, Any]:
    """The job once it has finished (succeeded, failed or cancelled)."""
    return wait_for(f"job {job_id} to finish", lambda: (
        j if (j := get_job(client, job_id))["status"] in FINAL else None), timeout)


def epochs(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/jobs/{job_id}/epochs")
    assert r.status_code == 200, r.text
    return r.json()


def weights(client: httpx.Client, job_id: str) -> dict[str, np.ndarray]:
    """The job's latest weights, by dotted path."""
    r = client.get(f"/v1/jobs/{job_id}/weights")
    assert r.status_code == 200, r.text
    return weights_from_bytes(r.content)


def reference_run(job: dict[str, Any], dataset: str, arrays: dict[str, np.ndarray]
                  ) -> tuple[dict[str, np.ndarray], list[float]]:
    """The same job trained uninterrupted in this process, by the engine alone: its final
    weights and every step's loss."""
    job = JobCreate(**job).model_dump(mode="json")  # with the defaults, as the server stores it
    trainer = build_trainer(job, {dataset: arrays})
    losses = []
    per_epoch = len(trainer.loader)
    while trainer.stopped is None and trainer.steps < job["epochs"] * per_epoch:
        losses.append(trainer.step().loss)
    return {k: np.asarray(v) for k, v in state_dict(trainer.model).items()}, losses
