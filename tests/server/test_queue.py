"""The claim and the reaper on a real database: SQLite (WAL file) and PostgreSQL.

Threads with their own sessions race to claim twenty jobs; each job must be claimed
exactly once. The same service code and migrations run on both databases. Each concern
has one mechanism, whichever path gets there: the pending controls of a job that changes
status are settled by one table (services/settle.py), a claimed job's progress is
advanced by one writer, and only the reaper reaps (a claim does not).
"""

from __future__ import annotations

import secrets
import threading
import time
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
    JobRequest,
    JobStatus,
    Outcome,
    Token,
    User,
    Worker,
    utcnow,
)
from kiln_server.schemas import Finish, Heartbeat, LogsIn
from kiln_server.services import jobs, queue
from kiln_server.services.settle import VERDICTS, settle
from kiln_server.wakeups import QUEUE
from sqlalchemy import select, update

from .conftest import ADMIN_TOKEN, Server, database, mlp_job, npz_bytes, pg_database, upload

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


def owner_with_worker_token(s) -> tuple[User, Token]:
    """A user, and a worker token of theirs, written (their ids set)."""
    user = User(name="u")
    s.add(user)
    s.flush()
    token = Token(user_id=user.id, sha256=secrets.token_hex(32), worker=True)
    s.add(token)
    s.flush()
    return user, token


def _seed(factory, n_jobs: int, n_workers: int) -> list[str]:
    with session_scope(factory) as s:
        user, token = owner_with_worker_token(s)
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
                job = queue.claim(s, [s.get(Worker, worker_id)], lease_s=60)[0]
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
        held = [queue.claim(s, [worker], lease_s=60)[0].id for _ in range(3)]
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
        again = queue.claim(s, [s.get(Worker, worker_id)], lease_s=60)[0]
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
        held = [queue.claim(s, [worker], lease_s=60)[0] for _ in range(3)]
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
        again = queue.claim(s, [s.get(Worker, worker_id)], lease_s=60)[0]
        assert (again.id, again.attempt, again.checkpoint_sha256) == (ids[0], 2, "c" * 64)


def test_the_jobs_of_a_dead_worker_are_requeued_and_no_other_workers(sessions):
    """By the token and name the dead worker registered with: its job goes back to the
    queue; a job another worker holds, even one the dead worker held before, stays."""
    first, second = _seed(sessions, 2, 2)
    with session_scope(sessions) as s:
        token_id = s.get(Worker, first).token_id
        mine = queue.claim(s, [s.get(Worker, first)], lease_s=60)[0].id
        theirs = queue.claim(s, [s.get(Worker, second)], lease_s=60)[0].id
    with session_scope(sessions) as s:
        assert queue.requeue_held_by(s, "no-such-token", "w0") == []
        assert queue.requeue_held_by(s, token_id, "w0") == [mine]
    with session_scope(sessions) as s:
        assert s.get(Job, mine).status == JobStatus.queued
        assert s.get(Job, theirs).worker_id == second
        # The second worker takes the requeued job: the first's name no longer holds it.
        assert queue.claim(s, [s.get(Worker, second)], lease_s=60)[0].id == mine
    with session_scope(sessions) as s:
        assert queue.requeue_held_by(s, token_id, "w0") == []
        assert {j.status for j in s.scalars(select(Job))} == {JobStatus.running}


# --- one settlement of pending controls ------------------------------------------------

A, R = ControlStatus.applied, ControlStatus.rejected
#: What each kind of pending control becomes when its job enters each status, written
#: out: kinds not named stay pending. A finished job has nothing left pending.
EXPECTED = {
    JobStatus.queued: {"resume": A},
    JobStatus.paused: {"pause": A, "cancel": R},
    JobStatus.cancelled: {"pause": A, "cancel": A, "resume": R, "adjust": R, "freeze": R,
                          "thaw": R},
    JobStatus.succeeded: dict.fromkeys(ControlKind, R),
    JobStatus.failed: dict.fromkeys(ControlKind, R),
}


