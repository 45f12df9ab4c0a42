"""The claim and the reaper on a real database: SQLite (WAL file) and PostgreSQL.

Threads with their own sessions race to claim twenty jobs; each job must be claimed
exactly once. The same service code and migrations run on both databases.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from kiln_server import migrate, wakeups
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.errors import ConflictError
from kiln_server.models import (
    Control,
    ControlKind,
    ControlStatus,
    Job,
    JobStatus,
    Token,
    User,
    Worker,
    utcnow,
)
from kiln_server.services import queue
from kiln_server.wakeups import QUEUE
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


def _controls(factory, job_id: str) -> dict[str, tuple[ControlStatus, str | None]]:
    with session_scope(factory) as s:
        return {c.kind.value: (c.status, c.reason) for c in s.scalars(
            select(Control).where(Control.job_id == job_id))}


def test_a_released_job_is_let_go_at_once_as_the_reaper_would(sessions):
    """Released: queued at once with its attempt, checkpoint and pending adjust kept, and
    the queue's bell rung; a requested pause or cancel is carried out; a stale lease is
    refused and changes nothing."""
    [worker_id] = _seed(sessions, 3, 1)
    with session_scope(sessions) as s:
        worker = s.get(Worker, worker_id)
        held = [queue.claim(s, worker, lease_s=60) for _ in range(3)]
        leases = {j.id: j.lease_token for j in held}
        ids = [j.id for j in held]
        s.get(Job, ids[0]).checkpoint_sha256 = "c" * 64
        s.add(Control(job_id=ids[0], seq=1, kind=ControlKind.adjust, hyper={"eta": 0.1}))
        for job_id, kind in ((ids[1], "pause"), (ids[2], "cancel")):
            s.get(Job, job_id).requested = kind
            s.add(Control(job_id=job_id, seq=1, kind=ControlKind(kind)))
    with session_scope(sessions) as s:
        with pytest.raises(ConflictError):
            queue.release(s, ids[0], "not-the-lease")
    for job_id in ids:
        with session_scope(sessions) as s:
            queue.release(s, job_id, leases[job_id])
            rang = s.info[wakeups._TOUCHED]
            assert job_id in rang and (QUEUE in rang) == (job_id == ids[0])
    with session_scope(sessions) as s:
        with pytest.raises(ConflictError):  # let go: its lease is gone
            queue.release(s, ids[0], leases[ids[0]])
        jobs = [s.get(Job, i) for i in ids]
        assert [j.status for j in jobs] == [JobStatus.queued, JobStatus.paused,
                                            JobStatus.cancelled]
        assert all(j.lease_token is None and j.worker_id is None and j.attempt == 1
                   for j in jobs)
        assert jobs[0].checkpoint_sha256 == "c" * 64 and jobs[0].finished_at is None
        assert jobs[2].finished_at is not None
    assert _controls(sessions, ids[0]) == {"adjust": (ControlStatus.pending, None)}
    released = "applied when the worker released the job"
    assert _controls(sessions, ids[1]) == {"pause": (ControlStatus.applied, released)}
    assert _controls(sessions, ids[2]) == {"cancel": (ControlStatus.applied, released)}
    with session_scope(sessions) as s:  # the next claim resumes it, the next attempt
        again = queue.claim(s, s.get(Worker, worker_id), lease_s=60)
        assert (again.id, again.attempt, again.checkpoint_sha256) == (ids[0], 2, "c" * 64)


def test_the_jobs_of_a_dead_worker_are_requeued_and_no_other_workers(sessions):
    """By the token and name the dead worker registered with: its job goes back to the
    queue; a job another worker holds, even one the dead worker held before, stays."""
    first, second = _seed(sessions, 2, 2)
    with session_scope(sessions) as s:
        token_id = s.get(Worker, first).token_id
        mine = queue.claim(s, s.get(Worker, first), lease_s=60).id
        theirs = queue.claim(s, s.get(Worker, second), lease_s=60).id
    with session_scope(sessions) as s:
        assert queue.requeue_held_by(s, "no-such-token", "w0") == []
        assert queue.requeue_held_by(s, token_id, "w0") == [mine]
    with session_scope(sessions) as s:
        assert s.get(Job, mine).status == JobStatus.queued
        assert s.get(Job, theirs).worker_id == second
        # The second worker takes the requeued job: the first's name no longer holds it.
        assert queue.claim(s, s.get(Worker, second), lease_s=60).id == mine
    with session_scope(sessions) as s:
        assert queue.requeue_held_by(s, token_id, "w0") == []
        assert {j.status for j in s.scalars(select(Job))} == {JobStatus.running}
