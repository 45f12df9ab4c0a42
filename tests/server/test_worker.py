"""The worker against a scripted server (httpx.MockTransport): controls applied or
rejected with their step, controls brought by the long-poll alone, logs and checkpoints
on the server's cadence, a lost lease abandoned without another write, a resume that
replays controls at their step and lands bit for bit on the uninterrupted run, and an
idle worker whose claims the server holds, or that claims less and less often where
it does not."""

from __future__ import annotations

import email.policy
import hashlib
import io
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from typing import Any

import httpx
import numpy as np
import pytest
from kiln_engine.serialise import weights_from_bytes
from kiln_server import worker as worker_main
from kiln_server.schemas import JobCreate
from kiln_server.worker import sender as sender_module
from kiln_server.worker.client import LEASE_HEADER, WorkerClient
from kiln_server.worker.datasets import LoadedDatasets
from kiln_server.worker.run import JobRun

LEASE = "lease-1"
STEPS_PER_EPOCH, EPOCHS = 8, 3


def _npz() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.standard_normal((64, 4)).astype(np.float32),
             y=rng.integers(0, 3, 64).astype(np.int64))
    return buf.getvalue()


DATA = _npz()
DATA_SHA = hashlib.sha256(DATA).hexdigest()
SPEC = JobCreate(
    model={"type": "Chain", "layers": {
        "enc": {"type": "Dense", "in": 4, "out": 8, "activation": "relu"},
        "dec": {"type": "Dense", "in": 8, "out": 3}}},
    optimiser={"rule": "Adam", "eta": 0.01}, loss="logitcrossentropy",
    train={"dataset": "d"}, batch_size=64 // STEPS_PER_EPOCH, epochs=EPOCHS, seed=5,
).model_dump(mode="json")


def _control(seq: int, kind: str, path: str, hyper: dict | None = None, *,
             applied_step: int | None = None) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "path": path, "hyper": hyper or {},
            "status": "pending" if applied_step is None else "applied",
            "applied_epoch": None, "applied_step": applied_step}


class FakeServer:
    """The worker API, scripted: records every request; ``lose_after`` (the last part of a
    path, or "epochs") says after which request the lease is gone (every lease-carrying
    request is then a 409). The controls long-poll answers ``poll(after)`` when that gives
    a reply; otherwise it waits, as the real one does with nothing new, until the job is
    finished or lost (409) or its time is up."""

    def __init__(self, lose_after: str | None = None,
                 poll: Callable[[int], dict | None] | None = None) -> None:
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.blobs = {DATA_SHA: DATA}
        self.checkpoints: dict[int, str] = {}  # epoch -> sha
        self.weights: bytes | None = None
        self.finish_weights: bytes | None = None  # the weights the finish brought
        self.results: list[dict] = []
        self.epochs: list[dict] = []
        self.steps: dict[int, float | None] = {}
        self.finish: dict | None = None
        self.lose_after, self.lost = lose_after, False
        self.poll = poll
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/controls"):
            response = self._long_poll(int(request.url.params["after"]),  # waits: unlocked
                                       float(request.url.params["wait_s"]))
            with self.lock:
                self.requests.append((request.method, request.url.path, response.status_code))
            return response
        with self.lock:
            response = self._answer(request)
            self.requests.append((request.method, request.url.path, response.status_code))
            return response

    def _long_poll(self, after: int, wait_s: float) -> httpx.Response:
        reply = self.poll(after) if self.poll else None
        if reply is not None:
            return httpx.Response(200, json=reply)
        deadline = time.monotonic() + wait_s
        while self.finish is None and not self.lost and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.finish is not None or self.lost:
            return httpx.Response(409, json={"detail": "the lease is no longer held"})
        return httpx.Response(200, json={"seq": after, "action": "continue", "controls": []})

    def _store(self, steps: dict | None, epochs: list[dict]) -> None:
        for i, v in enumerate(steps["losses"] if steps else []):
            self.steps[steps["first_step"] + i] = v
        self.epochs += epochs

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1/worker")
        if path.startswith("/blobs/"):
            return httpx.Response(200, content=self.blobs[path.rsplit("/", 1)[1]])
        assert request.headers[LEASE_HEADER] == LEASE
        if self.lost:
            return httpx.Response(409, json={"detail": "the lease is no longer held"})
        kind = path.rsplit("/", 1)[1]
        parts = _multipart(request)
        if "weights" in parts:  # a finish that brings the final weights
            self.weights = self.finish_weights = parts["weights"]
        body = json.loads(parts.get("finish", request.content)) \
            if kind not in ("checkpoint", "weights", "release") else None
        if kind == "heartbeat":
            return httpx.Response(200, json={"lease_expires_at": _later(), "action": "continue",
                                             "controls": []})
        if kind == "finish":  # it may bring the last logs
            self.finish = {k: body[k] for k in ("status", "epoch", "step", "error")}
            self._store(body["steps"], body["epochs"])
        elif kind == "logs":
            self._store(body["steps"], body["epochs"])
        elif kind == "controls":
            self.results += body["results"]
        elif kind == "checkpoint":
            sha = hashlib.sha256(request.content).hexdigest()
            self.blobs[sha] = request.content
            self.checkpoints[int(request.url.params["epoch"])] = sha
        elif kind == "weights":
            self.weights = request.content
        carries_epochs = kind == "logs" and body["epochs"]
        if self.lose_after == kind or (self.lose_after == "epochs" and carries_epochs):
            self.lost = True
        return httpx.Response(204)