def _job_with_every_control(factory, status=JobStatus.running) -> str:
    """A job at epoch 2, step 40, with one pending control of every kind."""
    with session_scope(factory) as s:
        user = s.scalar(select(User)) or User(name="u")
        s.add(user)
        s.flush()
        job = Job(owner_id=user.id, spec={}, parameters=0, paths=[""], status=status,
                  epoch=2, step=40)
        s.add(job)
        s.flush()
        s.add_all(Control(job_id=job.id, seq=i, kind=k) for i, k in enumerate(ControlKind, 1))
        return job.id


def _settled(factory, job_id: str) -> dict[str, tuple]:
    """Per kind: (status, reason, applied epoch, applied step, resolved)."""
    with session_scope(factory) as s:
        return {c.kind.value: (c.status, c.reason, c.applied_epoch, c.applied_step,
                               c.resolved_at is not None)
                for c in s.scalars(select(Control).where(Control.job_id == job_id))}


def _expected(status: JobStatus, how: str | None = None, at=(2, 40)) -> dict[str, tuple]:
    out = {}
    for kind in ControlKind:
        verdict = EXPECTED[status].get(kind.value)
        if verdict is None:
            out[kind.value] = (ControlStatus.pending, None, None, None, False)
        elif verdict == A:
            out[kind.value] = (A, f"applied {how}" if how else None, *at, True)
        elif kind in (ControlKind.pause, ControlKind.cancel, ControlKind.resume):
            out[kind.value] = (R, f"the job {status} first", None, None, True)
        else:
            out[kind.value] = (R, f"the job {status} before the control applied", None, None,
                               True)
    return out


def test_the_settlement_table(sessions):
    """Applied controls carry the job's progress, rejected ones say why, the rest wait;
    every finished status leaves nothing pending; a running job is not in the table."""
    assert {st: {k.value: v for k, v in d.items()} for st, d in VERDICTS.items()} == {
        st: {str(k): v for k, v in d.items()} for st, d in EXPECTED.items()}
    for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
        assert set(VERDICTS[status]) == set(ControlKind)
    for status in EXPECTED:
        job_id = _job_with_every_control(sessions, status)
        with session_scope(sessions) as s:
            settle(s, [job_id], status, "when tested")
        assert _settled(sessions, job_id) == _expected(status, "when tested"), status
        with session_scope(sessions) as s:  # a control is settled once, never again
            settle(s, [job_id], JobStatus.failed)
        settled = {k: v for k, v in _expected(status, "when tested").items()
                   if v[0] != ControlStatus.pending}
        assert {k: v for k, v in _settled(sessions, job_id).items() if k in settled} == settled


def _claimed(factory) -> tuple[str, str]:
    """(job id, lease) of a job claimed with one pending control of every kind."""
    [worker_id] = _seed(factory, 0, 1)
    job_id = _job_with_every_control(factory, JobStatus.queued)
    with session_scope(factory) as s:
        job = queue.claim(s, [s.get(Worker, worker_id)], lease_s=60)[0]
        assert job.id == job_id
        job.epoch, job.step = 2, 40  # as reported by its worker
        return job.id, job.lease_token


@pytest.mark.parametrize("outcome", list(Outcome))
def test_a_finish_settles_by_the_table(sessions, outcome):
    job_id, lease = _claimed(sessions)
    with session_scope(sessions) as s:
        queue.finish(s, job_id, lease, Finish(status=outcome, epoch=3, step=45))
    assert _settled(sessions, job_id) == _expected(JobStatus(outcome), at=(3, 45))


