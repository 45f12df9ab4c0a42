"""GET /v1/workers: the fleet, each worker's state and job, as users and the admin see it."""

from __future__ import annotations

import time

from .conftest import LEASE_S, mlp_job
from .test_worker_api import _drain, _finish, _register


def _listed(client, **params) -> dict[str, dict]:
    r = client.get("/v1/workers", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["data"])
    return {w["id"]: w for w in body["data"]}


def test_workers_show_their_state_and_only_their_owners_see_the_job(
        user, other_user, admin, worker, make_client, dataset_id):
    busy_id = _register(worker)
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    job = _drain(worker, busy_id, until=job_id)  # what earlier tests left queued goes first
    lease = {"Kiln-Lease": job["lease_token"]}
    second = make_client(worker=True)
    idle_id = _register(second)
    try:
        mine = _listed(user)
        assert {k: mine[busy_id][k] for k in ("name", "device", "status", "job_id")} == \
            {"name": "t", "device": {"kind": "cpu"}, "status": "busy", "job_id": job_id}
        assert (mine[idle_id]["status"], mine[idle_id]["job_id"]) == ("idle", None)
        order = [w["last_seen_at"] for w in user.get("/v1/workers").json()["data"]]
        assert order == sorted(order, reverse=True)  # last seen first

        # Another user sees that the worker is busy, not with what; the admin sees it all.
        assert (_listed(other_user)[busy_id]["status"],
                _listed(other_user)[busy_id]["job_id"]) == ("busy", None)
        assert _listed(admin)[busy_id]["job_id"] == job_id

        assert set(_listed(user, status="busy")) >= {busy_id}
        assert idle_id not in _listed(user, status="busy")
        assert idle_id in _listed(user, status="idle") and busy_id not in _listed(
            user, status="idle")

        # Its job finished, the busy worker is idle; unseen for two leases, both are gone.
        _finish(worker, job_id, lease)
        assert _listed(user)[busy_id] | {"last_seen_at": None} == \
            mine[busy_id] | {"status": "idle", "job_id": None, "last_seen_at": None}
        time.sleep(2 * LEASE_S + 0.2)
        gone = _listed(user, status="gone")
        assert {busy_id, idle_id} <= set(gone)
        assert all(w["status"] == "gone" for w in gone.values())
        assert idle_id not in _listed(user, status="idle")
    finally:
        _finish(worker, job_id, lease)  # a 409 if already done


def test_workers_need_a_user_token_and_a_known_status(user, worker):
    assert worker.get("/v1/workers").status_code == 403  # a worker token reaches only /worker
    r = user.get("/v1/workers", params={"status": "sleeping"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"], r.text