def _multipart(request: httpx.Request) -> dict[str, bytes]:
    """The named parts of a multipart body ({} for any other)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return {}
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + request.content)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def _later() -> str:
    return (datetime.now(UTC) + timedelta(seconds=30)).isoformat()


def _run(server: FakeServer, tmp_path, *, controls=(), checkpoint: int | None = None,
         epochs: int = EPOCHS, log_s: float = 0.0, checkpoint_s: float = 0.0,
         datasets: LoadedDatasets | None = None,
         shutdown: threading.Event | None = None) -> str:
    """Run the job against ``server``; by default logs go out at every step and a
    checkpoint at every epoch's end."""
    claim = {"job_id": "j1", "lease_token": LEASE, "lease_expires_at": _later(),
             "heartbeat_interval_s": 0.05, "log_interval_s": log_s,
             "checkpoint_interval_s": checkpoint_s, "attempt": 1,
             "spec": {**SPEC, "epochs": epochs},
             "datasets": {"d": {"sha256": DATA_SHA}}, "controls": list(controls),
             "checkpoint": None if checkpoint is None else {
                 "sha256": server.checkpoints[checkpoint], "epoch": checkpoint,
                 "step": checkpoint * STEPS_PER_EPOCH}}
    client = WorkerClient("http://kiln.test", "token", transport=httpx.MockTransport(server),
                          retry_for_s=1.0)
    try:
        return JobRun(client, claim, device="cpu", cache=tmp_path / "cache",
                      shutdown=shutdown or threading.Event(), datasets=datasets).run()
    finally:
        client.close()


