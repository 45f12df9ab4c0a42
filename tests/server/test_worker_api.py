"""The worker API over HTTP: claim, heartbeat with controls, idempotent logs, leases, reaper."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import (
    ADMIN_TOKEN,
    CLAIM_WAIT_MAX_S,
    LEASE_S,
    MAX_BODY_BYTES,
    MAX_UPLOAD_BYTES,
    SQLITE_RECHECK_S,
    Server,
    mlp_job,
)


def _register(worker: httpx.Client) -> str:
    r = worker.post("/v1/worker/register", json={"name": "t", "device": {"kind": "cpu"}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _claim(worker: httpx.Client, worker_id: str) -> dict | None:
    r = worker.post("/v1/worker/claim", json={"worker_id": worker_id})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


def _drain(worker: httpx.Client, worker_id: str, until: str | None = None) -> dict | None:
    """Claim and cancel what other tests left queued (the server is shared) until the
    queue is empty, or until the job ``until`` is claimed, which is returned."""
    while (job := _claim(worker, worker_id)) is not None:
        if job["job_id"] == until:
            return job
        _finish(worker, job["job_id"], {"Kiln-Lease": job["lease_token"]})
    return None


def _finish(worker: httpx.Client, job_id: str, lease: dict) -> None:
    worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                json={"status": "cancelled", "epoch": 0, "step": 0})


@pytest.fixture
def claimed(user, worker, dataset_id):
    """(job id, lease headers, worker id) of a job this test's worker holds."""
    wid = _register(worker)
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    # What earlier tests left queued goes first (a lease they let lapse requeues a job
    # at any time): cancel it.
    job = _drain(worker, wid, until=job_id)
    assert job is not None
    yield job_id, {"Kiln-Lease": job["lease_token"]}, wid, job
    _finish(worker, job_id, {"Kiln-Lease": job["lease_token"]})  # a 409 if already done


def test_claim_hands_out_spec_datasets_and_a_lease(user, claimed, dataset_id, worker):
    job_id, _, _, job = claimed
    assert job["attempt"] == 1 and job["checkpoint"] is None
    assert job["spec"]["model"] == mlp_job(dataset_id)["model"]
    sha = job["datasets"][dataset_id]["sha256"]
    blob = worker.get(f"/v1/worker/blobs/{sha}")
    assert blob.status_code == 200 and len(blob.content) == job["datasets"][dataset_id][
        "size_bytes"]
    assert user.get(f"/v1/jobs/{job_id}").json()["status"] == "running"


def test_heartbeat_carries_controls_and_requests(user, worker, claimed):
    job_id, lease, _, _ = claimed
    beat = lambda: worker.post(f"/v1/worker/jobs/{job_id}/heartbeat",
                               json={"epoch": 1, "step": 5}, headers=lease).json()
    assert beat()["controls"] == [] and beat()["action"] == "continue"
    user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "adjust", "path": "layers.enc",
                                                   "hyper": {"eta": 1e-4}})
    user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": "layers.dec"})
    assert [(c["seq"], c["kind"]) for c in beat()["controls"]] == [(1, "adjust"), (2, "freeze")]
    r = worker.post(f"/v1/worker/jobs/{job_id}/controls", headers=lease, json={"results": [
        {"seq": 1, "status": "applied", "epoch": 1, "step": 6},
        {"seq": 2, "status": "rejected", "reason": "test"}]})
    assert r.status_code == 204, r.text
    assert beat()["controls"] == []
    shown = {c["seq"]: c for c in user.get(f"/v1/jobs/{job_id}/controls").json()}
    assert (shown[1]["status"], shown[1]["applied_epoch"], shown[1]["applied_step"]) == \
        ("applied", 1, 6)
    assert (shown[2]["status"], shown[2]["reason"]) == ("rejected", "test")

    assert user.post(f"/v1/jobs/{job_id}/pause").json()["requested"] == "pause"
    assert beat()["action"] == "pause"
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": "paused", "epoch": 1, "step": 9})
    assert r.status_code == 204
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["requested"]) == ("paused", None)
    assert user.get(f"/v1/jobs/{job_id}/controls").json()[-1]["applied_step"] == 9