@pytest.mark.parametrize("requested", [None, *JobRequest])
@pytest.mark.parametrize("how", ["reap", "release", "requeue_held_by"])
def test_a_job_let_go_settles_by_the_table(sessions, requested, how):
    """Reaped, released or let go with its dead worker: to the queue, or to paused or
    cancelled as requested, its controls settled as a finish to that status settles them
    (a cancelled job's adjust, freeze and thaw rejected too, not left pending)."""
    job_id, lease = _claimed(sessions)
    with session_scope(sessions) as s:
        s.get(Job, job_id).requested = requested
    with session_scope(sessions) as s:
        if how == "reap":
            assert queue.reap(s, utcnow() + timedelta(seconds=61)) == [job_id]
            why = "when the worker's lease expired"
        elif how == "release":
            queue.release(s, job_id, lease)
            why = "when the worker released the job"
        else:
            worker = s.get(Worker, s.get(Job, job_id).worker_id)
            assert queue.requeue_held_by(s, worker.token_id, worker.name) == [job_id]
            why = "when the worker died"
    status = {None: JobStatus.queued, JobRequest.pause: JobStatus.paused,
              JobRequest.cancel: JobStatus.cancelled}[requested]
    with session_scope(sessions) as s:
        assert s.get(Job, job_id).status == status
    assert _settled(sessions, job_id) == _expected(status, why)


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_a_change_carried_out_at_once_settles_by_the_table(sessions, action):
    """A pause, resume or cancel of a job no worker holds: the new control is applied at
    once, and the job's others settled as any change to that status settles them (a
    paused job's pending adjust is rejected when it is cancelled)."""
    before = {"pause": JobStatus.queued, "resume": JobStatus.paused,
              "cancel": JobStatus.paused}[action]
    job_id = _job_with_every_control(sessions, before)
    with session_scope(sessions) as s:  # the new control will be the only resume
        s.execute(update(Control).where(Control.job_id == job_id,
                                        Control.kind == ControlKind.resume)
                  .values(status=ControlStatus.rejected))
        job = getattr(jobs, action)(s, s.scalar(select(User)), job_id)
        status = job.status
    assert status == {"pause": JobStatus.paused, "resume": JobStatus.queued,
                      "cancel": JobStatus.cancelled}[action]
    with session_scope(sessions) as s:
        new = s.scalar(select(Control).where(Control.job_id == job_id)
                       .order_by(Control.seq.desc()).limit(1))
        assert (new.kind, new.status, new.applied_epoch, new.applied_step) == (
            ControlKind(action), A, 2, 40)
        old = {c.kind.value: c.status for c in s.scalars(select(Control).where(
            Control.job_id == job_id, Control.seq != new.seq, Control.kind != "resume"))}
    expected = {k: v[0] for k, v in _expected(status).items() if k != "resume"}
    assert old == expected


# --- one writer of progress -------------------------------------------------------------

def test_progress_never_goes_back_whichever_write_brings_it(sessions):
    """Heartbeats, log posts (steps, epoch rows) and the finish, in an order where each
    reports less than the last: the job's progress is the most any of them reported;
    a new claim starts it at the checkpoint."""
    [worker_id] = _seed(sessions, 1, 1)
    with session_scope(sessions) as s:
        job = queue.claim(s, [s.get(Worker, worker_id)], lease_s=60)[0]
        job_id, lease = job.id, job.lease_token
    writes = [
        (lambda s: queue.heartbeat(s, job_id, lease, Heartbeat(epoch=1, step=30), 60), (1, 30)),
        (lambda s: queue.post_logs(s, job_id, lease, LogsIn.model_validate(
            {"steps": {"epoch": 2, "first_step": 1, "losses": [1.0] * 50}})), (1, 50)),
        (lambda s: queue.heartbeat(s, job_id, lease, Heartbeat(epoch=1, step=45), 60), (1, 50)),
        (lambda s: queue.post_logs(s, job_id, lease, LogsIn.model_validate(
            {"epochs": [{"epoch": 2}, {"epoch": 1}], "step": 48})), (2, 50)),
        (lambda s: queue.heartbeat(s, job_id, lease, Heartbeat(epoch=3, step=49), 60), (3, 50)),
        (lambda s: queue.post_logs(s, job_id, lease, LogsIn.model_validate(
            {"steps": {"epoch": 1, "first_step": 10, "losses": [1.0]}})), (3, 50)),
        (lambda s: queue.finish(s, job_id, lease, Finish(status="paused", epoch=2, step=20)),
         (3, 50)),
    ]
    for i, (write, progress) in enumerate(writes):
        with session_scope(sessions) as s:
            write(s)
        with session_scope(sessions) as s:
            job = s.get(Job, job_id)
            assert (job.epoch, job.step) == progress, i
    with session_scope(sessions) as s:
        job = s.get(Job, job_id)
        job.status, job.checkpoint_epoch, job.checkpoint_step = JobStatus.queued, 1, 28
    with session_scope(sessions) as s:
        job = queue.claim(s, [s.get(Worker, worker_id)], lease_s=60)[0]
        assert (job.id, job.epoch, job.step) == (job_id, 1, 28)


