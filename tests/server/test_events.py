"""A job's event stream, resumed: every event has an id, and a client that reconnects with
the last one it saw gets every later event once, including a control that was pending
when it left and was resolved while it was away. The worker API is driven by hand here
(so that the control stays pending for as long as the test says); test_e2e_events.py
does the same against a real worker process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from .conftest import EVENTS_KEEPALIVE_S, mlp_job
from .sse_support import Event, read_events
from .test_worker_api import _beating, claimed  # noqa: F401  (a fixture)

#: Events that carry rows (each sent once), unlike those that carry a state (sent when
#: it changes: a client away meanwhile gets the latest).
DATA = ("steps", "epoch")


def _latest_states(events: list[Event]) -> set[tuple[str, str]]:
    """The last event of each control and of the job's status among ``events``."""
    last = {(e.kind, e.data.get("seq")): e.key() for e in events if e.kind not in DATA}
    return set(last.values())


def _at_least(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(events) >= n


def _log(worker, job_id, lease, first, n, *, epochs=()):
    r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
        "steps": {"epoch": 1, "first_step": first, "losses": [float(first + i) for i in range(n)]},
        "step": first + n - 1, "epochs": [{"epoch": e, "train_loss": 1.0 / e} for e in epochs]})
    assert r.status_code == 204, r.text


def test_a_resumed_stream_sends_every_later_event_once(user, worker, claimed):  # noqa: F811
    job_id, lease, _, _ = claimed
    _log(worker, job_id, lease, 1, 5)
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": "layers.enc"})
    assert r.status_code == 201, r.text

    with _beating(worker, job_id, lease):
        first = read_events(user, job_id, stop=lambda ev: ev[-1].kind == "status")
        assert first.retry is not None and int(first.retry) > 0
        assert [(e.kind, e.data.get("status")) for e in first.events] == \
            [("steps", None), ("control", "pending"), ("status", "running")]
        assert len({e.id for e in first.events}) == 3  # an id of its own for each

        # While the client is away: the control is applied, more steps and an epoch end.
        r = worker.post(f"/v1/worker/jobs/{job_id}/controls", headers=lease, json={
            "results": [{"seq": 1, "status": "applied", "epoch": 1, "step": 6}]})
        assert r.status_code == 204, r.text
        _log(worker, job_id, lease, 6, 5, epochs=[1])
        resumed = read_events(user, job_id, last_id=first.events[-1].id,
                              stop=lambda ev: ev[-1].kind == "status")
        assert [(e.kind, e.data.get("status")) for e in resumed.events] == \
            [("steps", None), ("epoch", None), ("control", "applied"), ("status", "running")]
        assert resumed.events[0].data["first_step"] == 6
        assert resumed.events[2].data["seq"] == 1 and resumed.events[3].data["epoch"] == 1

        # Resumed from any event: the rows sent after it, each control and the status as
        # they are now if they changed after it, and nothing it had sent before.
        every = first.events + resumed.events
        for i, seen in enumerate(every):
            after = every[i + 1:]
            want = [e.key() for e in after if e.kind in DATA]
            states = _latest_states(after)
            n = len(want) + len(states)
            again = read_events(user, job_id, last_id=seen.id, stop=_at_least(n),
                                within_s=2.0 if n else 1.0)
            got = [e.key() for e in again.events]
            assert [k for k in got if k[0] in DATA] == want, i
            assert {k for k in got if k[0] not in DATA} == states, i
            assert not {e.key() for e in every[:i + 1]} & set(got), i

        # A worker resuming from a checkpoint at step 5 posts its own batch from step 6
        # on, replacing the one stored: a new row, which a resumed stream gets.
        _log(worker, job_id, lease, 6, 3)
        replaced = read_events(user, job_id, last_id=resumed.events[-1].id, stop=_at_least(1),
                               within_s=5.0)
        assert [(e.kind, e.data["first_step"], len(e.data["losses"]))
                for e in replaced.events] == [("steps", 6, 3)]

    r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                    json={"status": "succeeded", "epoch": 1, "step": 10})
    assert r.status_code == 204, r.text
    # The id in the query (a browser's first request) works as the header does; once the
    # job has finished, the stream ends after what is left.
    rest = read_events(user, job_id, params={"last_event_id": replaced.events[-1].id})
    assert [(e.kind, e.data) for e in rest.events] == \
        [("status", {"status": "succeeded", "epoch": 1, "step": 10, "error": None})]
    assert read_events(user, job_id, last_id=rest.events[-1].id).events == []
    # From the start: what is stored now, once.
    whole = read_events(user, job_id).events
    assert [(e.kind, e.data.get("first_step"), e.data.get("status")) for e in whole] == [
        ("steps", 1, None), ("steps", 6, None), ("epoch", None, None),
        ("control", None, "applied"), ("status", None, "succeeded")]


def test_an_idle_stream_sends_keep_alive_comments(user, dataset_id):
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    stream = read_events(user, job_id, stop=lambda ev: True)
    assert [e.kind for e in stream.events] == ["status"]  # queued
    t0 = time.monotonic()
    with user.stream("GET", f"/v1/jobs/{job_id}/events",
                     headers={"Last-Event-ID": stream.events[0].id}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("retry: ")
        assert next(lines) == ""
        assert next(lines) == ": ping"  # nothing else happens to a queued job
    assert EVENTS_KEEPALIVE_S <= time.monotonic() - t0 < EVENTS_KEEPALIVE_S + 2


@pytest.mark.parametrize("where", ["header", "query"])
@pytest.mark.parametrize("bad", ["nonsense", "MTpkZWFkYmVlZjoxOjI6Mzo0OnJ1bm5pbmc6MQ", "", "%%"],
                         ids=["garbage", "forged", "another-jobs", "not-base64"])
def test_a_malformed_last_event_id_is_a_422_naming_it(user, dataset_id, where, bad):
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    if bad == "":  # an id of another job
        other = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
        bad = read_events(user, other, stop=lambda ev: True).events[0].id
    kw = {"last_id": bad} if where == "header" else {"params": {"last_event_id": bad}}
    r = read_events(user, job_id, **kw)
    assert r.status_code == 422, r.body
    loc = ["header", "last-event-id"] if where == "header" else ["query", "last_event_id"]
    assert json.loads(r.body)["detail"][0]["loc"] == loc


def test_the_header_wins_over_the_query(user, dataset_id):
    """A browser's EventSource reconnects to the URL it was given (with the query's id)
    and sends the newer id in the header."""
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    seen = read_events(user, job_id, stop=lambda ev: True).events[0]
    r = read_events(user, job_id, last_id=seen.id, params={"last_event_id": "nonsense"},
                    within_s=1.0)
    assert r.status_code == 200 and r.events == []