@pytest.mark.parametrize("action, status", [("pause", "paused"), ("cancel", "cancelled")])
def test_pause_and_cancel_of_a_running_job_show_the_request_until_it_is_done(
        user, worker, claimed, action, status):
    job_id, lease, _, _ = claimed
    r = user.post(f"/v1/jobs/{job_id}/{action}")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["requested"]) == ("running", action)
    assert user.get(f"/v1/jobs/{job_id}").json()["requested"] == action
    again = user.post(f"/v1/jobs/{job_id}/{action}")
    assert again.status_code == 409 and "requested" in again.json()["detail"], again.text
    beat = worker.post(f"/v1/worker/jobs/{job_id}/heartbeat", headers=lease,
                       json={"epoch": 0, "step": 3})
    assert beat.json()["action"] == action
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": status, "epoch": 0, "step": 4})
    assert r.status_code == 204, r.text
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["requested"], job["step"]) == (status, None, 4)
    control = user.get(f"/v1/jobs/{job_id}/controls").json()[-1]
    assert (control["kind"], control["status"], control["applied_epoch"],
            control["applied_step"]) == (action, "applied", 0, 4)


def test_progress_counts_what_is_completed_and_never_goes_back_within_a_claim(
        user, worker, claimed, make_client):
    job_id, lease, _, _ = claimed
    read = lambda: {k: v for k, v in user.get(f"/v1/jobs/{job_id}").json().items()
                    if k in ("epoch", "step", "epochs", "steps_per_epoch")}
    assert read() == {"epoch": 0, "step": 0, "epochs": 3, "steps_per_epoch": None}
    beat = lambda epoch, step: worker.post(
        f"/v1/worker/jobs/{job_id}/heartbeat", headers=lease,
        json={"epoch": epoch, "step": step, "steps_per_epoch": 28})
    assert beat(1, 42).status_code == 200  # half-way through the second epoch of 28 steps
    assert read() == {"epoch": 1, "step": 42, "epochs": 3, "steps_per_epoch": 28}
    # A log post of steps up to 50 and the first epoch's row, then a heartbeat sent
    # before it (step 45) that arrives after it: nothing goes back.
    r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
        "steps": {"epoch": 1, "first_step": 1, "losses": [1.0] * 50}, "step": 28,
        "epochs": [{"epoch": 1, "train_loss": 1.0}]})
    assert r.status_code == 204, r.text
    assert beat(1, 45).status_code == 200
    assert read() == {"epoch": 1, "step": 50, "epochs": 3, "steps_per_epoch": 28}
    r = worker.put(f"/v1/worker/jobs/{job_id}/checkpoint", headers=lease, content=b"c",
                   params={"epoch": 1, "step": 30})
    assert r.status_code == 204, r.text

    # The worker is lost: the next claim resumes from the checkpoint, and so does progress.
    time.sleep(LEASE_S + 1.0)
    second = make_client(worker=True)
    again = _drain(second, _register(second), until=job_id)
    assert read() == {"epoch": 1, "step": 30, "epochs": 3, "steps_per_epoch": 28}
    _finish(second, job_id, {"Kiln-Lease": again["lease_token"]})


@contextlib.contextmanager
def _beating(worker: httpx.Client, job_id: str, lease: dict) -> Iterator[None]:
    """Heartbeats in the background, so the lease (LEASE_S) outlives a slow test."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(LEASE_S / 5):
            worker.post(f"/v1/worker/jobs/{job_id}/heartbeat", headers=lease,
                        json={"epoch": 0, "step": 0})
    thread = threading.Thread(target=beat)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _poll(worker: httpx.Client, job_id: str, lease: dict, after: int, wait_s: float
          ) -> tuple[httpx.Response, float]:
    """The controls long-poll's response and when it came (time.monotonic())."""
    r = worker.get(f"/v1/worker/jobs/{job_id}/controls", headers=lease,
                   params={"after": after, "wait_s": wait_s})
    return r, time.monotonic()


