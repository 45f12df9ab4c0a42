"""Claims answered in batches (api/claim_batches.py), a token's lookup kept a moment
(services/auth.TokenCache), and a database connection lost: what the claim path's speed
rests on, on a real database (SQLite file and PostgreSQL) and real servers.

Claims that arrive while a batch runs share the next transaction: each still gets its
own job, a worker not registered with the token a 404, and a failed transaction fails
its own batch's claims only.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from kiln_server.api.claim_batches import ClaimBatches
from kiln_server.db import session_scope
from kiln_server.errors import NotFoundError
from kiln_server.models import Job, Token, Worker
from kiln_server.services import auth, queue
from kiln_server.settings import Settings
from sqlalchemy import delete, select

from . import test_queue
from .conftest import ADMIN_TOKEN, Server, pg_database

N = 30


# The fixtures this module shares (pytest finds them among the module's names).
sessions = test_queue.sessions


@pytest.fixture
def database_url_pg():
    """A fresh PostgreSQL database of this test's own, for servers it starts itself."""
    with pg_database() as url:
        yield url


def _seed(sessions, n_jobs: int, n_workers: int) -> tuple[str, list[str]]:
    """A worker token's id and ``n_workers`` workers registered with it; ``n_jobs`` queued,
    each numbered in its spec."""
    with session_scope(sessions) as s:
        user, token = test_queue.owner_with_worker_token(s)
        s.add_all(Job(owner_id=user.id, spec={"n": i}, parameters=0, paths=[""])
                  for i in range(n_jobs))
        workers = [Worker(token_id=token.id, name=f"w{i}", device={}) for i in range(n_workers)]
        s.add_all(workers)
        s.flush()
        return token.id, [w.id for w in workers]


def _claim_all(batches: ClaimBatches, asks: list[tuple[str, str]]) -> list[object]:
    async def run() -> list[object]:
        return await asyncio.gather(*(batches.claim(t, w) for t, w in asks),
                                    return_exceptions=True)
    return asyncio.run(run())


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """The number of workers of each claim transaction, as they run."""
    sizes: list[int] = []
    claim = queue.claim

    def counted(session, workers, lease_s):
        sizes.append(len(workers))
        return claim(session, workers, lease_s)
    monkeypatch.setattr(queue, "claim", counted)
    return sizes


def test_claims_that_arrive_together_share_transactions_each_with_its_own_job(
        sessions, batch_sizes):
    token_id, workers = _seed(sessions, N, N)
    batches = ClaimBatches(sessions, Settings(claim_batch_max=8))
    asks = [(token_id, w) for w in workers]
    asks.insert(7, (token_id, "not-a-worker"))
    asks.insert(3, ("another-token", workers[0]))
    replies = _claim_all(batches, asks)

    refused = [r for r in replies if isinstance(r, NotFoundError)]
    claimed = [r for r in replies if not isinstance(r, Exception)]
    assert len(refused) == 2 and "not-a-worker" in str(refused[1])
    assert len(claimed) == N and len({c.job_id for c in claimed}) == N
    assert len({c.lease_token for c in claimed}) == N
    assert sorted(c.spec["n"] for c in claimed) == list(range(N))
    # The claims, all waiting when the first batch began, went in batches of
    # claim_batch_max (the workers found in each counted): 4 transactions, not 32.
    assert len(batch_sizes) == (N + 2) // 8 and sum(batch_sizes) == N
    with session_scope(sessions) as s:
        held = dict(s.execute(select(Job.id, Job.worker_id)).all())
    assert {held[c.job_id] for c in claimed} == set(workers)