# --- the reaper alone reaps -------------------------------------------------------------

def test_a_claim_does_not_reap(sessions):
    """A job whose lease has lapsed waits for the reaper: a claim meanwhile finds the
    queue empty (it is one statement), and takes the job once the reaper has run."""
    first, second = _seed(sessions, 1, 2)
    with session_scope(sessions) as s:
        job_id = queue.claim(s, [s.get(Worker, first)], lease_s=60)[0].id
        s.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_scope(sessions) as s:
        assert queue.claim(s, [s.get(Worker, second)], lease_s=60)[0] is None
        assert s.get(Job, job_id).status == JobStatus.running
    with session_scope(sessions) as s:
        assert queue.reap(s) == [job_id]
    with session_scope(sessions) as s:
        job = queue.claim(s, [s.get(Worker, second)], lease_s=60)[0]
        assert (job.id, job.attempt, job.worker_id) == (job_id, 2, second)


def test_the_reaper_requeues_on_its_own_schedule_without_claims(tmp_path, backend):
    """A server whose only worker claimed a job and went silent: with no claim (nor any
    other request but the owner's reads) the reaper puts the job back in the queue once
    its lease has lapsed, within a round of it."""
    lease_s, every = 1.0, 0.3
    with database(backend) as url:
        srv = Server(tmp_path, database_url=url, env={"KILN_LEASE_S": str(lease_s),
                                                      "KILN_REAPER_INTERVAL_S": str(every)})
        try:
            _reaped_without_claims(srv, lease_s, every)
        finally:
            srv.stop()


def _reaped_without_claims(srv: Server, lease_s: float, every: float) -> None:
    admin = srv.client(ADMIN_TOKEN)
    token = lambda worker: admin.post("/v1/tokens", json={
        "user": "r", "worker": worker}).json()["token"]
    user, worker = srv.client(token(False)), srv.client(token(True))
    ds = upload(user, npz_bytes(x=np.zeros((8, 64), np.float32),
                                y=np.zeros(8, np.int64))).json()["id"]
    job_id = user.post("/v1/jobs", json=mlp_job(ds)).json()["id"]
    wid = worker.post("/v1/worker/register", json={"name": "w", "device": {}}).json()["id"]
    r = worker.post("/v1/worker/claim", json={"worker_id": wid})
    claimed = time.monotonic()
    assert r.json()["job_id"] == job_id
    while (job := user.get(f"/v1/jobs/{job_id}").json())["status"] == "running":
        assert time.monotonic() - claimed < lease_s + every + 5.0, "never reaped"
        time.sleep(0.05)
    waited = time.monotonic() - claimed
    assert (job["status"], job["worker"], job["attempt"]) == ("queued", None, 1)
    assert waited >= lease_s - 0.05  # not before the lease lapsed


