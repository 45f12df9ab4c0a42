"""A real ``kiln-server serve`` for the service benchmarks: SQLite in a temporary
directory (or a database given by URL), its own port, an admin token, and tokens for users
and workers; and fresh PostgreSQL databases for them."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["PG_ADMIN_URL", "LocalServer", "pg_database"]

#: The PostgreSQL the benchmarks create their databases in (trust auth).
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (``kiln_bench_<random>``); its URL, dropped afterwards."""
    import psycopg

    name = "kiln_bench_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class LocalServer:
    """``kiln-server serve --workers N`` until ``close()`` (or the ``with`` block ends);
    its log is ``root/server.log``. Its database is ``database_url`` if given (else
    SQLite in its data directory), its data directory ``data_dir`` if given (replicas
    share one), else ``root/data``."""

    def __init__(self, workers: int = 0, env: dict[str, str] | None = None,
                 database_url: str | None = None, data_dir: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.admin_token = "kiln_bench_" + secrets.token_hex(12)
        cmd = [sys.executable, "-m", "kiln_server", "serve", "--port", str(port),
               "--workers", str(workers), "--data-dir", str(data_dir or self.root / "data")]
        if database_url:
            cmd += ["--database-url", database_url]
        with open(self.root / "server.log", "w") as log:
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, "KILN_ADMIN_TOKEN": self.admin_token,
                     "KILN_WORKER_CACHE": str(self.root / "cache"), **(env or {})},
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(f"the server did not start; see {self.root}/server.log"
                                       ) from None
                time.sleep(0.1)

    def token(self, user: str, *, worker: bool = False) -> str:
        """A new token for ``user`` (a worker token with ``worker``)."""
        with httpx.Client(base_url=self.url,
                          headers={"Authorization": f"Bearer {self.admin_token}"}) as admin:
            r = admin.post("/v1/tokens", json={"user": user, "worker": worker})
        r.raise_for_status()
        return r.json()["token"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