def test_controls_are_applied_at_a_step_or_rejected_with_the_reason(tmp_path):
    server = FakeServer()
    controls = [_control(1, "adjust", "layers.enc", {"eta": 0.5}),
                _control(2, "freeze", "layers.nope"),
                _control(3, "adjust", "layers.dec", {"lr": 0.1})]
    assert _run(server, tmp_path, controls=controls) == "succeeded"
    by_seq = {r["seq"]: r for r in server.results}
    assert by_seq[1] == {"seq": 1, "status": "applied", "epoch": 1, "step": 1}
    assert by_seq[2]["status"] == "rejected" and "layers.nope" in by_seq[2]["reason"]
    assert by_seq[3]["status"] == "rejected" and "lr" in by_seq[3]["reason"]
    assert [e["epoch"] for e in server.epochs] == [1, 2, 3]
    assert all(e["learning_rates"] == {"layers.enc": 0.5, "layers.dec": 0.01}
               for e in server.epochs)
    assert sorted(server.steps) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert server.finish == {"status": "succeeded", "epoch": EPOCHS,
                             "step": EPOCHS * STEPS_PER_EPOCH, "error": None}
    # the final weights came with the finish, the job's last request
    writes = [p.rsplit("/", 1)[1] for m, p, _ in server.requests if "/jobs/" in p and m != "GET"]
    assert writes[-1] == "finish"
    assert set(weights_from_bytes(server.finish_weights)) == {
        "layers.enc.weight", "layers.enc.bias", "layers.dec.weight", "layers.dec.bias"}


def test_a_kept_dataset_serves_the_next_job_without_loading_it_again(tmp_path, monkeypatch):
    """The second job on the same data reads neither the server nor the blob cache, and
    trains to the same weights as the first (the kept arrays are the same data)."""
    kept = LoadedDatasets(1 << 20)
    first, second = FakeServer(), FakeServer()
    assert _run(first, tmp_path, datasets=kept) == "succeeded"
    assert DATA_SHA in kept
    (blob,) = (tmp_path / "cache").rglob(DATA_SHA)
    blob.unlink()  # a second load would have to fetch it again
    assert _run(second, tmp_path, datasets=kept) == "succeeded"
    assert not [p for _, p, _ in second.requests if "/blobs/" in p]
    assert not list((tmp_path / "cache").rglob(DATA_SHA))
    assert second.weights == first.weights


def _writes(server: FakeServer) -> Counter:
    return Counter(p.rsplit("/", 1)[1] for m, p, _ in server.requests
                   if "/jobs/" in p and m != "GET")


def test_logs_and_checkpoints_follow_the_servers_cadence(tmp_path, monkeypatch):
    """Given long log and checkpoint intervals, a job of short epochs sends its steps and
    epoch rows with its finish, in one request, and no checkpoint (it would be cheaper to
    train again); yet every step and epoch arrives, once."""
    server = FakeServer()
    assert _run(server, tmp_path, log_s=60.0, checkpoint_s=60.0) == "succeeded"
    writes = _writes(server)
    assert (writes["logs"], writes["checkpoint"]) == (0, 0), writes
    assert sorted(server.steps) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert [e["epoch"] for e in server.epochs] == list(range(1, EPOCHS + 1))
    assert server.weights is not None  # the final weights, whatever the cadence

    # The defaults of _run: a post per step, a checkpoint per epoch. A sender that falls
    # behind skips a checkpoint that a newer one supersedes (the next test); here none
    # may be skipped, however slow the machine.
    monkeypatch.setattr(sender_module, "SUPERSEDED_EVERY_S", 0.0)
    every_step = FakeServer()
    assert _run(every_step, tmp_path) == "succeeded"
    writes = _writes(every_step)
    assert (writes["logs"], writes["checkpoint"]) == (EPOCHS * STEPS_PER_EPOCH, EPOCHS), writes
    # The state tree goes up when it changes (here: never after the start), not with
    # every checkpoint.
    assert writes["state"] == 1, writes


def test_a_lagging_sender_skips_superseded_checkpoints():
    """Behind training, the sender posts every log but only the newest of checkpoints
    queued within SUPERSEDED_EVERY_S of the last one posted, in the order queued."""
    sender = sender_module.Sender(threading.Event())
    gate, posted = threading.Event(), []
    sender.put(lambda: (gate.wait(5), posted.append("log0")))  # holds the sender back
    sender.put(lambda: posted.append("ckpt0"), key="checkpoint")
    sender.put(lambda: posted.append("ckpt1"), key="checkpoint")
    sender.put(lambda: posted.append("log1"))
    sender.put(lambda: posted.append("ckpt2"), key="checkpoint")
    sender.start()
    gate.set()
    assert sender.drain()
    sender.close()
    # ckpt0: none of its kind posted yet; ckpt1: superseded by ckpt2, ckpt0 just posted.
    assert posted == ["log0", "ckpt0", "log1", "ckpt2"]