def test_controls_long_poll_answers_as_soon_as_a_control_is_stored(user, worker, claimed):
    job_id, lease, _, _ = claimed
    with _beating(worker, job_id, lease), ThreadPoolExecutor(1) as pool:
        held = pool.submit(_poll, worker, job_id, lease, 0, 10.0)
        time.sleep(0.3)  # the poll is waiting on the server
        r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "adjust", "path": "layers.enc",
                                                           "hyper": {"eta": 1e-4}})
        stored = time.monotonic()
        assert r.status_code == 201, r.text
        reply, answered = held.result()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["seq"], body["action"]) == (1, "continue")
    assert [(c["seq"], c["kind"], c["hyper"]) for c in body["controls"]] == \
        [(1, "adjust", {"eta": 1e-4})]
    # Woken by the commit, not found by the next re-read of the database.
    assert answered - stored < SQLITE_RECHECK_S / 2, answered - stored

    # Nothing above seq 1: the poll waits its time out and says so.
    with _beating(worker, job_id, lease):
        t0 = time.monotonic()
        reply, answered = _poll(worker, job_id, lease, 1, 0.3)
    assert reply.json() == {"seq": 1, "action": "continue", "controls": []}
    assert answered - t0 >= 0.3

    # A pause is a control too: the poll answers with the action.
    with _beating(worker, job_id, lease), ThreadPoolExecutor(1) as pool:
        held = pool.submit(_poll, worker, job_id, lease, 1, 10.0)
        time.sleep(0.3)
        assert user.post(f"/v1/jobs/{job_id}/pause").status_code == 200
        stored = time.monotonic()
        reply, answered = held.result()
    assert reply.json() == {"seq": 2, "action": "pause", "controls": []}
    assert answered - stored < SQLITE_RECHECK_S / 2

    # The worker's own finish ends a held poll at once, with the 409 of a lost lease.
    with _beating(worker, job_id, lease), ThreadPoolExecutor(1) as pool:
        held = pool.submit(_poll, worker, job_id, lease, 2, 10.0)
        time.sleep(0.3)
        r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                        json={"status": "paused", "epoch": 0, "step": 0})
        assert r.status_code == 204, r.text
        stored = time.monotonic()
        reply, answered = held.result()
    assert reply.status_code == 409, reply.text
    assert answered - stored < SQLITE_RECHECK_S / 2


def test_controls_long_poll_sees_a_control_posted_to_another_replica(user, worker, claimed,
                                                                     server, tmp_path,
                                                                     backend):
    """Two API processes on one database: a control stored through one reaches the poll
    held by the other. On PostgreSQL at once (LISTEN/NOTIFY: the poll never re-reads by
    itself there); on SQLite when the poll next re-reads the file."""
    job_id, lease, _, _ = claimed
    with _beating(worker, job_id, lease):  # another process and port, the same database
        replica = Server(tmp_path, database_url=server.database_url,  # and blob store
                         env={"KILN_BLOB_STORE": (server.data_dir / "blobs").as_uri()})
    try:
        with replica.client(user.headers["Authorization"].split()[1]) as other, \
                _beating(worker, job_id, lease), ThreadPoolExecutor(1) as pool:
            held = pool.submit(_poll, worker, job_id, lease, 0, 20.0)
            time.sleep(0.3)
            r = other.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze",
                                                                "path": "layers.dec"})
            stored = time.monotonic()
            assert r.status_code == 201, r.text
            reply, answered = held.result()
    finally:
        replica.stop()
    assert [c["kind"] for c in reply.json()["controls"]] == ["freeze"]
    bound = SQLITE_RECHECK_S / 2 if backend == "postgresql" else SQLITE_RECHECK_S + 1.0
    assert answered - stored < bound, answered - stored


