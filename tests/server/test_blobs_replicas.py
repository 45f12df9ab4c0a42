"""Replicas of one database share one blob store, or refuse to start: on PostgreSQL, a
second ``kiln-server serve`` with a data directory (so a blob store) of its own stops with
a message naming KILN_BLOB_STORE, while one given the first's store serves what the
first stored. Replicas that start at once agree on one store (the database's row is
inserted once, and each checks the winner's mark). A bad KILN_BLOB_STORE, or a store that
cannot be reached, stops ``serve`` at once, saying so."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from kiln_server.blobs import LocalBlobStore
from kiln_server.db import make_engine, make_sessionmaker
from kiln_server.migrate import upgrade
from kiln_server.services.blob_store import BlobStoreStartupError, check_shared
from sqlalchemy.orm import Session, sessionmaker

from . import s3_support
from .conftest import ADMIN_TOKEN, Server, free_port, npz_bytes, pg_database, upload
from .e2e_support import new_client

s3 = s3_support.s3

REFUSAL = "is not the one this database's replicas share"


def start(root: Path, name: str, url: str, **env: str) -> Server:
    data = root / name
    data.mkdir()
    return Server(data, database_url=url, env=env)


def serve_fails(data_dir: Path, *, database_url: str | None = None, **env: str
                ) -> subprocess.CompletedProcess[str]:
    """``kiln-server serve`` that is expected to stop before it serves."""
    cmd = [sys.executable, "-m", "kiln_server", "serve", "--port", str(free_port()),
           "--workers", "0", "--data-dir", str(data_dir)]
    if database_url:
        cmd += ["--database-url", database_url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KILN_ADMIN_TOKEN": ADMIN_TOKEN, **env})
    assert r.returncode != 0, r.stdout + r.stderr
    return r


def test_a_replica_with_a_blob_store_of_its_own_refuses_to_start(tmp_path):
    with pg_database() as url:
        first = start(tmp_path, "a", url)
        try:
            with pytest.raises(RuntimeError, match="server exited") as refused:
                start(tmp_path, "b", url)
            log = str(refused.value)
            assert f"KILN_BLOB_STORE: the blob store {(tmp_path / 'b' / 'blobs').as_uri()} " \
                   f"{REFUSAL}" in log
            assert "not a --data-dir of its own" in log

            # Given the first replica's store, a replica with its own data directory
            # starts, and serves to a worker what was uploaded through the first.
            shared = start(tmp_path, "c", url,
                           KILN_BLOB_STORE=(tmp_path / "a" / "blobs").as_uri())
            try:
                client, _ = new_client(first)
                r = upload(client, npz_bytes(x=np.zeros(3)))
                assert r.status_code == 201, r.text
                worker, _ = new_client(shared, worker=True)
                with worker:
                    blob = worker.get(f"/v1/worker/blobs/{r.json()['sha256']}")
                assert blob.status_code == 200 and len(blob.content) == r.json()["size_bytes"]
            finally:
                shared.stop()
        finally:
            first.stop()


def test_replicas_starting_at_once_agree_on_one_store(tmp_path):
    """Two pairs of replicas start at the same moment on a fresh database (migrated
    first, as a deployment does once before its replicas start): a pair that shares a
    store both serve; of a pair with stores of their own, exactly one does."""
    for round_, shared in enumerate((True, False)):
        root = tmp_path / str(round_)
        root.mkdir()
        with pg_database() as url:
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            env = [{"KILN_BLOB_STORE": (root / "shared").as_uri()} if shared else {}
                   for _ in range(2)]
            barrier = threading.Barrier(2)

            def one(i: int) -> Server | Exception:
                barrier.wait()
                try:
                    return start(root, f"r{i}", url, **env[i])
                except RuntimeError as e:  # it stopped (a start that timed out is raised)
                    if "server exited" not in str(e):
                        raise
                    return e

            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(one, range(2)))
            servers = [r for r in results if isinstance(r, Server)]
            for s in servers:
                s.stop()
            if shared:
                assert len(servers) == 2, results
            else:
                assert len(servers) == 1, results
                (refused,) = [r for r in results if isinstance(r, Exception)]
                assert REFUSAL in str(refused)


@contextmanager
def fresh_sessions() -> Iterator[sessionmaker[Session]]:
    """Sessions of a fresh, migrated PostgreSQL database."""
    with pg_database() as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


def race(sessions: sessionmaker[Session], stores: list[LocalBlobStore]) -> list[str | Exception]:
    """check_shared of each store, all from threads of their own at the same moment."""
    barrier = threading.Barrier(len(stores))

    def check(store: LocalBlobStore) -> str | Exception:
        barrier.wait()
        try:
            return check_shared(sessions, store)
        except BlobStoreStartupError as e:
            return e

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(check, stores))


def test_concurrent_first_checks_on_postgresql_agree_on_one_store(tmp_path):
    """check_shared itself, from 8 threads at once on a fresh database: with one store
    between them all agree and one mark is left; with a store each, exactly one passes,
    and the others take their marks away again."""
    with fresh_sessions() as sessions:
        ids = race(sessions, [LocalBlobStore(tmp_path / "one")] * 8)
    assert len(set(ids)) == 1 and isinstance(ids[0], str), ids
    assert [p.name for p in (tmp_path / "one" / ".marks").iterdir()] == [f"store-{ids[0]}"]

    with fresh_sessions() as sessions:
        results = race(sessions, [LocalBlobStore(tmp_path / f"own{i}") for i in range(8)])
    passed = [r for r in results if isinstance(r, str)]
    assert len(passed) == 1, results
    assert all(REFUSAL in str(r) for r in results if not isinstance(r, str))
    marks = [p.name for i in range(8) for p in (tmp_path / f"own{i}" / ".marks").glob("*")]
    assert marks == [f"store-{passed[0]}"]


def test_a_bad_kiln_blob_store_stops_serve_naming_it(tmp_path):
    r = serve_fails(tmp_path, KILN_BLOB_STORE="s3://No_Such")
    assert r.returncode == 2
    assert "kiln-server: KILN_BLOB_STORE must be file:///" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreachable_blob_store_stops_serve_saying_so(tmp_path, s3):
    r = serve_fails(tmp_path, KILN_BLOB_STORE="s3://kiln-missing-bucket/x",
                    KILN_S3_ENDPOINT_URL=s3.url)
    assert r.returncode == 1
    assert "kiln-server serve: KILN_BLOB_STORE: cannot use the blob store" in r.stderr
    assert "NoSuchBucket" in r.stderr
