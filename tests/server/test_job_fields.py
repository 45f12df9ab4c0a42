"""What a job shows beside its status: ``latest`` (its last epoch row's figures) and
``worker`` (who holds it now), in one read for a whole page of jobs, and ``latest`` filled
in by migration 0004 for the jobs of a database made before it."""

from __future__ import annotations

import pytest
from alembic import command
from kiln_server import migrate
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import Epoch, Job, JobStatus, Token, User, Worker, utcnow
from kiln_server.schemas import JobPublic
from kiln_server.services import jobs
from sqlalchemy import column, event, insert, select, table

from .conftest import pg_database
from .test_worker_api import claimed  # noqa: F401  (a fixture)


def test_a_job_shows_its_worker_and_its_last_epochs_figures(user, worker, claimed):  # noqa: F811
    job_id, lease, worker_id, _ = claimed
    listed = {j["id"]: j for j in user.get("/v1/jobs").json()["data"]}
    assert listed[job_id]["worker"] == {"id": worker_id, "name": "t"}
    assert listed[job_id]["latest"] is None

    def post(*rows: tuple[int, float]) -> None:
        r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
            "step": 28 * max(e for e, _ in rows), "epochs": [
                {"epoch": e, "train_loss": loss, "val_loss": loss / 2,
                 "metrics": {"val_accuracy": 1 - loss}} for e, loss in rows]})
        assert r.status_code == 204, r.text

    post((2, 0.5), (1, 0.75))
    want = {"epoch": 2, "train_loss": 0.5, "val_loss": 0.25, "metrics": {"val_accuracy": 0.5}}
    assert user.get(f"/v1/jobs/{job_id}").json()["latest"] == want
    post((1, 0.8))  # a resumed worker posting an earlier epoch again: not the last row
    assert user.get(f"/v1/jobs/{job_id}").json()["latest"] == want
    post((3, 0.25))
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert job["latest"]["epoch"] == 3 and job["latest"]["train_loss"] == 0.25
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": "succeeded", "epoch": 3, "step": 84})
    assert r.status_code == 204, r.text
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["worker"], job["latest"]["epoch"]) == (None, 3)


def test_a_page_of_jobs_takes_two_queries_however_many_workers_hold_them(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'kiln.db'}")
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as s:
        owner = User(name="u")
        s.add(owner)
        s.flush()
        token = Token(user_id=owner.id, sha256="0" * 64, worker=True)
        s.add(token)
        s.flush()
        workers = [Worker(token_id=token.id, name=f"w{i}", device={}) for i in range(20)]
        s.add_all(workers)
        s.flush()
        s.add_all(Job(owner_id=owner.id, spec={"epochs": 1}, parameters=0, paths=[],
                      status=JobStatus.running if i < 20 else JobStatus.queued,
                      worker_id=workers[i].id if i < 20 else None,
                      latest={"epoch": 1, "train_loss": 1.0, "val_loss": None, "metrics": {}})
                  for i in range(40))
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: statements.append(sql))
    with session_scope(sessions) as s:
        viewer = s.get(User, owner.id)
        statements.clear()
        rows, _ = jobs.list_(s, viewer, None, None, 50)
        page = [JobPublic.model_validate(j) for j in rows]
    assert len(page) == 40 and sum(j.worker is not None for j in page) == 20
    assert {j.worker.name for j in page if j.worker} == {f"w{i}" for i in range(20)}
    assert all(j.latest.epoch == 1 for j in page)
    assert len(statements) == 2 and "FROM workers" in statements[1]  # not one per job
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kiln.db'}"
    else:
        with pg_database() as url:
            yield url


def test_migration_0004_fills_in_latest_from_the_stored_epoch_rows(database_url):
    engine = make_engine(database_url)
    config = migrate.alembic_config()
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.commit()
    old = ["id", "owner_id", "name", "status", "spec", "parameters", "paths", "attempt",
           "epoch", "step", "queued_at", "created_at", "updated_at"]
    tables = Job.metadata.tables
    with engine.begin() as conn:
        conn.execute(insert(tables["users"]).values(id="u1", name="u", is_admin=False,
                                                    created_at=utcnow()))
        # The jobs table as 0003 left it: the columns of later migrations (and the
        # models' defaults for them) are not there yet.
        jobs_0003 = table("jobs", *(column(c, tables["jobs"].c[c].type) for c in old))
        for job_id in ("trained", "new"):
            conn.execute(insert(jobs_0003).values(
                id=job_id, owner_id="u1", name="", status="running", spec={}, parameters=0,
                paths=[], attempt=1, epoch=0, step=0, queued_at=utcnow(),
                created_at=utcnow(), updated_at=utcnow()))
        for epoch, loss in ((2, 0.5), (3, 0.25), (1, 1.0)):
            conn.execute(insert(tables["epochs"]).values(
                job_id="trained", epoch=epoch, train_loss=loss, val_loss=None,
                metrics={"val_accuracy": 0.9}, learning_rates={}, frozen=[], skipped_steps=0,
                created_at=utcnow()))
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as s:
        latest = dict(s.execute(select(Job.id, Job.latest)).all())
        assert s.scalar(select(Epoch.train_loss).where(Epoch.epoch == 3)) == 0.25
    assert latest == {"trained": {"epoch": 3, "train_loss": 0.25, "val_loss": None,
                                  "metrics": {"val_accuracy": 0.9}},
                      "new": None}
    engine.dispose()
