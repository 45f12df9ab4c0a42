"""End to end: a job's event stream followed by two clients while a real worker trains it,
one uninterrupted, one that drops the connection and resumes with Last-Event-ID; the
job's progress (epochs and steps completed) read while it runs; and the user's jobs
stream following a job from its submission to its end."""

from __future__ import annotations

import threading

from . import e2e_support
from .e2e_support import (
    digits_job,
    digits_split,
    epochs,
    finished,
    get_job,
    new_client,
    submit,
    upload_digits,
    wait_for,
)
from .sse_support import read_events
from .test_jobs_events import Follower

e2e_server = e2e_support.e2e_server
make_workers = e2e_support.make_workers

DATA = ("steps", "epoch")


def _same_user(server, client):
    """A client of its own with ``client``'s token, for another thread."""
    return server.client(client.headers["Authorization"].removeprefix("Bearer "))


def test_a_stream_resumed_after_a_drop_misses_and_repeats_nothing(e2e_server, make_workers):
    client, _ = new_client(e2e_server)
    job_id = submit(client, digits_job(upload_digits(client, digits_split()), epochs=5000,
                                       stop=None))
    whole: list = []

    def follow() -> None:  # uninterrupted, on a connection of its own
        with _same_user(e2e_server, client) as other:
            whole.extend(read_events(other, job_id).events)
    follower = threading.Thread(target=follow)
    follower.start()
    make_workers(e2e_server).start(1)

    # Progress while it trains: epochs completed and steps completed agree at every read,
    # mid-epoch too (the epoch in progress is epoch + 1).
    seen = []

    def mid_second_epoch():
        job = get_job(client, job_id)
        if job["steps_per_epoch"]:
            seen.append(job)
            return job["epoch"] >= 1 and job["step"] % job["steps_per_epoch"]
        return False
    wait_for("a read in the middle of an epoch after the first", mid_second_epoch, every=0.01)
    for job in seen:
        assert job["epoch"] == job["step"] // job["steps_per_epoch"], job
        assert job["epochs"] == 5000

    first = read_events(client, job_id, stop=lambda ev: sum(e.kind == "epoch" for e in ev) >= 2)
    # While the client is away, training goes on and a control comes and is applied.
    r = client.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": "layers.enc"})
    assert r.status_code == 201, r.text
    wait_for("the freeze to be applied", lambda: client.get(f"/v1/jobs/{job_id}/controls")
             .json()[0]["status"] == "applied", every=0.05)
    epochs_then = get_job(client, job_id)["epoch"]
    wait_for("two more epochs", lambda: get_job(client, job_id)["epoch"] >= epochs_then + 2)

    def cancel() -> None:
        with _same_user(e2e_server, client) as other:
            assert other.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    canceller = threading.Timer(1.0, cancel)
    canceller.start()
    rest = read_events(client, job_id, last_id=first.events[-1].id)  # until the job ends
    canceller.join()
    follower.join(30)
    assert not follower.is_alive()

    resumed = first.events + rest.events
    assert len({e.id for e in resumed}) == len(resumed)
    # Rows: exactly those of the uninterrupted stream, in the same order, none twice.
    for kind in DATA:
        got = [e.key() for e in resumed if e.kind == kind]
        assert got == [e.key() for e in whole if e.kind == kind], kind
        assert len(got) == len(set(got)) and got, kind
    # States: never the same one twice; each ends as the uninterrupted stream's ends.
    states = [e.key() for e in resumed if e.kind not in DATA]
    assert len(states) == len(set(states))
    last = lambda events, kind: [e.data for e in events if e.kind == kind][-1]
    assert last(resumed, "control") == last(whole, "control")
    assert last(resumed, "control")["status"] == "applied"
    assert last(resumed, "status") == last(whole, "status")
    assert last(resumed, "status")["status"] == "cancelled"
    steps = [s for e in resumed if e.kind == "steps"
             for s in range(e.data["first_step"], e.data["first_step"] + len(e.data["losses"]))]
    assert steps == list(range(1, len(steps) + 1))  # every step once, in order


def test_the_jobs_stream_follows_a_job_a_real_worker_trains(e2e_server, make_workers):
    client, token = new_client(e2e_server)
    dataset = upload_digits(client, digits_split())
    stream = Follower(e2e_server, token)
    try:
        # Batches of 8: 700 steps, long enough for several log posts (every 0.05 s)
        # even on a busy machine, each moving the progress the stream reports.
        job_id = submit(client, digits_job(dataset, epochs=4, stop=None, batch_size=8))
        make_workers(e2e_server).start(1)
        done = finished(client, job_id)
        last = stream.next("the job's end", job_id, status="succeeded")
    finally:
        stream.close()
    assert last == done
    sent = [e.data for e in stream.events]
    assert {job["id"] for job in sent} == {job_id}
    assert (sent[0]["status"], sent[0]["worker"], sent[0]["latest"]) == ("queued", None, None)
    running = [job for job in sent if job["status"] == "running"]
    assert running and {job["worker"]["name"] for job in running} == \
        {w["name"] for w in client.get("/v1/workers").json()["data"]
         if w["id"] == running[0]["worker"]["id"]}
    # Progress, as it came: steps, epochs and the latest epoch's figures only move on
    # (a heartbeat may report an epoch completed before its row is posted); the last
    # figures are the last epoch row's.
    for field in ("step", "epoch"):
        seen = [job[field] for job in sent]
        assert seen == sorted(seen) and len(set(seen)) > 2, field
    latest = [(job["latest"] or {}).get("epoch", 0) for job in sent]
    assert latest == sorted(latest) and len(set(latest)) > 2
    assert all(e <= job["epoch"] for e, job in zip(latest, sent, strict=True))
    rows = epochs(client, job_id)
    assert last["latest"] == {k: rows[-1][k] for k in ("epoch", "train_loss", "val_loss",
                                                       "metrics")}
    assert (last["epoch"], last["worker"]) == (4, None)
