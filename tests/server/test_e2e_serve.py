"""End to end: the README's first command, ``kiln-server serve`` with its local worker,
trains a job, replaces that worker if it dies (its job resuming at once), and on SIGTERM
or SIGINT stops it (it first checkpoints and releases its job) before the server goes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kiln_server.cli import LOCAL_WORKER_USER
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import Job, JobStatus, Token, User
from sqlalchemy import select

from .conftest import ADMIN_TOKEN, free_port
from .e2e_support import (
    digits_job,
    digits_split,
    finished,
    get_job,
    submit,
    upload_digits,
    wait_for,
)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@contextlib.contextmanager
def _serve(tmp_path: Path, env: dict[str, str] | None = None
           ) -> Iterator[tuple[subprocess.Popen, httpx.Client, int]]:
    """``kiln-server serve`` with its default local worker: the process, an admin client
    and the worker's pid. Whatever the test does, nothing is left running."""
    port = free_port()
    env = {**os.environ, "KILN_ADMIN_TOKEN": ADMIN_TOKEN,
           "KILN_WORKER_CACHE": str(tmp_path / "cache"), **(env or {})}
    with open(tmp_path / "serve.log", "w") as log:
        serve = subprocess.Popen([sys.executable, "-m", "kiln_server", "serve", "--port",
                                  str(port), "--data-dir", str(tmp_path / "data")],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    worker, workers = 0, set()
    try:
        def healthy():
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for("the server to answer", healthy)
        (worker,) = _children(serve.pid)
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            yield serve, client, worker
    finally:
        if serve.poll() is None:
            workers.update(_children(serve.pid))  # the replacements of a killed one too
            serve.kill()
            serve.wait(30)
        for pid in {worker, *workers} - {0}:
            if Path(f"/proc/{pid}").exists():  # serve failed to stop it
                os.kill(pid, signal.SIGKILL)


def test_serve_starts_a_local_worker_that_trains_a_job(tmp_path):
    with _serve(tmp_path) as (_, client, _):
        ds = upload_digits(client, digits_split())
        job_id = submit(client, digits_job(ds, epochs=2, stop=None))
        done = finished(client, job_id)
        assert done["status"] == "succeeded", done["error"]
    assert f"job {job_id}: finished, succeeded" in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_worker_after_it_checkpoints_its_job(tmp_path, sig):
    with _serve(tmp_path) as (serve, client, worker):
        ds = upload_digits(client, digits_split())
        job_id = submit(client, digits_job(ds, epochs=5000, stop=None))
        wait_for("the job to train", lambda: get_job(client, job_id)["step"] > 0)
        serve.send_signal(sig)
        assert serve.wait(60) == 0
        assert not Path(f"/proc/{worker}").exists()  # stopped, and reaped by serve
    assert f"job {job_id}: released at step" in (tmp_path / "serve.log").read_text()
    # The checkpoint the worker took on its way out reached the server (the default
    # checkpoint interval is far longer than this job ran), and the job is queued again,
    # not left running until its lease lapses: the next start resumes it from there.
    factory = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'data' / 'kiln.db'}"))
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job.checkpoint_sha256 is not None and job.checkpoint_step > 0
        assert (job.status, job.lease_token, job.attempt) == (JobStatus.queued, None, 1)
        # The local worker's token went with it (each start makes a new one).
        assert session.scalars(select(Token).join(User, Token.user_id == User.id).where(
            User.name == LOCAL_WORKER_USER)).all() == []


def test_a_killed_local_worker_is_replaced_and_its_job_resumes_at_once(tmp_path):
    """SIGKILL, no goodbye: serve starts another worker and queues the dead one's job at
    once (its lease, two minutes here, is not waited for); the new worker resumes it
    from its checkpoint and it succeeds."""
    lease_s = 120.0
    with _serve(tmp_path, {"KILN_LEASE_S": str(lease_s), "KILN_CHECKPOINT_INTERVAL_S": "0.3"}
                ) as (serve, client, worker):
        ds = upload_digits(client, digits_split())
        job_id = submit(client, digits_job(ds, epochs=20, stop=None, batch_size=8))
        wait_for("a checkpoint", lambda: get_job(client, job_id)["has_weights"])
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for("the job to be queued again", lambda: (j := get_job(client, job_id))[
            "status"] == "queued" or j["attempt"] > 1, timeout=lease_s / 4)
        assert time.monotonic() - killed_at < lease_s / 4
        (replacement,) = wait_for("another local worker", lambda: [
            c for c in _children(serve.pid) if c != worker])
        done = finished(client, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 2
    log = (tmp_path / "serve.log").read_text()
    assert f"local worker {worker} killed by SIGKILL after" in log
    assert f"queued again the job(s) local worker {worker} held: {job_id}" in log
    assert f"local worker {replacement} started" in log
    assert "resuming from the checkpoint" in log
