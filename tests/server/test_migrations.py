"""``kiln-server migrate`` upgrades a database in place, on SQLite and PostgreSQL: the
schema it leaves is the models' (Alembic's autogenerate finds no difference), and a
database made at the first revision, with a row in every table, keeps its rows."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from kiln_server import migrate
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import (
    Base,
    Control,
    Dataset,
    Epoch,
    Job,
    JobDataset,
    StepBatch,
    Token,
    User,
    Worker,
)
from kiln_server.services import auth
from sqlalchemy import Engine, MetaData, func, select, text

from .conftest import pg_database

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SECRET = "kiln_" + "s" * 40


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """(the database's URL, a data directory) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kiln.db'}", tmp_path
    else:
        with pg_database() as url:
            yield url, tmp_path


def cli_migrate(url: str, data_dir) -> str:
    """``kiln-server migrate`` in a process of its own; its output."""
    r = subprocess.run([sys.executable, "-m", "kiln_server", "migrate", "--database-url", url,
                        "--data-dir", str(data_dir)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def schema_differences(engine: Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def head() -> str:
    return ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


def test_a_new_database_is_migrated_to_the_models_schema(database):
    url, data_dir = database
    assert "is up to date" in cli_migrate(url, data_dir)
    engine = make_engine(url)
    try:
        assert revision(engine) == head()
        assert schema_differences(engine) == []
        cli_migrate(url, data_dir)  # again: nothing to do, nothing changed
        assert revision(engine) == head() and schema_differences(engine) == []
    finally:
        engine.dispose()


def test_a_database_at_the_first_revision_keeps_its_rows_through_the_upgrade(database):
    url, data_dir = database
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, "0001")
        _fill_at_0001(engine)
        cli_migrate(url, data_dir)
        assert revision(engine) == head()
        assert schema_differences(engine) == []
        with session_scope(make_sessionmaker(engine)) as s:
            user, token = auth.authenticate(s, SECRET)
            assert (user.name, token.worker, token.prefix) == ("alice", False, None)
            job = s.get(Job, "j1")
            assert (job.owner_id, job.status, job.epoch, job.spec) == ("u1", "running", 2,
                                                                        {"epochs": 3})
            assert job.latest == {"epoch": 2, "train_loss": 0.5, "val_loss": 0.75,
                                  "metrics": {"val_accuracy": 0.8}}  # filled in by 0004
            assert job.queued_at == NOW and job.steps_per_epoch is None
            assert job.device == "any"  # 0006: a job from before it runs anywhere
            assert s.get(Dataset, "d1").arrays == [{"name": "x", "shape": [4], "dtype": "f4"}]
            assert s.scalar(select(StepBatch.losses)) == [1.0, 0.5]
            assert s.scalar(select(Control.hyper)) == {"eta": 0.01}
            counts = {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                      for m in (User, Token, Worker, Dataset, Job, JobDataset, Control, Epoch,
                                StepBatch)}
            assert counts == {"users": 1, "tokens": 2, "workers": 1, "datasets": 1,
                              "jobs": 1, "job_datasets": 1, "controls": 1, "epochs": 1,
                              "step_batches": 1}
    finally:
        engine.dispose()


def _fill_at_0001(engine: Engine) -> None:
    """A row in every table, written through the tables as revision 0001 made them."""
    tables = MetaData()
    with engine.begin() as conn:
        tables.reflect(conn)
        t = tables.tables
        conn.execute(t["users"].insert(), dict(id="u1", name="alice", is_admin=False,
                                               created_at=NOW))
        conn.execute(t["tokens"].insert(), [
            dict(id="t1", user_id="u1", sha256=auth.hash_token(SECRET), worker=False,
                 created_at=NOW),
            dict(id="t2", user_id="u1", sha256="0" * 64, worker=True, created_at=NOW)])
        conn.execute(t["workers"].insert(), dict(id="w1", token_id="t2", name="gpu-0",
                                                 device={}, created_at=NOW,
                                                 last_seen_at=NOW))
        conn.execute(t["datasets"].insert(), dict(
            id="d1", owner_id="u1", name="digits", sha256="1" * 64, size_bytes=16,
            arrays=[{"name": "x", "shape": [4], "dtype": "f4"}], created_at=NOW))
        conn.execute(t["jobs"].insert(), dict(
            id="j1", owner_id="u1", name="mlp", status="running", spec={"epochs": 3},
            parameters=10, paths=[""], queued_at=NOW, worker_id="w1", attempt=1, epoch=2,
            step=8, created_at=NOW, updated_at=NOW))
        conn.execute(t["job_datasets"].insert(), dict(job_id="j1", dataset_id="d1"))
        conn.execute(t["controls"].insert(), dict(
            job_id="j1", seq=1, kind="adjust", path="", hyper={"eta": 0.01},
            status="pending", created_at=NOW))
        conn.execute(t["epochs"].insert(), dict(
            job_id="j1", epoch=2, train_loss=0.5, val_loss=0.75,
            metrics={"val_accuracy": 0.8}, learning_rates={}, frozen=[], skipped_steps=0,
            created_at=NOW))
        conn.execute(t["step_batches"].insert(), dict(job_id="j1", epoch=1, first_step=0,
                                                      losses=[1.0, 0.5], created_at=NOW))