def test_logs_are_idempotent_and_downsampled(user, worker, claimed):
    job_id, lease, _, _ = claimed
    post = lambda body: worker.post(f"/v1/worker/jobs/{job_id}/logs", json=body,
                                    headers=lease)
    for _ in range(2):  # a resumed worker reposts: rows are replaced, never doubled
        assert post({"steps": {"epoch": 1, "first_step": 1,
                               "losses": [float(i) for i in range(100)]}}).status_code == 204
        assert post({"steps": {"epoch": 2, "first_step": 101,
                               "losses": [None] + [1.0] * 99}, "step": 200, "epochs": [
            {"epoch": 1, "train_loss": 2.0, "learning_rates": {"": 0.001}},
            {"epoch": 2, "train_loss": 1.0, "frozen": ["layers.enc"], "skipped_steps": 1,
             "metrics": {"val_accuracy": 0.5}}]}).status_code == 204
    assert post({"step": 200}).status_code == 422  # neither steps nor epochs
    epochs = user.get(f"/v1/jobs/{job_id}/epochs").json()
    assert [(e["epoch"], e["train_loss"], e["frozen"]) for e in epochs] == \
        [(1, 2.0, []), (2, 1.0, ["layers.enc"])]
    full = user.get(f"/v1/jobs/{job_id}/steps").json()
    assert full["steps"] == list(range(1, 201)) and full["stride"] == 1
    assert full["losses"][:3] == [0.0, 1.0, 2.0] and full["losses"][100] is None
    small = user.get(f"/v1/jobs/{job_id}/steps", params={"max_points": 50}).json()
    assert small["stride"] == 4 and len(small["losses"]) == 50
    assert small["losses"][0] == pytest.approx(1.5)  # mean of steps 1..4
    assert small["losses"][25] == 1.0  # the skipped step is left out of its mean
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["epoch"], job["step"]) == (2, 200)


def test_a_step_batch_replaces_the_batches_from_its_first_step_on(user, worker, claimed):
    """A worker resuming from a checkpoint at step 50 posts again from step 51, in
    batches of its own: what the last holder posted after step 50 goes, once each."""
    job_id, lease, _, _ = claimed
    post = lambda first, losses: worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease,
                                             json={"steps": {"epoch": 1, "first_step": first,
                                                             "losses": losses}})
    assert post(1, [1.0] * 50).status_code == 204
    assert post(51, [2.0] * 30).status_code == 204
    assert post(81, [3.0] * 40).status_code == 204
    assert post(51, [4.0] * 45).status_code == 204  # the resumed worker
    steps = user.get(f"/v1/jobs/{job_id}/steps").json()
    assert steps["steps"] == list(range(1, 96))
    assert steps["losses"] == [1.0] * 50 + [4.0] * 45


def test_finish_stores_the_last_logs_it_brings(user, worker, claimed):
    job_id, lease, _, _ = claimed
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease, json={
        "status": "succeeded", "epoch": 2, "step": 20,
        "steps": {"epoch": 1, "first_step": 1, "losses": [float(i) for i in range(20)]},
        "epochs": [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.0}]})
    assert r.status_code == 204, r.text
    assert user.get(f"/v1/jobs/{job_id}/steps").json()["losses"] == [float(i) for i in range(20)]
    rows = user.get(f"/v1/jobs/{job_id}/epochs").json()
    assert [(e["epoch"], e["train_loss"]) for e in rows] == [(1, 2.0), (2, 1.0)]
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["epoch"], job["step"]) == ("succeeded", 2, 20)


