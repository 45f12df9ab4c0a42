"""Blobs nobody refers to any more are removed (services/blob_sweep.py): those a dataset
or a job refers to stay, and so does every blob written within the grace period, however
unreferenced; on a real database (SQLite file and PostgreSQL) and a real server, whose
sweeper removes a superseded checkpoint while the job's current one stays."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from kiln_server import migrate
from kiln_server.blobs import LocalBlobStore
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import Dataset, Job, User
from kiln_server.services.blob_sweep import sweep

from .conftest import ADMIN_TOKEN, Server, mlp_job, upload
from .test_worker_api import _drain, _finish, _register


@pytest.fixture
def sessions(tmp_path, backend, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'kiln.db'}")
    migrate.upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _blob(store: LocalBlobStore, content: bytes, age_s: float) -> str:
    """A blob of ``content``, last written ``age_s`` seconds ago."""
    staged = store.staging(1 << 20)
    staged.write(content)
    staged.close()
    sha = store.commit(staged)
    then = time.time() - age_s
    os.utime(store.root / sha[:2] / sha, (then, then))
    return sha


def test_the_sweep_removes_old_blobs_nothing_refers_to_and_keeps_the_rest(tmp_path,
                                                                          sessions):
    store = LocalBlobStore(tmp_path / "blobs")
    hour = 3600.0
    shas = {name: _blob(store, name.encode(), 2 * hour) for name in
            ("dataset", "checkpoint", "weights", "superseded", "orphan")}
    shas["fresh orphan"] = _blob(store, b"fresh orphan", 0.5 * hour)
    with session_scope(sessions) as s:
        user = User(name="u")
        s.add(user)
        s.flush()
        s.add(Dataset(owner_id=user.id, name="d", sha256=shas["dataset"], size_bytes=7,
                      arrays={}))
        s.add(Job(owner_id=user.id, spec={}, parameters=0, paths=[""],
                  checkpoint_sha256=shas["checkpoint"], weights_sha256=shas["weights"]))
        s.add(Job(owner_id=user.id, spec={}, parameters=0, paths=[""]))  # refers to none
    removed = sweep(sessions, store, grace_s=hour)
    assert sorted(removed) == sorted([shas["superseded"], shas["orphan"]])
    for name, sha in shas.items():
        assert store.exists(sha) == (name not in ("superseded", "orphan")), name
    assert sweep(sessions, store, grace_s=hour) == []  # nothing left to remove
    assert sweep(sessions, store, grace_s=0) == [shas["fresh orphan"]]


def test_a_servers_sweeper_removes_a_superseded_checkpoint_and_keeps_the_current(
        tmp_path, database_url, digits_npz):
    server = Server(tmp_path, database_url, env={"KILN_BLOB_SWEEP_INTERVAL_S": "0.3",
                                                 "KILN_BLOB_SWEEP_GRACE_S": "0"})
    try:
        with server.client(ADMIN_TOKEN) as admin:
            user_token = admin.post("/v1/tokens", json={"user": "u"}).json()["token"]
            worker_token = admin.post("/v1/tokens", json={"user": "w", "worker": True}
                                      ).json()["token"]
        with server.client(user_token) as user, server.client(worker_token) as worker:
            ds = upload(user, digits_npz.read_bytes()).json()["id"]
            job_id = user.post("/v1/jobs", json=mlp_job(ds)).json()["id"]
            wid = _register(worker)
            claimed = _drain(worker, wid, until=job_id)
            lease = {"Kiln-Lease": claimed["lease_token"]}
            put = lambda content, step: worker.put(
                f"/v1/worker/jobs/{job_id}/checkpoint", headers=lease, content=content,
                params={"epoch": 0, "step": step})
            assert put(b"first checkpoint", 10).status_code == 204
            assert put(b"second checkpoint", 20).status_code == 204
            first, second = (hashlib.sha256(c).hexdigest()
                             for c in (b"first checkpoint", b"second checkpoint"))
            blobs = tmp_path / "blobs"
            deadline = time.monotonic() + 30
            while (blobs / first[:2] / first).exists():
                assert time.monotonic() < deadline, "the superseded checkpoint stayed"
                time.sleep(0.1)
            assert (blobs / second[:2] / second).exists()
            assert worker.get(f"/v1/worker/blobs/{second}").content == b"second checkpoint"
            assert worker.get(f"/v1/worker/blobs/{first}").status_code == 404
            sha = user.get(f"/v1/datasets/{ds}").json()["sha256"]
            assert worker.get(f"/v1/worker/blobs/{sha}").status_code == 200  # in use: kept
            _finish(worker, job_id, lease)
    finally:
        server.stop()
    assert "blob sweep: removed" in (tmp_path / "server.log").read_text()
