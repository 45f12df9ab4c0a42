"""A job's event stream is woken by what the server commits for the job, not by its timer:
on a server that re-reads the database only every 30 s, a log post, a control and a
control's result each reach an open stream within a fraction of a second; and a user's
jobs stream is woken so by a change of any of the user's jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import ADMIN_TOKEN, Server, database, mlp_job, npz_bytes, upload
from .sse_support import Event, read_events, read_stream

#: The stream's own re-read interval on this module's server: far longer than any wait
#: below, so an event can only arrive in time if the commit woke the stream.
RECHECK_S = 30.0
PROMPT_S = 1.5


@pytest.fixture(scope="module")
def slow_poll_server(tmp_path_factory: pytest.TempPathFactory, backend: str
                     ) -> Iterator[Server]:
    with database(backend) as url:
        srv = Server(tmp_path_factory.mktemp(f"events-wakeup-{backend}"), database_url=url,
                     env={"KILN_SQLITE_RECHECK_S": str(RECHECK_S),
                          "KILN_JOBS_STREAM_MAX_S": str(RECHECK_S)})
        yield srv
        srv.stop()


def _client(server: Server, *, worker: bool = False) -> httpx.Client:
    with server.client(ADMIN_TOKEN) as admin:
        r = admin.post("/v1/tokens", json={"user": f"w{time.monotonic_ns()}", "worker": worker})
    assert r.status_code == 201, r.text
    return server.client(r.json()["token"])


def test_commits_wake_an_open_stream_at_once(slow_poll_server, digits):
    user, worker = _client(slow_poll_server), _client(slow_poll_server, worker=True)
    dataset = upload(user, npz_bytes(**digits)).json()["id"]
    job_id = user.post("/v1/jobs", json=mlp_job(dataset)).json()["id"]
    wid = worker.post("/v1/worker/register", json={"name": "w", "device": {}}).json()["id"]
    claim = worker.post("/v1/worker/claim", json={"worker_id": wid}).json()
    assert claim["job_id"] == job_id
    lease = {"Kiln-Lease": claim["lease_token"]}

    arrived: list[tuple[float, Event]] = []

    def follow() -> None:
        def note(events: list[Event]) -> bool:
            arrived.append((time.monotonic(), events[-1]))
            return events[-1].kind == "control" and events[-1].data["status"] == "applied"
        read_events(user, job_id, stop=note)

    opened = time.monotonic()
    reader = threading.Thread(target=follow, daemon=True)
    reader.start()

    def after(kind: str, since: float) -> float:
        deadline = since + 10
        while time.monotonic() < deadline:
            for at, event in arrived:
                if at >= since and event.kind == kind:
                    return at - since
            time.sleep(0.01)
        pytest.fail(f"no {kind} event within 10 s")

    after("status", opened)  # the stream is open and has sent what there was
    sent = time.monotonic()
    r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
        "steps": {"epoch": 1, "first_step": 1, "losses": [1.0, 0.9]}, "step": 2,
        "epochs": [{"epoch": 1, "train_loss": 0.95}]})
    assert r.status_code == 204, r.text
    assert after("epoch", sent) < PROMPT_S

    sent = time.monotonic()
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": "layers.enc"})
    assert r.status_code == 201, r.text
    assert after("control", sent) < PROMPT_S

    sent = time.monotonic()
    r = worker.post(f"/v1/worker/jobs/{job_id}/controls", headers=lease, json={
        "results": [{"seq": 1, "status": "applied", "epoch": 2, "step": 3}]})
    assert r.status_code == 204, r.text
    reader.join(10)
    assert not reader.is_alive()
    assert arrived[-1][1].data["status"] == "applied" and arrived[-1][0] - sent < PROMPT_S
    worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                json={"status": "cancelled", "epoch": 1, "step": 2})


def test_a_change_wakes_the_owners_jobs_stream_at_once(slow_poll_server, digits):
    user = _client(slow_poll_server)
    dataset = upload(user, npz_bytes(**digits)).json()["id"]
    start = read_stream(user, "/v1/jobs/events", within_s=0.2).start_id
    arrived: list[float] = []

    def follow() -> None:
        def note(events: list[Event]) -> bool:
            arrived.append(time.monotonic())
            return True
        read_stream(user, "/v1/jobs/events", last_id=start, stop=note)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)  # the stream has read, found nothing, and waits on its bell
    sent = time.monotonic()
    assert user.post("/v1/jobs", json=mlp_job(dataset)).status_code == 201
    reader.join(10)
    assert arrived and arrived[0] - sent < PROMPT_S