def test_checkpoint_weights_state_and_finish(user, worker, claimed):
    job_id, lease, _, _ = claimed
    assert user.get(f"/v1/jobs/{job_id}/weights").status_code == 404
    put = lambda path, **kw: worker.put(f"/v1/worker/jobs/{job_id}/{path}", headers=lease, **kw)
    assert put("checkpoint", content=b"ckpt-1", params={"epoch": 1, "step": 28}).status_code \
        == 204
    assert put("weights", content=b"weights-1").status_code == 204
    tree = {"layers.enc.weight": {"rule": "Adam", "eta": 0.001, "frozen": True}}
    assert put("state", json={"tree": tree}).status_code == 204
    assert user.get(f"/v1/jobs/{job_id}/state").json() == tree
    assert user.get(f"/v1/jobs/{job_id}/weights").content == b"weights-1"
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": "succeeded", "epoch": 3, "step": 84})
    assert r.status_code == 204
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["finished_at"] is not None
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "thaw"})
    assert r.status_code == 409  # control on a finished job


def test_a_checkpoint_that_arrives_after_a_newer_one_changes_nothing(worker, claimed):
    """An upload retried (its first try still on its way) may land after the next one:
    the job keeps the newer checkpoint, and its next holder resumes from it."""
    job_id, lease, wid, _ = claimed
    put = lambda content, epoch, step: worker.put(
        f"/v1/worker/jobs/{job_id}/checkpoint", headers=lease, content=content,
        params={"epoch": epoch, "step": step})
    assert put(b"ckpt-new", 2, 56).status_code == 204
    assert put(b"ckpt-old", 1, 28).status_code == 204  # late: taken, and kept aside
    assert worker.post(f"/v1/worker/jobs/{job_id}/release", headers=lease).status_code == 204
    again = _drain(worker, wid, until=job_id)
    assert again["checkpoint"] == {"sha256": hashlib.sha256(b"ckpt-new").hexdigest(),
                                   "epoch": 2, "step": 56}
    assert worker.get(f"/v1/worker/blobs/{again['checkpoint']['sha256']}").content == \
        b"ckpt-new"
    _finish(worker, job_id, {"Kiln-Lease": again["lease_token"]})


def _finish_with(worker: httpx.Client, job_id: str, lease: dict, finish: dict | str | None,
                 weights: bytes) -> httpx.Response:
    """A multipart finish: ``finish`` (sent as JSON, a string as it is, None: no such
    field) and the ``weights`` file."""
    data = {} if finish is None else {
        "finish": finish if isinstance(finish, str) else json.dumps(finish)}
    return worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease, data=data,
                       files={"weights": ("w.safetensors", weights, "application/octet-stream")})


def test_the_final_weights_can_come_with_the_finish(user, worker, claimed):
    job_id, lease, _, _ = claimed
    r = _finish_with(worker, job_id, lease, {"status": "succeeded", "epoch": 3, "step": 84,
                                             "epochs": [{"epoch": 3, "train_loss": 0.5}]},
                     weights=b"final-weights")
    assert r.status_code == 204, r.text
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["step"], job["has_weights"]) == ("succeeded", 84, True)
    assert user.get(f"/v1/jobs/{job_id}/weights").content == b"final-weights"
    assert [e["train_loss"] for e in user.get(f"/v1/jobs/{job_id}/epochs").json()] == [0.5]


@pytest.mark.parametrize("finish, weights, status, loc", [
    (None, b"w", 422, ["body", "finish"]),                        # no finish field
    ("{not json", b"w", 422, ["body", "finish"]),                 # malformed JSON in it
    ({"status": "done", "epoch": 1, "step": 1}, b"w", 422, ["body", "finish", "status"]),
    ({"status": "succeeded", "epoch": 1, "step": 1}, b"w" * (MAX_UPLOAD_BYTES + 1), 413, None),
], ids=["no-finish", "bad-json", "bad-status", "weights-too-large"])
def test_a_bad_multipart_finish_is_refused_and_changes_nothing(user, worker, claimed, server,
                                                              finish, weights, status, loc):
    job_id, lease, _, _ = claimed
    blobs = sorted((server.data_dir / "blobs").rglob("*"))
    r = _finish_with(worker, job_id, lease, finish, weights)
    assert r.status_code == status, r.text
    if loc is not None:
        assert any(d["loc"][:len(loc)] == loc for d in r.json()["detail"]), r.text
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["has_weights"]) == ("running", False)
    assert sorted((server.data_dir / "blobs").rglob("*")) == blobs  # no blob, no staging


