"""The SDK's policies that need no server: where it finds the URL and token, when it
retries (httpx MockTransport answers), how errors read, and what it does not import."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib.metadata import requires

import httpx
import pytest
from kiln_client import (
    AsyncClient,
    Client,
    KilnConnectionError,
    ServerError,
    ValidationError,
    load_config,
    save_config,
)
from kiln_client import _base as base
from kiln_client._spec import job_body, parse_stop


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch):
    """Retries back off in real seconds; here they need not."""
    monkeypatch.setattr(base, "BACKOFF_FIRST_S", 0.001)


def _recording(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list]:
    """A transport giving ``answers`` in turn (an exception is raised), and the requests."""
    seen: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    return httpx.MockTransport(handle), seen


# ------------------------------------------------------------------ configuration

def test_arguments_then_environment_then_the_saved_config(monkeypatch, tmp_path):
    path = save_config("http://saved:8000", "kiln_saved")
    assert path == tmp_path / "kiln-config.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": "http://saved:8000", "token": "kiln_saved"}

    assert (Client().url, Client().token) == ("http://saved:8000", "kiln_saved")
    monkeypatch.setenv("KILN_TOKEN", "kiln_env")
    assert (Client().url, Client().token) == ("http://saved:8000", "kiln_env")
    assert Client(token="kiln_arg").token == "kiln_arg"


def test_the_saved_token_goes_only_to_the_server_it_was_saved_for(monkeypatch):
    save_config("http://saved:8000/", "kiln_saved")
    assert Client("http://saved:8000").token == "kiln_saved"
    assert Client("http://elsewhere:8000").token is None
    monkeypatch.setenv("KILN_URL", "http://elsewhere:8000")
    assert (Client().url, Client().token) == ("http://elsewhere:8000", None)


def test_nothing_saved_means_the_local_server_and_no_token():
    assert load_config().token is None
    assert (Client().url, Client().token) == ("http://127.0.0.1:8000", None)


def test_a_broken_config_file_is_named(tmp_path):
    (tmp_path / "kiln-config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"kiln-config\.json"):
        Client()


# ------------------------------------------------------------------ retries

def test_an_idempotent_call_is_retried_on_503_honouring_retry_after():
    transport, seen = _recording(
        httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"}),
        httpx.Response(502), httpx.Response(200, json={"data": [], "count": 0}))
    client = Client("http://kiln", "kiln_t", transport=transport, retries=2)
    assert client.datasets.list() == []
    assert [r.method for r in seen] == ["GET", "GET", "GET"]


def test_retries_run_out_with_a_server_error_carrying_the_servers_message():
    transport, seen = _recording(*[httpx.Response(503, json={"detail": "down for upgrade"})] * 3)
    client = Client("http://kiln", "kiln_t", transport=transport, retries=2)
    with pytest.raises(ServerError, match="down for upgrade") as e:
        client.jobs.get("j1")
    assert e.value.status == 503 and len(seen) == 3


def test_a_post_is_not_retried_once_the_server_may_have_seen_it():
    for answer, error in ((httpx.Response(503, json={"detail": "busy"}), ServerError),
                          (httpx.ReadError("reset"), KilnConnectionError)):
        transport, seen = _recording(answer)
        client = Client("http://kiln", "kiln_t", transport=transport, retries=3)
        with pytest.raises(error):
            client._send("POST", "/v1/jobs/j/cancel")
        assert [r.method for r in seen] == ["POST"]


def test_a_post_is_retried_when_the_connection_never_opened():
    transport, seen = _recording(httpx.ConnectError("refused"),
                                 httpx.Response(200, json={"id": "j", "status": "cancelled",
                                                           "spec": {}}))
    client = Client("http://kiln", "kiln_t", transport=transport, retries=1)
    assert client._send("POST", "/v1/jobs/j/cancel").json()["status"] == "cancelled"
    assert len(seen) == 2


@pytest.mark.anyio
async def test_the_async_client_follows_the_same_policy():
    transport, seen = _recording(httpx.Response(504), httpx.Response(200, json={
        "data": [{"id": "j", "status": "queued", "spec": {"epochs": 3}}], "next_cursor": None}))
    async with AsyncClient("http://kiln", "kiln_t", transport=httpx.MockTransport(
            lambda r: transport.handle_request(r))) as client:
        jobs = [j async for j in client.jobs.list()]
    assert [(j.id, j.total_epochs) for j in jobs] == [("j", 3)]
    assert [r.url.path for r in seen] == ["/v1/jobs", "/v1/jobs"]
    assert seen[0].headers["authorization"] == "Bearer kiln_t"


# ------------------------------------------------------------------ errors and specs

def test_a_422_reads_as_its_field_paths():
    body = {"detail": [{"loc": ["body", "model", "layers", 0, "out"], "msg": "must be > 0",
                        "type": "value_error"},
                       {"loc": ["query", "limit"], "msg": "too big", "type": "value_error"}]}
    transport, _ = _recording(httpx.Response(422, json=body))
    with pytest.raises(ValidationError) as e:
        Client("http://kiln", "t", transport=transport).jobs.get("j")
    assert e.value.paths == ["model.layers[0].out", "query.limit"]
    assert str(e.value) == "model.layers[0].out: must be > 0; query.limit: too big"


def test_job_arguments_become_the_apis_json():
    body = job_body(model={"type": "Dense", "in": 2, "out": 1}, optimiser={"rule": "Adam"},
                    loss="mse", train="ds1", validation=("ds2", "a", "b"), batch_size=4,
                    epochs=2, stop="val_loss<=0.5")
    assert body["train"] == {"dataset": "ds1", "x": "x", "y": "y"}
    assert body["validation"] == {"dataset": "ds2", "x": "a", "y": "b"}
    assert body["stop"] == {"metric": "val_loss", "at_most": 0.5}
    assert "device" not in body  # the server's default: any worker
    assert job_body(model={}, optimiser={}, loss="mse", train="d", batch_size=1, epochs=1,
                    device="gpu")["device"] == "gpu"
    with pytest.raises(ValueError, match=r"val_accuracy>=0\.97"):
        parse_stop("accuracy > 0.9")
    with pytest.raises(TypeError, match=r"kiln_engine\.losses"):
        job_body(model={}, optimiser={}, loss=len, train="d", batch_size=1, epochs=1)


# ------------------------------------------------------------------ what it does not need

SERVER_SIDE = ("fastapi", "sqlalchemy", "uvicorn", "cupy", "kiln_server", "alembic")


def test_the_client_distribution_depends_on_nothing_server_side():
    names = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower()
             for r in requires("kiln-client") + requires("kiln-engine")
             if "extra ==" not in r}
    assert names.isdisjoint({"fastapi", "sqlalchemy", "uvicorn", "cupy", "cupy-cuda12x",
                             "kiln-server", "alembic", "psycopg"}), names


def test_the_sdk_works_with_the_server_side_packages_unimportable(tmp_path):
    """In a process where importing fastapi, sqlalchemy, uvicorn, cupy or kiln_server
    fails, the SDK imports, serialises an engine model and rebuilds one from weights."""
    script = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_SIDE!r}:
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
import kiln_client
from kiln_client._spec import job_body
from kiln_client._job import build_model
from kiln_engine import Chain, Dense, Adam, relu
from kiln_engine.serialise import weights_to_bytes
m = Chain(enc=Dense(4, 3, relu), dec=Dense(3, 2))
body = job_body(model=m, optimiser=Adam(), loss="mse", train="d", batch_size=1, epochs=1)
again = build_model(body["model"], weights_to_bytes(m))
assert (again.layers.enc.weight == m.layers.enc.weight).all()
assert not any(n.split(".")[0] in {SERVER_SIDE!r} for n in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_download_that_fails_is_a_connection_error(tmp_path):
    job = {"id": "j", "status": "succeeded", "spec": {"model": {}}}
    transport, _ = _recording(httpx.Response(200, json=job), httpx.ReadError("reset"))
    client = Client("http://kiln", "kiln_t", transport=transport, retries=0)
    with pytest.raises(KilnConnectionError, match="reset"):
        client.jobs.get("j").download_weights(tmp_path / "w.safetensors")
    assert not list(tmp_path.iterdir())  # no half-written file left behind