def test_a_batch_whose_transaction_fails_fails_its_own_claims_only(sessions, monkeypatch):
    token_id, workers = _seed(sessions, N, N)
    batches = ClaimBatches(sessions, Settings(claim_batch_max=4))
    claim, calls = queue.claim, []

    def second_fails(session, workers_, lease_s):
        calls.append(len(workers_))
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        return claim(session, workers_, lease_s)
    monkeypatch.setattr(queue, "claim", second_fails)
    replies = _claim_all(batches, [(token_id, w) for w in workers[:9]])
    failed = [i for i, r in enumerate(replies) if isinstance(r, RuntimeError)]
    assert calls == [4, 4, 1] and failed == [4, 5, 6, 7]
    with session_scope(sessions) as s:  # the failed batch's transaction took nothing
        assert s.scalar(select(Job.id).where(Job.worker_id.in_(
            [workers[i] for i in failed]))) is None
    assert _claim_all(batches, [(token_id, workers[1])])[0].job_id


def test_a_token_found_is_kept_for_its_time_and_a_token_not_found_is_not(sessions):
    with session_scope(sessions) as s:
        record, secret = auth.create_token(s, "alice")
        token_id = record.id
    cache = auth.TokenCache(ttl_s=0.5)
    assert cache.cached(secret) is None
    with session_scope(sessions) as s:
        user, token = cache.look_up(s, secret)
        assert cache.look_up(s, "kiln_no-such-token") is None
    assert (user.name, token.id) == ("alice", token_id)
    with session_scope(sessions) as s:  # revoked in the database alone (the CLI's way)
        s.execute(delete(Token).where(Token.id == token_id))
    assert cache.cached(secret)[1].id == token_id  # kept: still fresh
    assert cache.cached("kiln_no-such-token") is None
    time.sleep(0.5)
    assert cache.cached(secret) is None
    with session_scope(sessions) as s:
        assert cache.look_up(s, secret) is None
    assert cache.cached(secret) is None

    off = auth.TokenCache(ttl_s=0)
    with session_scope(sessions) as s:
        record, secret = auth.create_token(s, "bob")
        assert off.look_up(s, secret)[0].name == "bob"
    assert off.cached(secret) is None


def test_a_token_revoked_through_one_replica_is_refused_by_it_at_once_and_by_another_soon(
        tmp_path, database_url_pg):
    env = {"KILN_AUTH_CACHE_S": "1.5"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Server(tmp_path / "a", database_url_pg, env=env)
    try:
        b = Server(tmp_path / "b", database_url_pg, env={
            **env, "KILN_BLOB_STORE": f"file://{tmp_path / 'a' / 'blobs'}"})
        try:
            with a.client(ADMIN_TOKEN) as admin:
                made = admin.post("/v1/tokens", json={"user": "carol"}).json()
            with a.client(made["token"]) as on_a, b.client(made["token"]) as on_b:
                assert on_a.get("/v1/jobs").status_code == 200
                assert on_b.get("/v1/jobs").status_code == 200  # B keeps it now
                with a.client(ADMIN_TOKEN) as admin:
                    assert admin.delete(f"/v1/tokens/{made['id']}").status_code == 204
                revoked = time.monotonic()
                assert on_a.get("/v1/jobs").status_code == 401
                while on_b.get("/v1/jobs").status_code == 200:
                    assert time.monotonic() - revoked < 1.5 + 1.0, "B never refused it"
                    time.sleep(0.05)
                assert on_b.get("/v1/jobs").status_code == 401
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_lost_database_connection_is_a_503_and_the_next_request_reconnects(
        tmp_path, database_url_pg):
    server = Server(tmp_path, database_url_pg)
    try:
        with server.client(ADMIN_TOKEN) as admin:
            assert admin.get("/v1/jobs").status_code == 200
            with psycopg.connect(database_url_pg, autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                    "datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
            assert ended >= 2  # the request's pooled connection and the listener's
            first = admin.get("/v1/jobs")
            assert first.status_code == 503, first.text
            assert "database connection was lost" in first.json()["detail"]
            assert first.headers["Retry-After"]
            statuses = [admin.get("/v1/jobs").status_code for _ in range(3)]
            assert statuses == [200, 200, 200]
        assert "database: a connection was lost" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()
