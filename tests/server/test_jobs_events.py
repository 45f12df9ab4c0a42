"""A user's jobs stream (GET /v1/jobs/events): every job of the user as it is created and
after every change, in the order of the changes, resumable with Last-Event-ID and
startable at a time (``since``). The worker API is driven by hand, so that each change
happens when the test says; test_e2e_events.py follows a real worker's job."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from .conftest import EVENTS_KEEPALIVE_S, JOBS_STREAM_MAX_S, Server, mlp_job
from .sse_support import Event, read_events, read_stream
from .test_worker_api import _drain, _finish, _register

PATH = "/v1/jobs/events"
#: Longer than any change takes to reach an open stream on the test server.
WAIT_S = 10.0


class Follower:
    """A user's jobs stream followed on a thread of its own, as a browser would: from
    now (``since``: nothing done after this returns is missed), across the stream's ends
    (every JOBS_STREAM_MAX_S on the test server), reconnecting with the last id it has,
    the start id until an event came; each event noted as it arrives."""

    def __init__(self, server: Server, token: str):
        self.client = server.client(token)
        self.events: list[Event] = []
        self.connections = 0
        self._params = {"since": datetime.now(UTC).isoformat()}
        self._last: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            got = read_stream(self.client, PATH, last_id=self._last,
                              params=None if self._last else self._params,
                              stop=self._note, within_s=JOBS_STREAM_MAX_S + 5)
            assert got.status_code == 200, got.body
            self._last = got.events[-1].id if got.events else self._last or got.start_id
            self.connections += 1

    def _note(self, events: list[Event]) -> bool:
        self.events.append(events[-1])
        return self._stop.is_set()

    def wait_for(self, what: str, probe) -> None:
        deadline = time.monotonic() + WAIT_S
        while not probe():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; events: "
                            f"{[(e.data['id'][:6], e.data['status']) for e in self.events]}")
            time.sleep(0.02)

    def next(self, what: str, job_id: str, **fields) -> dict:
        """Wait for an event of ``job_id`` whose fields hold ``fields``; the job it sent."""
        def found() -> dict | None:
            return next((e.data for e in self.events if e.data["id"] == job_id and all(
                e.data[k] == v for k, v in fields.items())), None)
        self.wait_for(what, found)
        return found()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(JOBS_STREAM_MAX_S + 10)
        self.client.close()


def _token(client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def follow(server):
    made: list[Follower] = []

    def start(client) -> Follower:
        made.append(Follower(server, _token(client)))
        return made[-1]
    yield start
    for f in made:
        f.close()


def _heartbeat(worker, job_id, lease, epoch, step):
    return worker.post(f"/v1/worker/jobs/{job_id}/heartbeat", headers=lease,
                       json={"epoch": epoch, "step": step})


def test_every_change_of_a_job_comes_as_it_happens(user, other_user, worker, dataset_id,
                                                   follow):
    stream = follow(user)
    others = follow(other_user)
    wid = _register(worker)
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id, name="watched")).json()["id"]
    job = stream.next("the new job", job_id, status="queued")
    assert (job["name"], job["epoch"], job["latest"], job["worker"]) == \
        ("watched", 0, None, None)

    claim = _drain(worker, wid, until=job_id)
    lease = {"Kiln-Lease": claim["lease_token"]}
    job = stream.next("the claim", job_id, status="running")
    assert job["worker"]["id"] == wid and job["worker"]["name"] == "t"

    r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
        "steps": {"epoch": 1, "first_step": 1, "losses": [2.0] * 28}, "step": 28,
        "epochs": [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.5,
                    "metrics": {"val_accuracy": 0.25}}]})
    assert r.status_code == 204, r.text
    job = stream.next("the first epoch", job_id, epoch=1)
    assert job["step"] == 28
    assert job["latest"] == {"epoch": 1, "train_loss": 2.0, "val_loss": 1.5,
                             "metrics": {"val_accuracy": 0.25}}

    # A heartbeat that only renews the lease is no news; one that brings progress is.
    seen = len(stream.events)
    assert _heartbeat(worker, job_id, lease, 1, 28).status_code == 200
    assert _heartbeat(worker, job_id, lease, 1, 30).status_code == 200
    stream.next("the heartbeat's progress", job_id, step=30)
    assert [e.data["step"] for e in stream.events[seen:]] == [30]

    assert user.post(f"/v1/jobs/{job_id}/pause").status_code == 200
    stream.next("the pause asked for", job_id, requested="pause")
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": "paused", "epoch": 1, "step": 30})
    assert r.status_code == 204, r.text
    job = stream.next("the pause", job_id, status="paused")
    assert (job["requested"], job["worker"]) == (None, None)
    assert user.post(f"/v1/jobs/{job_id}/resume").status_code == 200
    stream.next("the resume", job_id, status="queued")
    stream.wait_for("the stream to end and be resumed", lambda: stream.connections >= 1)
    assert user.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    stream.next("the end", job_id, status="cancelled")

    statuses = [e.data["status"] for e in stream.events if e.data["id"] == job_id]
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s] == \
        ["queued", "running", "paused", "queued", "cancelled"]
    assert {e.data["id"] for e in stream.events} == {job_id}
    assert others.events == []  # another user's stream says nothing of it


def test_a_lapsed_lease_and_a_job_finished_come_too(user, worker, dataset_id, follow):
    stream = follow(user)
    wid = _register(worker)
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    _drain(worker, wid, until=job_id)  # then left to lapse: the reaper requeues it
    stream.next("the claim", job_id, status="running")
    job = stream.next("the job requeued by the reaper", job_id, status="queued", attempt=1)
    assert job["worker"] is None
    claim = _drain(worker, wid, until=job_id)
    lease = {"Kiln-Lease": claim["lease_token"]}
    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease, json={
        "status": "succeeded", "epoch": 3, "step": 84,
        "epochs": [{"epoch": e, "train_loss": 1.0 / e} for e in (1, 2, 3)]})
    assert r.status_code == 204, r.text
    job = stream.next("the end", job_id, status="succeeded")
    assert (job["attempt"], job["latest"]["epoch"], job["latest"]["train_loss"]) == \
        (2, 3, pytest.approx(1 / 3))


def _changes(user, worker, dataset_id, n_jobs: int = 3, stream: Follower | None = None
             ) -> list[str]:
    """Jobs created, claimed, given two epochs and cancelled, interleaved; their ids.
    With ``stream``, each change is seen there before the next is made."""
    def seen(job_id: str, **fields) -> None:
        if stream is not None:
            stream.next(f"{fields} of {job_id}", job_id, **fields)

    wid = _register(worker)
    ids = []
    for _ in range(n_jobs):
        ids.append(user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"])
        seen(ids[-1], status="queued")
    leases = {}
    for job_id in ids:
        leases[job_id] = {"Kiln-Lease": _drain(worker, wid, until=job_id)["lease_token"]}
        seen(job_id, status="running")
    for epoch in (1, 2):
        for job_id in ids:
            r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=leases[job_id], json={
                "step": 28 * epoch, "epochs": [{"epoch": epoch, "train_loss": 1.0 / epoch}]})
            assert r.status_code == 204, r.text
            seen(job_id, epoch=epoch)
    for job_id in ids:
        _finish(worker, job_id, leases[job_id])
        seen(job_id, status="cancelled")
    return ids


def _as_now(events: list[Event]) -> list[tuple[str, str]]:
    """Each job once, as its last event says, in the order of those last events: what a
    stream resumed before ``events`` must send."""
    last = {e.data["id"]: i for i, e in enumerate(events)}
    return [(events[i].data["id"], json.dumps(events[i].data, sort_keys=True))
            for i in sorted(last.values())]


def test_a_stream_resumed_from_any_event_sends_every_later_change_once(user, worker,
                                                                       dataset_id, follow):
    started = datetime.now(UTC)
    stream = follow(user)
    ids = _changes(user, worker, dataset_id, stream=stream)
    events = stream.events
    assert len({e.id for e in events}) == len(events)
    # Each job's path, in order and whole: queued, running, two epochs, cancelled.
    for job_id in ids:
        mine = [(e.data["status"], e.data["epoch"]) for e in events if e.data["id"] == job_id]
        assert [s for i, s in enumerate(mine) if i == 0 or mine[i - 1] != s] == \
            [("queued", 0), ("running", 0), ("running", 1), ("running", 2), ("cancelled", 2)]
    for i, seen in enumerate(events):
        want = _as_now(events[i + 1:])
        n = len(want)
        got = read_stream(user, PATH, last_id=seen.id, stop=lambda ev: len(ev) >= n,
                          within_s=0.5 if not want else WAIT_S)
        assert _as_now(got.events) == want and len(got.events) == len(want), i
    # From the time the first stream began: every job, once, as it is now.
    since = read_stream(user, PATH, params={"since": started.isoformat()},
                        stop=lambda ev: len(ev) >= len(ids), within_s=WAIT_S)
    assert _as_now(since.events) == _as_now(events)
    assert [e.id for e in since.events] == [e.id for e in events if e.id in
                                             {s.id for s in since.events}]


def test_since_starts_the_stream_at_a_time(user, worker, dataset_id):
    before = datetime.now(UTC) - timedelta(seconds=1)
    [job_id] = _changes(user, worker, dataset_id, n_jobs=1)
    for form in (before.isoformat(), before.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 before.astimezone().isoformat()):
        got = read_stream(user, PATH, params={"since": form}, stop=lambda ev: True,
                          within_s=WAIT_S)
        assert [(e.data["id"], e.data["status"]) for e in got.events] == \
            [(job_id, "cancelled")], form
    later = read_stream(user, PATH, params={"since": datetime.now(UTC).isoformat()},
                        within_s=1.0)
    assert later.events == [] and later.start_id
    # With no since: what changed after the stream opened; nothing before.
    fresh = read_stream(user, PATH, within_s=1.0)
    assert fresh.events == [] and fresh.retry is not None


def test_the_start_id_resumes_from_where_the_stream_began(user, dataset_id):
    first = read_stream(user, PATH, within_s=0.5)
    assert first.events == [] and first.start_id
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    again = read_stream(user, PATH, last_id=first.start_id, stop=lambda ev: True,
                        within_s=WAIT_S)
    assert [e.data["id"] for e in again.events] == [job_id]


def test_an_idle_stream_pings_and_ends_after_its_time(user):
    t0 = time.monotonic()
    with user.stream("GET", PATH) as r:
        lines = list(r.iter_lines())  # until the server ends it
    took = time.monotonic() - t0
    assert lines[0].startswith("retry: ") and lines[1].startswith("id: ")
    assert ": ping" in lines
    assert JOBS_STREAM_MAX_S <= took < JOBS_STREAM_MAX_S + EVENTS_KEEPALIVE_S + 2


@pytest.mark.parametrize("where", ["header", "query"])
@pytest.mark.parametrize("bad", ["nonsense", "ajF8bm90LWEtdGltZXw", "%%", "a-job-stream-id"],
                         ids=["garbage", "forged", "not-base64", "a-job-streams-id"])
def test_a_malformed_last_event_id_is_a_422_naming_it(user, dataset_id, where, bad):
    if bad == "a-job-stream-id":  # an id of one job's stream is not one of this stream
        job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
        bad = read_events(user, job_id, stop=lambda ev: True).events[0].id
    kw = {"last_id": bad} if where == "header" else {"params": {"last_event_id": bad}}
    r = read_stream(user, PATH, **kw)
    assert r.status_code == 422, r.body
    loc = ["header", "last-event-id"] if where == "header" else ["query", "last_event_id"]
    assert json.loads(r.body)["detail"][0]["loc"] == loc


@pytest.mark.parametrize("bad", ["yesterday", "2026-12-03T10:00:00", "2026-13-03T10:00:00Z",
                                 "0001-01-01T00:00:00+01:00"])
def test_a_malformed_since_is_a_422_naming_it(user, bad):
    r = read_stream(user, PATH, params={"since": bad})
    assert r.status_code == 422, r.body
    assert json.loads(r.body)["detail"][0]["loc"] == ["query", "since"]


def test_the_last_event_id_wins_over_since_and_the_query(user, dataset_id):
    start = read_stream(user, PATH, within_s=0.5).start_id
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    far = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = read_stream(user, PATH, last_id=start, params={"since": far, "last_event_id": "x"},
                    stop=lambda ev: True, within_s=WAIT_S)
    assert r.status_code == 200 and [e.data["id"] for e in r.events] == [job_id]


def test_the_stream_needs_a_users_token(server, worker):
    assert read_stream(worker, PATH).status_code == 403
    with server.client("kiln_not_a_token") as nobody:
        assert read_stream(nobody, PATH).status_code == 401