def test_a_finish_body_past_its_limit_or_not_multipart_is_refused(user, worker, claimed):
    job_id, lease, _, _ = claimed
    url = f"/v1/worker/jobs/{job_id}/finish"
    r = worker.post(url, headers=lease, json={"status": "failed", "epoch": 0, "step": 0,
                                              "error": "x" * MAX_BODY_BYTES})
    assert r.status_code == 413, r.text
    r = worker.post(url, headers={**lease, "Content-Type": "multipart/form-data; boundary=b"},
                    content=b"--b\r\nnot a part\r\n")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"], r.text
    assert user.get(f"/v1/jobs/{job_id}").json()["status"] == "running"


#: JSON whose string holds bytes that are not UTF-8 (what a client sends that encodes its
#: text wrongly), and bytes that are not text at all.
NOT_UTF8 = (b'{"status": "failed", "epoch": 0, "step": 0, "error": "caf\xe9"}', b"\xff\xfe\x00")


@pytest.mark.parametrize("body", NOT_UTF8, ids=["latin-1-string", "binary"])
@pytest.mark.parametrize("method, path", [("post", "finish"), ("post", "logs"),
                                          ("post", "heartbeat"), ("post", "controls"),
                                          ("put", "state")])
def test_a_json_body_that_is_not_utf8_is_a_4xx_and_changes_nothing(user, worker, claimed,
                                                                    method, path, body):
    job_id, lease, _, _ = claimed
    r = getattr(worker, method)(f"/v1/worker/jobs/{job_id}/{path}", content=body,
                                headers={**lease, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert "detail" in r.json()
    if path == "finish":  # parsed by the route itself: a 422 naming the body, not echoing it
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"], r.text
        assert r.json()["detail"][0]["input"] == {}
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["error"], job["step"]) == ("running", None, 0)


@pytest.mark.parametrize("method, path, kw, loc", [
    ("post", "heartbeat", {"json": {"epoch": 0, "step": 2**31}}, ["body", "step"]),
    ("post", "logs", {"json": {"steps": {"epoch": 1, "first_step": 2**31 - 1,
                                         "losses": [1.0, 1.0]}}}, ["body", "steps"]),
    ("post", "logs", {"json": {"steps": {"epoch": 1, "first_step": 1,
                                         "losses": [1.0, "NaN"]}}},
     ["body", "steps", "losses", 1]),
    ("post", "finish", {"json": {"status": "failed", "epoch": 2**63, "step": 0}},
     ["body", "epoch"]),
    ("put", "checkpoint", {"content": b"c", "params": {"epoch": 0, "step": 2**40}},
     ["query", "step"]),
    ("get", "controls", {"params": {"after": 2**64}}, ["query", "after"]),
], ids=["step", "last-step", "nan", "finish-epoch", "checkpoint-step", "after"])
def test_counts_past_what_the_database_holds_and_nan_are_422s(user, worker, claimed, method,
                                                               path, kw, loc):
    """Found by the fuzzer (test_fuzz_api.py): a step past 2**31 - 1 was a 500."""
    job_id, lease, _, _ = claimed
    r = getattr(worker, method)(f"/v1/worker/jobs/{job_id}/{path}", headers=lease, **kw)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    assert user.get(f"/v1/jobs/{job_id}").json()["status"] == "running"


def test_stale_lease_is_refused_and_the_reaper_requeues(user, worker, claimed, make_client):
    job_id, stale, _, _ = claimed
    time.sleep(LEASE_S + 1.0)  # the lease expires; the reaper (every 0.3 s) requeues the job
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "queued"
    second = make_client(worker=True)
    again = _drain(second, _register(second), until=job_id)
    assert (again["job_id"], again["attempt"]) == (job_id, 2)
    fresh = {"Kiln-Lease": again["lease_token"]}
    assert second.post(f"/v1/worker/jobs/{job_id}/logs", headers=fresh, json={
        "step": 28, "epochs": [{"epoch": 1, "train_loss": 0.5}]}).status_code == 204

    writes = [
        ("post", "heartbeat", {"json": {"epoch": 9, "step": 99}}),
        ("get", "controls", {"params": {"after": 0, "wait_s": 5}}),
        ("post", "logs", {"json": {"steps": {"epoch": 1, "first_step": 1, "losses": [9.0]},
                                   "step": 99, "epochs": [{"epoch": 1, "train_loss": 9.0}]}}),
        ("put", "checkpoint", {"content": b"stale", "params": {"epoch": 9, "step": 99}}),
        ("put", "weights", {"content": b"stale"}),
        ("put", "state", {"json": {"tree": {"stale": True}}}),
        ("post", "finish", {"json": {"status": "succeeded", "epoch": 9, "step": 99}}),
        ("post", "finish", {"data": {"finish": json.dumps({"status": "succeeded", "epoch": 9,
                                                           "step": 99})},
                            "files": {"weights": ("w", b"stale", "application/octet-stream")}}),
        ("post", "release", {}),
    ]
    state = user.get(f"/v1/jobs/{job_id}/state").json()  # the tree the job started with
    assert "stale" not in state
    for method, path, kw in writes:
        r = getattr(worker, method)(f"/v1/worker/jobs/{job_id}/{path}", headers=stale, **kw)
        assert r.status_code == 409, (path, r.text)
    job = user.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["epoch"], job["has_weights"]) == ("running", 1, False)
    assert [e["train_loss"] for e in user.get(f"/v1/jobs/{job_id}/epochs").json()] == [0.5]
    assert user.get(f"/v1/jobs/{job_id}/steps").json()["losses"] == []
    assert user.get(f"/v1/jobs/{job_id}/state").json() == state
    _finish(second, job_id, fresh)  # not left to lapse into a later test's queue