def test_the_controls_long_poll_delivers_without_heartbeats(tmp_path):
    """The heartbeats bring no control. The long-poll brings an adjust at once, and a
    cancel once the adjust's result and an epoch row are in: the worker applies the one
    at a step and stops at the other, long before the job's 400 epochs are done."""
    def poll(after: int) -> dict | None:
        if after == 0:
            return {"seq": 1, "action": "continue",
                    "controls": [_control(1, "adjust", "layers.enc", {"eta": 0.5})]}
        if after == 1:
            deadline = time.monotonic() + 30
            while not (server.results and server.epochs) and time.monotonic() < deadline:
                time.sleep(0.01)
            return {"seq": 2, "action": "cancel", "controls": []}
        return None

    server = FakeServer(poll=poll)
    assert _run(server, tmp_path, epochs=400) == "cancelled"
    (result,) = server.results
    assert (result["seq"], result["status"]) == (1, "applied")
    assert server.finish["status"] == "cancelled"
    assert server.finish["step"] < 400 * STEPS_PER_EPOCH
    assert server.epochs[-1]["learning_rates"] == {"layers.enc": 0.5, "layers.dec": 0.01}


def test_a_lost_lease_is_abandoned_without_another_write(tmp_path):
    server = FakeServer(lose_after="epochs")
    assert _run(server, tmp_path) == "abandoned"
    first_409 = next(i for i, r in enumerate(server.requests) if r[2] == 409)
    after = server.requests[first_409:]
    # At most the requests in flight on the other threads (a heartbeat, the controls
    # long-poll) meet the refusal too; nothing is attempted after that, and the job is
    # never finished by this worker.
    assert len(after) <= 3 and all(status == 409 for _, _, status in after), after
    assert server.finish is None
    assert [e["epoch"] for e in server.epochs] == [1]


def test_a_stopping_worker_checkpoints_then_releases_its_job(tmp_path):
    """Shutdown mid-job: the steps so far, then a checkpoint where training stopped, then
    the release, the job's last request; no finish."""
    server, shutdown = FakeServer(), threading.Event()

    def stop_after_an_epoch() -> None:
        deadline = time.monotonic() + 30
        while not server.epochs and time.monotonic() < deadline:
            time.sleep(0.01)
        shutdown.set()

    threading.Thread(target=stop_after_an_epoch, daemon=True).start()
    assert _run(server, tmp_path, epochs=400, checkpoint_s=60.0, shutdown=shutdown) == \
        "released"
    writes = [(p.rsplit("/", 1)[1], status) for m, p, status in server.requests
              if "/jobs/" in p and m != "GET"]
    assert writes[-1] == ("release", 204)
    assert "finish" not in dict(writes) and server.finish is None
    ((epoch, sha),) = server.checkpoints.items()  # only the one taken at shutdown
    assert 1 <= epoch < 400 and sha in server.blobs
    # Every step up to where it stopped went out before the checkpoint.
    last = max(server.steps)
    assert sorted(server.steps) == list(range(1, last + 1)) and last >= STEPS_PER_EPOCH
    assert writes.index(("checkpoint", 204)) > max(i for i, (k, _) in enumerate(writes)
                                                   if k == "logs")


