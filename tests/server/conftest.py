"""Fixtures for the server tests: a real uvicorn server on 127.0.0.1, users, data, PostgreSQL.

One server per test session (``kiln-server serve`` in a subprocess on a free port, with a
temporary data directory and SQLite file, short leases so expiry tests are quick). Each
test gets its own user through the admin's token API, so tests never see each other's
jobs or datasets.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

ADMIN_TOKEN = "test-admin-" + secrets.token_hex(16)
LEASE_S = 1.5
#: How often a held request (a claim, a controls long-poll, an event stream) re-reads an
#: SQLite database: long enough that a reply within a fraction of it can only have come
#: from a wake-up.
SQLITE_RECHECK_S = 2.0
#: The longest a claim is held on the test server while the queue is empty.
CLAIM_WAIT_MAX_S = 1.0
MAX_UPLOAD_BYTES = 2_000_000
#: Below MAX_UPLOAD_BYTES: an upload between the two is still taken (it streams to disk).
MAX_BODY_BYTES = 1_000_000
#: An event stream silent this long sends a keep-alive comment.
EVENTS_KEEPALIVE_S = 0.5
#: A user's jobs stream ends after this long (its client reconnects with its last id).
JOBS_STREAM_MAX_S = 2.0
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: How long a server may take to start: generous, for a machine busy with workers.
START_S = 60.0
#: Ports a test server tries before it gives up (another process may take a free one first).
PORT_TRIES = 3
#: The databases the server suite runs against (the ``backend`` fixture).
BACKENDS = ("sqlite", "postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, log: io.TextIOBase) -> None:
    """SIGTERM a server the tests started (SIGKILL if it has not exited in 10 s), then
    close its log."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


class Server:
    """A running ``kiln-server serve`` and how to reach it."""

    def __init__(self, data_dir: Path, database_url: str | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        # ``port``: a stopped server's, to start it again where its clients reach it.
        self.data_dir = data_dir
        self.database_url = database_url or f"sqlite:///{data_dir / 'kiln.db'}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1",  # the log is current while it runs
               "KILN_ADMIN_TOKEN": ADMIN_TOKEN, "KILN_LEASE_S": str(LEASE_S),
               "KILN_REAPER_INTERVAL_S": "0.3", "KILN_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
               "KILN_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
               "KILN_MAX_PARAMETERS": "10000000",
               "KILN_EVENTS_KEEPALIVE_S": str(EVENTS_KEEPALIVE_S),
               "KILN_JOBS_STREAM_MAX_S": str(JOBS_STREAM_MAX_S),
               "KILN_SQLITE_RECHECK_S": str(SQLITE_RECHECK_S),
               "KILN_CLAIM_WAIT_MAX_S": str(CLAIM_WAIT_MAX_S),
               # Logs soon, checkpoints every few short epochs: a resumed job then
               # trains again, and posts again, epochs its last holder had posted.
               "KILN_LOG_INTERVAL_S": "0.05", "KILN_CHECKPOINT_INTERVAL_S": "0.3",
               **(env or {})}
        # A free port may be taken by another test's process before this server binds
        # it: then it starts again on another (unless it was given one).
        for _ in range(PORT_TRIES):
            self.port = port or free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            if self._start(env, database_url):
                return
            if port is not None:
                break
        raise RuntimeError(f"server could not bind a port:\n{self._log_text()}")

    def _log_text(self) -> str:
        return (self.data_dir / "server.log").read_text()

    def _start(self, env: dict[str, str], database_url: str | None) -> bool:
        """Start the server on ``self.port``; True once it answers there, False if the
        port was taken first. Answers count only once its log says that it is this
        process that listens: another test's server may hold the port."""
        cmd = [sys.executable, "-m", "kiln_server", "serve", "--port", str(self.port),
               "--workers", "0", "--data-dir", str(self.data_dir)]
        if database_url:
            cmd += ["--database-url", database_url]
        self.log = open(self.data_dir / "server.log", "w")  # closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        listening = f"Uvicorn running on {self.url}"
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                if "address already in use" in self._log_text():
                    return False
                raise RuntimeError(f"server exited:\n{self._log_text()}")
            if listening in self._log_text():
                try:
                    if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy in {START_S:.0f} s")

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=30)

    def stop(self) -> None:
        stop_process(self.proc, self.log)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database the servers of a test run on: every test that starts a server (or
    uses the session's) runs once on each."""
    return request.param


@contextlib.contextmanager
def database(backend: str) -> Iterator[str | None]:
    """A new database for a server on ``backend``: None on SQLite (the server's file in
    its data directory), else a fresh PostgreSQL database's URL, dropped afterwards."""
    if backend == "sqlite":
        yield None
    else:
        with pg_database() as url:
            yield url


@pytest.fixture
def database_url(backend: str) -> Iterator[str | None]:
    """A new database on this test's backend, for the servers it starts itself."""
    with database(backend) as url:
        yield url


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    with database(backend) as url:
        srv = Server(tmp_path_factory.mktemp(f"kiln-server-{backend}"), database_url=url)
        yield srv
        srv.stop()


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(ADMIN_TOKEN) as c:
        yield c


@pytest.fixture
def make_client(server: Server, admin: httpx.Client) -> Callable[..., httpx.Client]:
    """``make_client(worker=False)``: a client with a token of a new user of its own."""
    def make(worker: bool = False) -> httpx.Client:
        r = admin.post("/v1/tokens", json={"user": "u" + secrets.token_hex(6), "worker": worker})
        assert r.status_code == 201, r.text
        return server.client(r.json()["token"])
    return make


@pytest.fixture
def user(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client()


@pytest.fixture
def other_user(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client()


@pytest.fixture
def worker(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client(worker=True)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return {"x": (d.data / 16).astype(np.float32), "y": d.target.astype(np.int64)}


@pytest.fixture(scope="session")
def digits_npz(digits: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, **digits)
    return path


def upload(client: httpx.Client, content: bytes, name: str = "data") -> httpx.Response:
    return client.post("/v1/datasets", params={"name": name}, content=content,
                       headers={"Content-Type": "application/octet-stream"})


@pytest.fixture
def dataset_id(user: httpx.Client, digits_npz: Path) -> str:
    r = upload(user, digits_npz.read_bytes(), "digits")
    assert r.status_code == 201, r.text
    return r.json()["id"]


def mlp_job(dataset_id: str, **changes: object) -> dict:
    """A valid job: Chain(enc=Dense(64->32, relu), dec=Dense(32->10)) with Adam on digits."""
    job = {
        "model": {"type": "Chain", "layers": {
            "enc": {"type": "Dense", "in": 64, "out": 32, "activation": "relu"},
            "dec": {"type": "Dense", "in": 32, "out": 10}}},
        "optimiser": {"rule": "Adam", "eta": 0.001},
        "loss": "logitcrossentropy",
        "train": {"dataset": dataset_id, "x": "x", "y": "y"},
        "validation": {"dataset": dataset_id, "x": "x", "y": "y"},
        "batch_size": 64, "epochs": 3, "seed": 1, "metrics": ["loss", "accuracy"],
        "stop": {"metric": "val_accuracy", "at_least": 0.95},
    }
    job.update(changes)
    return job


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (``kiln_test_<random>``), dropped afterwards."""
    import psycopg

    name = "kiln_test_" + secrets.token_hex(6)
    try:
        admin_conn = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        if os.environ.get("KILN_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"KILN_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {e}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {e}")
    with admin_conn:
        admin_conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin_conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with pg_database() as url:
        yield url
