"""Fixtures of the SDK and CLI tests: one real ``kiln-server`` (SQLite, on 127.0.0.1) with
two real worker processes for the whole session, a user of each test's own, and the digits.

Each test gets a new user (``token``), so it sees only its own jobs and datasets; the
workers are shared, so a test's job may wait behind another's for a moment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server.conftest import ADMIN_TOKEN, Server

#: Worker processes serving the session's server.
WORKERS = 2


@pytest.fixture(scope="session")
def kiln_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The session's server, with WORKERS worker processes logging beside its data."""
    root = tmp_path_factory.mktemp("kiln-client")
    server = Server(root)
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        r = admin.post("/v1/tokens", json={"user": "client-tests-worker", "worker": True})
        assert r.status_code == 201, r.text
        worker_token = r.json()["token"]
    env = {**os.environ, "KILN_WORKER_CACHE": str(root / "cache")}
    procs = []
    for i in range(WORKERS):
        with open(root / f"worker-{i}.log", "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "kiln_server", "worker", "--url", server.url,
                 "--token", worker_token], env=env, stdout=log, stderr=subprocess.STDOUT))
    yield server
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    server.stop()


def new_token(server: Server, *, admin: bool = False) -> str:
    """A token of a new user of its own."""
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        r = client.post("/v1/tokens", json={"user": "c" + secrets.token_hex(6)})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture
def token(kiln_server: Server) -> str:
    return new_token(kiln_server)


@pytest.fixture(autouse=True)
def _no_saved_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user's config file and environment."""
    monkeypatch.setenv("KILN_CONFIG", str(tmp_path / "kiln-config.json"))
    monkeypatch.delenv("KILN_URL", raising=False)
    monkeypatch.delenv("KILN_TOKEN", raising=False)


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    """scikit-learn's digits, shuffled once: x/y to train on, xv/yv to validate on."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16).astype(np.float32)[order], d.target.astype(np.int64)[order]
    return {"x": x[:1400], "y": y[:1400], "xv": x[1400:], "yv": y[1400:]}


@pytest.fixture(scope="session")
def digits_npz(digits: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, **digits)
    return path


def mlp_spec() -> dict:
    """Chain(enc=Dense(64 -> 32, relu), dec=Dense(32 -> 10)) as a spec."""
    return {"type": "Chain", "layers": {
        "enc": {"type": "Dense", "in": 64, "out": 32, "activation": "relu"},
        "dec": {"type": "Dense", "in": 32, "out": 10}}}