def _held_claim(worker: httpx.Client, wid: str, wait_s: float) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = worker.post("/v1/worker/claim", json={"worker_id": wid, "wait_s": wait_s})
    return r, time.monotonic() - t0


@pytest.mark.parametrize("how", ["submitted", "resumed", "released"])
def test_a_held_claim_takes_a_job_as_soon_as_it_is_queued(user, worker, dataset_id, how):
    """Well within the held poll's re-read interval: the queueing's commit rang it."""
    wid = _register(worker)
    _drain(worker, wid)
    earlier = None
    if how == "resumed":
        earlier = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
        assert user.post(f"/v1/jobs/{earlier}/pause").json()["status"] == "paused"
        _drain(worker, wid)
    elif how == "released":  # held by another worker, which lets go of it
        earlier = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
        leaving = _drain(worker, _register(worker), until=earlier)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(_held_claim, worker, wid, SQLITE_RECHECK_S + 5)
        time.sleep(0.3)  # the claim is held by now
        queued_at = time.monotonic()
        job_id = earlier or user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
        if how == "resumed":
            assert user.post(f"/v1/jobs/{earlier}/resume").status_code == 200
        elif how == "released":
            r = worker.post(f"/v1/worker/jobs/{earlier}/release",
                            headers={"Kiln-Lease": leaving["lease_token"]})
            assert r.status_code == 204, r.text
        r, _ = held.result()
    assert r.status_code == 200 and r.json()["job_id"] == job_id, r.text
    assert time.monotonic() - queued_at < SQLITE_RECHECK_S / 2
    if how == "released":
        assert r.json()["attempt"] == 2
    _finish(worker, job_id, {"Kiln-Lease": r.json()["lease_token"]})


