"""SQLite transactions: writers queue for the lock, a read-only transaction never waits."""

from __future__ import annotations

import sqlite3
import threading
import time

from kiln_server.db import make_engine, make_sessionmaker, session_scope
from sqlalchemy import text


def test_a_read_only_session_reads_its_snapshot_while_a_writer_holds_the_lock(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'kiln.db'}")
    sessions, readers = make_sessionmaker(engine), make_sessionmaker(engine, read_only=True)
    with session_scope(sessions) as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with session_scope(sessions) as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    holding.wait(10)
    started = time.monotonic()
    with session_scope(readers) as s:
        seen = s.execute(text("SELECT count(*) FROM t")).scalar()
    waited = time.monotonic() - started
    release.set()
    thread.join()
    assert seen == 1 and waited < 1.0  # the committed snapshot, without waiting
    with session_scope(readers) as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_the_apis_reads_answer_while_a_writer_holds_the_lock(server, user, dataset_id):
    """GET requests, and the authentication every request starts with, read without the
    write lock: another process holding it does not hold them up."""
    db = sqlite3.connect(server.data_dir / "kiln.db", isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        for path in ("/v1/jobs", "/v1/datasets", f"/v1/datasets/{dataset_id}", "/v1/me",
                     "/v1/workers"):
            r = user.get(path)
            assert r.status_code == 200, (path, r.text)
        assert time.monotonic() - started < 2.0
    finally:
        db.execute("ROLLBACK")
        db.close()


def test_a_hundred_writes_at_once_all_commit(server, worker):
    """More concurrent writes than the server has handler threads: every one commits (a
    commit never waits for a thread that a write waiting for the lock holds)."""
    results: list[int] = []

    def register(i: int) -> None:
        with server.client(worker.headers["Authorization"].removeprefix("Bearer ")) as c:
            r = c.post("/v1/worker/register", json={"name": f"crowd-{i}", "device": {}})
            results.append(r.status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=register, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [201] * 100
    assert time.monotonic() - started < 20
