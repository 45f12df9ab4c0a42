"""The SDK against a real server and real workers, every call through ``Client`` and
through ``AsyncClient`` (driven by a portal: tests/client/support.py ``Blocking``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from anyio.from_thread import start_blocking_portal
from kiln_client import (
    AsyncClient,
    AuthError,
    Client,
    Conflict,
    JobFailed,
    KilnConnectionError,
    NotFound,
    ValidationError,
    WaitTimeout,
)
from kiln_engine import (
    Adam,
    Chain,
    Dense,
    Embedding,
    Flatten,
    OptimiserChain,
    WeightDecay,
    losses,
    onecold,
    relu,
    state_dict,
)
from kiln_engine.serialise import model_to_spec, weights_from_bytes

from tests.server.conftest import free_port
from tests.server.e2e_support import wait_for

from .conftest import mlp_spec, new_token
from .support import Blocking, Proxy

FINAL = ("succeeded", "failed", "cancelled")


def _open(kind: str, url: str, token: str | None, portal: Any, **kwargs: Any) -> Any:
    if kind == "sync":
        return Client(url, token, **kwargs)

    async def make() -> AsyncClient:
        return AsyncClient(url, token, **kwargs)
    return Blocking(portal.call(make), portal)


@pytest.fixture(scope="module")
def portal() -> Iterator[Any]:
    with start_blocking_portal() as p:
        yield p


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, kiln_server: Any, portal: Any) -> Iterator[Any]:
    """``connect(url=None, token=None, **kwargs)``: a Client, or an AsyncClient seen
    through the portal; closed (and its user's unfinished jobs cancelled) afterwards."""
    opened: list[Any] = []

    def make(url: str | None = None, token: str | None = None, **kwargs: Any) -> Any:
        client = _open(request.param, url or kiln_server.url, token, portal, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        token = client.target.token if isinstance(client, Blocking) else client.token
        if token:
            _cancel_unfinished(kiln_server.url, token)
        client.close()


def _cancel_unfinished(url: str, token: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        r = http.get("/v1/jobs", params={"limit": 500})
        if r.status_code != 200:
            return
        for job in r.json()["data"]:
            if job["status"] not in FINAL:
                http.post(f"/v1/jobs/{job['id']}/cancel")


@pytest.fixture
def kiln(connect: Any, token: str) -> Any:
    return connect(token=token)


def _mlp() -> Chain:
    return Chain(enc=Dense(64, 32, relu), dec=Dense(32, 10))


def _long_job(kiln: Any, ds: Any, **changes: Any) -> Any:
    """A job that trains for minutes unless stopped: room to steer it."""
    args = {"model": _mlp(), "optimiser": Adam(3e-3), "loss": "logitcrossentropy",
            "train": (ds, "x", "y"), "batch_size": 4, "epochs": 10_000, "seed": 1}
    return kiln.jobs.submit(**{**args, **changes})


# ------------------------------------------------------------------ datasets

def test_datasets_upload_list_get_and_delete(kiln, digits, digits_npz):
    ds = kiln.datasets.upload("digits", **digits)
    assert ds.name == "digits"
    assert ds.arrays["x"].shape == (1400, 64) and ds.arrays["x"].dtype == "float32"
    assert ds.arrays["yv"].shape == (397,) and ds.arrays["yv"].dtype == "int64"

    from_file = kiln.datasets.upload_file(digits_npz)
    assert from_file.name == "digits" and from_file.sha256 == ds.sha256
    named = kiln.datasets.upload_file(digits_npz, name="again")
    assert named.name == "again"

    assert [d.id for d in kiln.datasets.list()] == [named.id, from_file.id, ds.id]
    assert kiln.datasets.get(ds.id) == ds
    kiln.datasets.delete(ds)
    kiln.datasets.delete(named.id)
    assert [d.id for d in kiln.datasets.list()] == [from_file.id]
    with pytest.raises(NotFound, match=ds.id):
        kiln.datasets.get(ds.id)


def test_an_object_array_is_refused_before_anything_is_sent(kiln):
    with pytest.raises(ValueError, match="'labels' has dtype object"):
        kiln.datasets.upload("bad", x=np.zeros((2, 2)), labels=np.array([{}, "a"], dtype=object))
    assert kiln.datasets.list() == []


def test_a_dataset_in_use_cannot_be_deleted(kiln, digits):
    ds = kiln.datasets.upload("digits", **digits)
    job = _long_job(kiln, ds)
    with pytest.raises(Conflict, match="used by unfinished jobs") as e:
        kiln.datasets.delete(ds)
    assert e.value.status == 409
    job.cancel()
    wait_for("the job to be cancelled", lambda: job.refresh().status == "cancelled")
    kiln.datasets.delete(ds)


# ------------------------------------------------------------------ jobs

def test_a_job_submitted_from_engine_objects_trains_and_its_model_runs_here(kiln, digits,
                                                                           tmp_path):
    ds = kiln.datasets.upload("digits", **digits)
    model = _mlp()
    job = kiln.jobs.submit(model=model, optimiser=OptimiserChain(WeightDecay(1e-4), Adam(3e-3)),
                           loss=losses.logitcrossentropy, train=(ds, "x", "y"),
                           validation=(ds, "xv", "yv"), batch_size=32, epochs=4, seed=3,
                           metrics=["loss", "accuracy"], stop="val_accuracy>=0.999",
                           name="sdk digits")
    assert job.status in ("queued", "running") and job.name == "sdk digits"
    assert job.spec["model"] == model_to_spec(model)
    assert job.spec["optimiser"]["rules"][0] == {"rule": "WeightDecay", "lambda": 1e-4}
    assert job.spec["stop"] == {"metric": "val_accuracy", "at_least": 0.999,
                                "at_most": None}

    done = job.wait(progress=False, timeout=120)
    assert done == job and job.status == "succeeded" and job.finished
    assert job.epoch == job.total_epochs == 4

    rows = job.epochs()
    assert [r.epoch for r in rows] == [1, 2, 3, 4]
    assert rows[-1].train_loss < rows[0].train_loss
    frame = rows.to_pandas()
    assert list(frame.index) == [1, 2, 3, 4]
    assert frame.loc[4, "val_accuracy"] == rows[-1].metrics["val_accuracy"]

    trained = job.model()
    accuracy = float(np.mean(onecold(trained(digits["xv"])) == digits["yv"]))
    assert accuracy == pytest.approx(rows[-1].metrics["val_accuracy"], abs=1e-12)

    job.download_weights(tmp_path / "w.safetensors")
    on_disk = weights_from_bytes((tmp_path / "w.safetensors").read_bytes())
    for path, array in state_dict(trained).items():
        np.testing.assert_array_equal(on_disk[path], array)

    steps = job.steps()
    assert steps.stride == 1 and steps.steps == list(range(1, job.step + 1))
    assert steps.min == steps.max == steps.losses and steps.count == job.step
    few = job.steps(max_points=10)
    assert len(few.losses) <= 10 and few.count == job.step and few.stride > 1
    assert all(lo <= mean <= hi for lo, mean, hi in zip(few.min, few.losses, few.max,
                                                        strict=True))
    state = job.state()
    assert {leaf["rule"]["rule"] for leaf in state.values()} == {"OptimiserChain"}
    assert kiln.jobs.get(job.id).status == "succeeded"


def test_a_run_adjusted_and_frozen_mid_training_shows_it_in_the_following_epochs(kiln, digits):
    ds = kiln.datasets.upload("digits", **digits)
    job = _long_job(kiln, ds)
    wait_for("a first epoch", lambda: len(job.epochs()) >= 1, timeout=120)

    adjusted = job.adjust("layers.enc", eta=1e-4)
    frozen = job.freeze("layers.dec")
    assert (adjusted.kind, adjusted.status, adjusted.hyper) == ("adjust", "pending",
                                                                {"eta": 1e-4})
    assert (frozen.kind, frozen.path) == ("freeze", "layers.dec")

    def applied() -> list[Any]:
        cs = {c.seq: c for c in job.controls()}
        return [cs[adjusted.seq], cs[frozen.seq]] if all(
            cs[s].status == "applied" for s in (adjusted.seq, frozen.seq)) else []
    adjusted, frozen = wait_for("both controls to apply", applied)
    since = max(adjusted.applied_epoch, frozen.applied_epoch)
    rows = wait_for("two epochs after the change",
                    lambda: (r if len(r := job.epochs()) >= since + 2 else None))

    before = [r for r in rows if r.epoch < adjusted.applied_epoch]
    after = [r for r in rows if r.epoch > since]
    assert before and after
    for r in before:
        assert r.learning_rate("layers.enc.weight") == pytest.approx(3e-3)
        assert not r.is_frozen("layers.dec")
    for r in after:
        assert r.learning_rates["layers.enc"] == pytest.approx(1e-4)
        assert r.learning_rate("layers.dec") == pytest.approx(3e-3)
        assert r.is_frozen("layers.dec.bias") and not r.is_frozen("layers.enc")
    state = job.state()
    assert all(leaf["frozen"] == p.startswith("layers.dec") for p, leaf in state.items())

    thawed = job.thaw("layers.dec")
    wait_for("the thaw to apply",
             lambda: job.controls()[thawed.seq - 1].status == "applied")
    job.cancel()


def test_pause_resume_and_cancel_show_what_was_asked(kiln, digits):
    ds = kiln.datasets.upload("digits", **digits)
    job = _long_job(kiln, ds)
    wait_for("the job to run", lambda: job.refresh().status == "running", timeout=120)
    job.pause()
    assert job.status == "paused" or job.requested == "pause"
    wait_for("the pause", lambda: job.refresh().status == "paused")
    assert job.resume().status == "queued"
    wait_for("the job to run again", lambda: job.refresh().status == "running", timeout=120)
    job.cancel()
    assert job.status == "cancelled" or job.requested == "cancel"
    done = job.wait(progress=False, timeout=60)
    assert done.status == "cancelled"
    kinds = [(c.kind, c.status) for c in job.controls()]
    assert kinds == [("pause", "applied"), ("resume", "applied"), ("cancel", "applied")]


def test_jobs_list_iterates_every_page_and_filters_by_status(connect, kiln_server, digits):
    kiln = connect(token=new_token(kiln_server))
    ds = kiln.datasets.upload("digits", **digits)
    jobs = [_long_job(kiln, ds, name=f"job {i}") for i in range(5)]
    for job in jobs[:3]:
        job.cancel()
    wait_for("three cancellations (a running job's is a request to its worker)",
             lambda: all(j.refresh().status == "cancelled" for j in jobs[:3]))
    listed = list(kiln.jobs.list(page_size=2))
    assert [j.id for j in listed] == [j.id for j in reversed(jobs)]
    cancelled = list(kiln.jobs.list(status="cancelled", page_size=2))
    assert {j.id for j in cancelled} == {j.id for j in jobs[:3]}
    assert all(j.status == "cancelled" for j in cancelled)


def test_wait_raises_when_the_job_fails(kiln):
    """An Embedding fed an id past its vocabulary passes submission (which runs the model
    on zeros) and fails on the worker."""
    ds = kiln.datasets.upload("ids", x=np.array([[1, 20], [2, 3]] * 8), y=np.arange(16) % 3)
    job = kiln.jobs.submit(model=Chain(Embedding(10, 4), Flatten(), Dense(8, 3)),
                           optimiser=Adam(), loss="logitcrossentropy", train=ds,
                           batch_size=16, epochs=1)
    with pytest.raises(JobFailed, match=r"expects indices in 0\.\.9; got 20") as e:
        job.wait(progress=False, timeout=120)
    assert e.value.job.status == "failed"


def test_wait_gives_up_at_its_timeout(kiln, digits):
    job = _long_job(kiln, kiln.datasets.upload("digits", **digits))
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        job.wait(progress=False, timeout=1.0)
    assert time.monotonic() - started < 10


def test_events_resume_after_a_dropped_connection_without_loss_or_repeats(connect,
                                                                          kiln_server,
                                                                          token, digits):
    """The stream is cut twice while the job trains; what the SDK yields across the
    reconnections has every step batch and epoch row exactly once, as a stream read
    afterwards from the start does, and no event twice."""
    proxy = Proxy(kiln_server.port)
    try:
        kiln = connect(url=proxy.url, token=token)
        ds = kiln.datasets.upload("digits", **digits)
        job = kiln.jobs.submit(model=_mlp(), optimiser=Adam(3e-3), loss="logitcrossentropy",
                               train=(ds, "x", "y"), batch_size=1, epochs=10, seed=2)
        seen, drops = [], 0
        for event in job.events():
            seen.append(event)
            if event.kind == "epoch" and event.data["epoch"] in (3, 7):
                job.adjust("layers.enc", eta=1e-3)
                proxy.drop()
                drops += 1
        assert drops == 2 and proxy.accepted >= 3
    finally:
        proxy.close()

    direct = connect(token=token)
    replay = list(direct.jobs.get(job.id).events())

    def rows(events: list[Any], kind: str) -> list[dict]:
        return [e.data for e in events if e.kind == kind]
    assert rows(seen, "epoch") == rows(replay, "epoch")
    assert [r["epoch"] for r in rows(seen, "epoch")] == list(range(1, 11))
    assert rows(seen, "steps") == rows(replay, "steps")
    assert len({e.id for e in seen}) == len(seen)
    controls = [(e.data["seq"], e.data["status"]) for e in seen if e.kind == "control"]
    assert len(set(controls)) == len(controls)
    assert {seq for seq, status in controls if status == "applied"} == {1, 2}
    assert seen[-1].kind == "status" and seen[-1].data["status"] == "succeeded"


def test_workers_lists_the_servers_workers(kiln):
    workers = kiln.workers.list()
    assert len(workers) >= 2
    assert all(w.device["kind"] == "cpu" and w.status in ("busy", "idle", "gone")
               for w in workers)
    assert {w.id for w in kiln.workers.list(status="idle")} <= {w.id for w in workers}


def test_me_names_the_tokens_user(kiln):
    me = kiln.me()
    assert me.name.startswith("c") and me.admin is False


# ------------------------------------------------------------------ errors

def test_a_wrong_token_is_an_auth_error(connect):
    with pytest.raises(AuthError, match="a valid bearer token is required") as e:
        connect(token="kiln_wrong").jobs.get("0" * 32)
    assert e.value.status == 401


def test_no_token_says_how_to_give_one(connect):
    with pytest.raises(AuthError, match="kiln login"):
        connect().datasets.list()


def test_an_unknown_job_is_not_found(kiln):
    with pytest.raises(NotFound, match="no job 'nope'"):
        kiln.jobs.get("nope")
    with pytest.raises(NotFound):
        kiln.jobs.get("../datasets")


def test_a_spec_error_names_the_field(kiln, digits):
    ds = kiln.datasets.upload("digits", **digits)
    bad = mlp_spec()
    bad["layers"]["enc"]["out"] = 0
    with pytest.raises(ValidationError) as e:
        kiln.jobs.submit(model=bad, optimiser={"rule": "Adam"}, loss="logitcrossentropy",
                         train=ds, batch_size=8, epochs=1)
    assert e.value.paths == ["model.layers.enc.out"]
    assert str(e.value) == "model.layers.enc.out: must be a positive integer; got 0"
    assert e.value.errors[0]["loc"] == ["body", "model", "layers", "enc", "out"]


def test_a_server_that_is_down_is_a_connection_error(connect):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(KilnConnectionError, match=f"cannot connect to Kiln at {url}"):
        connect(url=url, token="kiln_x", retries=0).jobs.get("x")


def test_a_dropped_connection_is_a_connection_error(connect):
    """A server that accepts and closes without answering: after the retries an
    idempotent call gets, a connection error (not an httpx one)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(KilnConnectionError, match=r"connection to Kiln .* failed"):
            connect(url=f"http://127.0.0.1:{port}", token="kiln_x", retries=1).datasets.list()
    finally:
        listener.close()


def test_a_job_body_as_written_is_submitted_and_judged_by_the_server(kiln, digits):
    ds = kiln.datasets.upload("digits", **digits)
    body = {"model": mlp_spec(), "optimiser": {"rule": "Adam", "eta": 0.003},
            "loss": "logitcrossentropy", "train": {"dataset": ds.id}, "batch_size": 64,
            "epochs": 1}
    job = kiln.jobs.submit_spec(body)
    assert job.spec["model"] == mlp_spec() and job.total_epochs == 1
    assert job.wait(progress=False, timeout=120).status == "succeeded"
    with pytest.raises(ValidationError) as e:
        kiln.jobs.submit_spec({**body, "epoch": 3})
    assert e.value.paths == ["epoch"]


def test_health_says_whether_the_server_answers(connect):
    assert connect().health() is True
    with pytest.raises(KilnConnectionError):
        connect(url=f"http://127.0.0.1:{free_port()}", retries=0).health()
