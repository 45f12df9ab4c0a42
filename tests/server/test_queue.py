"""The claim and the reaper on a real database: SQLite (WAL file) and PostgreSQL.

Threads with their own sessions race to claim twenty jobs; each job must be claimed
exactly once. The same service code and migrations run on both databases.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from kiln_server import migrate
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import Job, JobStatus, Token, User, Worker, utcnow
from kiln_server.services import queue
from sqlalchemy import select

from .conftest import ADMIN_TOKEN, Server, mlp_job, npz_bytes, pg_database, upload

N_JOBS = 20
N_CLAIMERS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kiln.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:  # the PostgreSQL database is per session: empty it
        for table in ("jobs", "workers", "tokens", "users"):
            s.execute(Job.metadata.tables[table].delete())
    yield factory
    engine.dispose()


def _seed(factory, n_jobs: int, n_workers: int) -> list[str]:
    with session_scope(factory) as s:
        user = User(name="u")
        s.add(user)
        s.flush()
        token = Token(user_id=user.id, sha256="0" * 64, worker=True)
        s.add(token)
        s.flush()
        s.add_all(Job(owner_id=user.id, spec={}, parameters=0, paths=[""]) for _ in range(n_jobs))
        s.add_all(Worker(token_id=token.id, name=f"w{i}", device={}) for i in range(n_workers))
    with session_scope(factory) as s:
        return list(s.scalars(select(Worker.id).order_by(Worker.name)))


def test_racing_claimers_take_each_job_exactly_once(sessions):
    workers = _seed(sessions, N_JOBS, N_CLAIMERS)
    claims: list[tuple[str, str]] = []
    lock, start = threading.Lock(), threading.Barrier(N_CLAIMERS)

    def claimer(worker_id: str) -> None:
        start.wait()
        while True:
            with session_scope(sessions) as s:
                job = queue.claim(s, s.get(Worker, worker_id), lease_s=60)
                if job is None:
                    return
                with lock:
                    claims.append((job.id, worker_id))

    threads = [threading.Thread(target=claimer, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job_ids = [j for j, _ in claims]
    assert len(job_ids) == N_JOBS and len(set(job_ids)) == N_JOBS
    with session_scope(sessions) as s:
        rows = s.execute(select(Job.id, Job.status, Job.worker_id, Job.attempt)).all()
    assert {(i, w) for i, _, w, _ in rows} == set(claims)
    assert {(st, a) for _, st, _, a in rows} == {(JobStatus.running, 1)}


def test_reaper_requeues_expired_leases_and_honours_requests(sessions):
    [worker_id] = _seed(sessions, 3, 1)
    with session_scope(sessions) as s:
        worker = s.get(Worker, worker_id)
        held = [queue.claim(s, worker, lease_s=60).id for _ in range(3)]
    with session_scope(sessions) as s:
        s.get(Job, held[1]).requested = "pause"
        s.get(Job, held[2]).requested = "cancel"
    with session_scope(sessions) as s:
        assert queue.reap(s, utcnow() + timedelta(seconds=30)) == []  # leases still held
    with session_scope(sessions) as s:
        assert sorted(queue.reap(s, utcnow() + timedelta(seconds=61))) == sorted(held)
    with session_scope(sessions) as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        assert [jobs[i].status for i in held] == [JobStatus.queued, JobStatus.paused,
                                                  JobStatus.cancelled]
        assert all(jobs[i].lease_token is None and jobs[i].worker_id is None for i in held)
        again = queue.claim(s, s.get(Worker, worker_id), lease_s=60)
        assert (again.id, again.attempt) == (held[0], 2)


def test_the_server_runs_on_postgresql(tmp_path):
    """Migrations, the API and an HTTP claim race, on a server backed by PostgreSQL."""
    with pg_database() as url:
        srv = Server(tmp_path, database_url=url)
        try:
            admin = srv.client(ADMIN_TOKEN)
            token = lambda worker: admin.post("/v1/tokens", json={
                "user": "pg", "worker": worker}).json()["token"]
            user = srv.client(token(False))
            ds = upload(user, npz_bytes(x=np.zeros((8, 64), np.float32),
                                        y=np.zeros(8, np.int64))).json()["id"]
            ids = {user.post("/v1/jobs", json=mlp_job(ds)).json()["id"] for _ in range(N_JOBS)}
            got: list[str] = []

            def run() -> None:
                client = srv.client(token(True))
                wid = client.post("/v1/worker/register", json={"name": "w", "device": {}}
                                  ).json()["id"]
                while (r := client.post("/v1/worker/claim", json={"worker_id": wid})
                       ).status_code == 200:
                    got.append(r.json()["job_id"])

            threads = [threading.Thread(target=run) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(got) == sorted(ids)
        finally:
            srv.stop()
