"""End to end: the README's first command, ``kiln-server serve`` with its local worker,
trains a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import ADMIN_TOKEN, free_port
from .e2e_support import digits_job, digits_split, finished, submit, upload_digits, wait_for


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_serve_starts_a_local_worker_that_trains_a_job(tmp_path):
    port = free_port()
    env = {**os.environ, "KILN_ADMIN_TOKEN": ADMIN_TOKEN,
           "KILN_WORKER_CACHE": str(tmp_path / "cache")}
    with open(tmp_path / "serve.log", "w") as log:
        serve = subprocess.Popen([sys.executable, "-m", "kiln_server", "serve", "--port",
                                  str(port), "--data-dir", str(tmp_path / "data")],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    worker = 0
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
            ds = upload_digits(client, digits_split())
            job_id = submit(client, digits_job(ds, epochs=2, stop=None))
            done = finished(client, job_id)
            assert done["status"] == "succeeded", done["error"]
        assert f"job {job_id}: finished, succeeded" in (tmp_path / "serve.log").read_text()
    finally:
        serve.terminate()
        serve.wait(30)
        # uvicorn re-raises SIGTERM after its shutdown, so serve's own cleanup of its
        # workers does not run yet: end the worker here rather than leak it.
        if worker and Path(f"/proc/{worker}").exists():
            os.kill(worker, signal.SIGTERM)