@pytest.mark.parametrize("at_step", [STEPS_PER_EPOCH + 5, 2 * STEPS_PER_EPOCH + 1])
def test_resume_replays_controls_and_equals_the_uninterrupted_run(tmp_path, at_step):
    controls = [_control(1, "freeze", "layers.enc", applied_step=at_step),
                _control(2, "adjust", "", {"eta": 0.003}, applied_step=at_step + 2)]
    whole = FakeServer()
    assert _run(whole, tmp_path, controls=controls) == "succeeded"
    expected = weights_from_bytes(whole.weights)

    resumed = FakeServer()
    resumed.blobs.update(whole.blobs)
    resumed.checkpoints = dict(whole.checkpoints)
    assert _run(resumed, tmp_path, controls=controls, checkpoint=1) == "succeeded"
    got = weights_from_bytes(resumed.weights)
    assert all(np.array_equal(got[k], v) for k, v in expected.items())
    assert min(resumed.steps) == STEPS_PER_EPOCH + 1  # it went on from the checkpoint
    assert [e["epoch"] for e in resumed.epochs] == [2, 3]
    assert resumed.results == []  # replays were reported by the worker that applied them

    plain = FakeServer()
    plain.blobs.update(whole.blobs)
    plain.checkpoints = dict(whole.checkpoints)
    assert _run(plain, tmp_path, checkpoint=1) == "succeeded"
    other = weights_from_bytes(plain.weights)
    assert not all(np.array_equal(other[k], v) for k, v in expected.items())


def test_a_worker_asks_again_at_once_when_the_server_held_its_claim(monkeypatch):
    """A server that holds an empty claim for its wait (as Kiln's does) is asked again at
    once: the hold is the spacing, and a queued job is never kept waiting for a poll."""
    monkeypatch.setattr(worker_main, "CLAIM_WAIT_S", 0.2)
    monkeypatch.setattr(worker_main, "CLAIM_POLL_FIRST_S", 1.0)  # would show in the gaps
    claims: list[tuple[float, float]] = []  # (when it came, the wait it asked for)
    shutdown = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        wait = json.loads(request.content)["wait_s"]
        claims.append((time.monotonic(), wait))
        time.sleep(wait)
        if len(claims) == 4:
            shutdown.set()
        return httpx.Response(204)

    client = WorkerClient("http://kiln.test", "token", transport=httpx.MockTransport(answer))
    worker_main.claim_loop(client, "w1", shutdown, lambda claim: None)
    assert [w for _, w in claims] == [0.2] * 4
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(claims)]
    assert all(0.2 <= g < 0.5 for g in gaps), gaps


def test_an_idle_worker_backs_off_and_claims_at_once_after_a_job(monkeypatch):
    """Against a server that answers empty claims at once (one that does not hold them),
    empty claims are spaced out more and more, up to the longest wait; a claimed job
    brings the first wait back."""
    monkeypatch.setattr(worker_main, "CLAIM_POLL_FIRST_S", 0.05)
    monkeypatch.setattr(worker_main, "CLAIM_POLL_BACKOFF", 2.0)
    monkeypatch.setattr(worker_main, "CLAIM_POLL_MAX_S", 0.3)
    claims: list[float] = []
    shutdown = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        claims.append(time.monotonic())
        if len(claims) == 5:
            return httpx.Response(200, json={"job_id": "j1"})
        if len(claims) == 7:
            shutdown.set()
        return httpx.Response(204)

    ran = []
    client = WorkerClient("http://kiln.test", "token", transport=httpx.MockTransport(answer))
    worker_main.claim_loop(client, "w1", shutdown, lambda claim: ran.append(claim["job_id"]))
    gaps = [b - a for a, b in itertools.pairwise(claims)]
    assert ran == ["j1"]
    # Waits of 0.05, 0.1, 0.2, 0.3 (the longest) while empty; none right after the job;
    # then 0.05 again.
    for gap, least in zip(gaps[:4], (0.05, 0.1, 0.2, 0.3)):
        assert gap >= least, gaps
    assert gaps[4] < 0.05 and 0.05 <= gaps[5] < 0.2, gaps