def _queue_in_order(factory, devices: list[str]) -> tuple[list[str], str]:
    """Jobs asking for ``devices``, queued in that order a millisecond apart; their ids,
    and a worker token's id."""
    with session_scope(factory) as s:
        user, token = owner_with_worker_token(s)
        start = utcnow()
        queued = [Job(owner_id=user.id, spec={}, parameters=0, paths=[""], device=d,
                      queued_at=start + timedelta(milliseconds=i))
                  for i, d in enumerate(devices)]
        s.add_all(queued)
        s.flush()
        return [j.id for j in queued], token.id


def _workers(factory, token_id: str, kinds: list[str]) -> list[str]:
    with session_scope(factory) as s:
        made = [Worker(token_id=token_id, name=f"w{i}", device={"kind": k})
                for i, k in enumerate(kinds)]
        s.add_all(made)
        s.flush()
        return [w.id for w in made]


def _claim_batch(factory, worker_ids: list[str]) -> list[str | None]:
    with session_scope(factory) as s:
        jobs_ = queue.claim(s, [s.get(Worker, w) for w in worker_ids], lease_s=60)
        return [None if j is None else j.id for j in jobs_]


QUEUED = ["gpu", "any", "cpu", "gpu", "cpu"]


@pytest.mark.parametrize("queued, kinds, expected", [
    # One kind: the oldest jobs that kind may run, in the workers' order.
    (QUEUED, ["cpu", "cpu", "cpu"], [1, 2, 4]),
    # Both kinds: as if each had claimed in turn.
    (QUEUED, ["cpu", "cuda", "cpu", "cuda"], [1, 0, 2, 3]),
    (QUEUED, ["cuda", "cpu", "cpu", "cuda", "cpu"], [0, 1, 2, 3, 4]),
    # The GPU worker is not left without a job because the CPU workers after it took
    # every job it could run.
    (["any", "any", "cpu"], ["cpu", "cuda", "cpu"], [0, 1, 2]),
])
def test_a_batch_of_claims_takes_what_the_same_claims_one_by_one_would(sessions, queued,
                                                                         kinds, expected):
    """Each worker of the batch gets the job it would have got claiming alone, after
    those before it."""
    ids, token_id = _queue_in_order(sessions, queued)
    workers = _workers(sessions, token_id, kinds)
    assert _claim_batch(sessions, workers) == [ids[i] for i in expected]
    with session_scope(sessions) as s:
        held = {j.id: (j.worker_id, j.lease_token, j.attempt, j.status)
                for j in s.scalars(select(Job).where(Job.id.in_(ids)))}
    for worker, i in zip(workers, expected, strict=True):
        assert held[ids[i]][0] == worker and held[ids[i]][2:] == (1, JobStatus.running)
    assert len({lease for _, lease, _, _ in held.values() if lease}) == len(workers)


def test_a_batch_larger_than_the_queue_leaves_the_last_workers_without_a_job(sessions):
    ids, token_id = _queue_in_order(sessions, ["any", "any"])
    workers = _workers(sessions, token_id, ["cpu"] * 4)
    assert _claim_batch(sessions, workers) == [ids[0], ids[1], None, None]
    assert _claim_batch(sessions, workers[:1]) == [None]


def test_workers_seen_names_only_the_workers_of_the_token_and_marks_them_seen(sessions):
    _, token_id = _queue_in_order(sessions, [])
    mine = _workers(sessions, token_id, ["cpu", "cuda"])
    with session_scope(sessions) as s:
        before = {w: s.get(Worker, w).last_seen_at for w in mine}
    time.sleep(0.01)
    with session_scope(sessions) as s:
        seen = queue.workers_seen(s, [(token_id, mine[1]), ("another-token", mine[0]),
                                      (token_id, "no-such-worker"), (token_id, mine[0])])
    assert [None if w is None else (w.id, w.device["kind"]) for w in seen] == [
        (mine[1], "cuda"), None, None, (mine[0], "cpu")]
    with session_scope(sessions) as s:
        assert all(s.get(Worker, w).last_seen_at > before[w] for w in mine)