def test_an_empty_held_claim_ends_after_its_wait_capped_by_the_server(worker):
    wid = _register(worker)
    _drain(worker, wid)
    r, took = _held_claim(worker, wid, 0.4)
    assert r.status_code == 204 and 0.4 <= took < 0.4 + CLAIM_WAIT_MAX_S, took
    r, took = _held_claim(worker, wid, 60)  # held for the server's longest, not 60 s
    assert r.status_code == 204 and CLAIM_WAIT_MAX_S <= took < CLAIM_WAIT_MAX_S + 2, took


def test_a_worker_stops_at_once_while_its_claim_is_held(tmp_path, database_url):
    """SIGTERM ends a held claim's wait in the worker: it exits in well under the 30 s the
    server would hold the claim."""
    srv = Server(tmp_path, database_url=database_url, env={"KILN_CLAIM_WAIT_MAX_S": "30"})
    try:
        with srv.client(ADMIN_TOKEN) as admin:
            token = admin.post("/v1/tokens", json={"user": "w", "worker": True}).json()["token"]
        proc = subprocess.Popen([sys.executable, "-m", "kiln_server", "worker", "--url",
                                 srv.url, "--token", token], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while '"POST /v1/worker/register HTTP/1.1" 201' not in \
                (srv.data_dir / "server.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(1.0)  # registered; its first claim is held now
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5 and proc.returncode == 0, out
        assert "worker stopped" in out and "Traceback" not in out, out
    finally:
        srv.stop()


def test_claims_that_find_nothing_stay_out_of_the_access_log(worker, server):
    wid = _register(worker)
    _drain(worker, wid)
    assert worker.post("/v1/worker/claim", json={"worker_id": wid}).status_code == 204
    log = (server.data_dir / "server.log").read_text()
    assert '"POST /v1/worker/register HTTP/1.1" 201' in log  # the access log is on
    assert '"POST /v1/worker/claim HTTP/1.1" 204' not in log


def test_tokens_reach_only_their_own_api(user, worker):
    assert worker.get("/v1/jobs").status_code == 403
    assert worker.get("/v1/datasets").status_code == 403
    r = user.post("/v1/worker/register", json={"name": "x", "device": {}})
    assert r.status_code == 403
    assert user.post("/v1/tokens", json={"user": "mallory"}).status_code == 403


def test_http_claim_race_gives_each_job_to_one_worker(user, dataset_id, make_client):
    _drain(w := make_client(worker=True), _register(w))
    ids = {user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"] for _ in range(20)}
    got: dict[str, list[str]] = {}

    def run(name: str) -> None:
        client = make_client(worker=True)
        wid = _register(client)
        while (job := _claim(client, wid)) is not None:
            got.setdefault(job["job_id"], []).append(name)

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(got) == ids
    assert all(len(v) == 1 for v in got.values())


def test_events_stream_until_the_job_finishes(user, worker, claimed):
    job_id, lease, _, _ = claimed
    worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease,
                json={"steps": {"epoch": 1, "first_step": 1, "losses": [1.0, 2.0]}})

    def finish_soon() -> None:
        time.sleep(0.5)
        worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease,
                    json={"step": 2, "epochs": [{"epoch": 1, "train_loss": 1.5}]})
        worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": "succeeded", "epoch": 1, "step": 2})

    threading.Thread(target=finish_soon).start()
    events = []
    with user.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    kinds = [k for k, _ in events]
    assert kinds[0] == "steps" and events[0][1]["losses"] == [1.0, 2.0]
    assert "epoch" in kinds
    assert events[-1] == ("status", {"status": "succeeded", "epoch": 1, "step": 2,
                                     "error": None})


def test_metrics_count_jobs_and_workers(admin, user, dataset_id):
    user.post("/v1/jobs", json=mlp_job(dataset_id))
    text = admin.get("/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(lines["kiln_queue_depth"]) >= 1
    assert float(lines['kiln_jobs{status="queued"}']) == float(lines["kiln_queue_depth"])
    assert "kiln_workers" in lines and "kiln_steps_per_second" in lines
