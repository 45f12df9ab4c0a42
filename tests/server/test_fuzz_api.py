"""Every operation of the OpenAPI document, fuzzed by schemathesis against the real server:
no request, however malformed, is answered with a 5xx.

The document is the app's own (the test below checks it is the one the server serves),
so each operation is a test of its own. Each request carries the token its audience
needs: the worker API (/v1/worker/…) a worker token, the admin's routes the admin
token, every other route a user's. Cases are generated both to fit the document and to
break it (wrong types, missing fields, bodies of another media type), from a fixed seed
and a bounded number per operation, so a run is the same every time and quick.
"""

from __future__ import annotations

import json
import secrets
import threading
import typing
import zlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, settings
from kiln_server.api.deps import AdminUser
from kiln_server.app import create_app
from schemathesis.checks import not_a_server_error

from .conftest import ADMIN_TOKEN, LEASE_S, Server, database, mlp_job, npz_bytes, upload
from .test_worker_api import _drain, _finish, _register

#: Cases per operation that hypothesis generates (both modes together), besides the
#: coverage phase's boundary and negative cases.
MAX_EXAMPLES = 30

#: A job's body holds the engine's spec schemas, whose coverage cases (every variant of
#: every layer and rule) number in the ten thousands: it gets more generated cases instead.
CONFIG = schemathesis.Config.from_dict({
    "cache": {"enabled": False},  # no replay of an earlier run's failures: each run the same
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "operations": [{"include-operation-id": "create_job",
                    "generation": {"max-examples": 4 * MAX_EXAMPLES},
                    "phases": {"coverage": {"enabled": False}}}],
})
APP = create_app()
SCHEMA = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)


def _needs(dependant: typing.Any, call: typing.Any) -> bool:
    return any(d.call is call or _needs(d, call) for d in dependant.dependencies)


def _routes(routes: list[typing.Any]) -> Iterator[APIRoute]:
    """The app's operations, within the routers it includes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from _routes(inner.routes)


def _audiences() -> dict[str, str]:
    """Which token each operation (by its operationId) takes: 'worker', 'admin' or 'user'."""
    admin_only = typing.get_args(AdminUser)[1].dependency
    return {route.name: "worker" if route.tags == ["worker"] else
            "admin" if _needs(route.dependant, admin_only) else "user"
            for route in _routes(APP.routes)}


AUDIENCE = _audiences()
#: How long a user's jobs stream stays open on this module's server: a fuzzed request
#: reads its whole response, and that stream ends only after this long.
JOBS_STREAM_MAX_S = 0.2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """This module's own server, whose jobs streams end soon."""
    with database(backend) as url:
        srv = Server(tmp_path_factory.mktemp(f"fuzz-server-{backend}"), database_url=url,
                     env={"KILN_JOBS_STREAM_MAX_S": str(JOBS_STREAM_MAX_S)})
        yield srv
        srv.stop()


@pytest.fixture(scope="module")
def tokens(server: Server) -> Iterator[dict[str, str]]:
    """A token for each audience: a new user's, a new worker token, the admin's."""
    with server.client(ADMIN_TOKEN) as admin:
        made = {kind: admin.post("/v1/tokens", json={
            "user": f"fuzz-{secrets.token_hex(4)}", "worker": kind == "worker"}).json()["token"]
            for kind in ("user", "worker")}
    yield {**made, "admin": ADMIN_TOKEN}


class Targets:
    """Real things for half the cases to name, so that they get past the lookup of their
    path's ids into the routes' own work: the fuzzing user's dataset, a running job
    (``job``) held by a worker of the test's, a cancelled one (``finished``: its event
    stream ends), and a job held under a lease (``held``, ``lease``) for the worker API.
    A thread keeps both leases alive; when the fuzzed calls end the held job (finish,
    release), it holds a new one."""

    def __init__(self, server: Server, tokens: dict[str, str]) -> None:
        self.user, self.worker = server.client(tokens["user"]), server.client(tokens["worker"])
        data = npz_bytes(x=np.zeros((4, 64), np.float32), y=np.arange(4) % 10)
        self.dataset = upload(self.user, data, "fuzz").json()
        self.finished = self._submit()
        self.user.post(f"/v1/jobs/{self.finished}/cancel")
        self.job, self.job_lease = self._hold(self._submit())
        self.held, self.lease = self._hold(self._submit())
        self.stop = threading.Event()
        self.beating = threading.Thread(target=self._beat)
        self.beating.start()

    def _submit(self) -> str:
        return self.user.post("/v1/jobs", json=mlp_job(self.dataset["id"])).json()["id"]

    def _hold(self, job_id: str) -> tuple[str, str]:
        """Claim ``job_id`` with a new worker (cancelling what other tests left queued)."""
        wid = _register(self.worker)
        return job_id, _drain(self.worker, wid, until=job_id)["lease_token"]

    def _alive(self, job_id: str, lease: str) -> bool:
        return self.worker.post(f"/v1/worker/jobs/{job_id}/heartbeat", json={
            "epoch": 0, "step": 0}, headers={"Kiln-Lease": lease}).status_code == 200

    def _beat(self) -> None:
        while not self.stop.wait(LEASE_S / 5):
            self._alive(self.job, self.job_lease)
            if not self._alive(self.held, self.lease):
                self.held, self.lease = self._hold(self._submit())

    def close(self) -> None:
        self.stop.set()
        self.beating.join()
        for job_id, lease in ((self.job, self.job_lease), (self.held, self.lease)):
            _finish(self.worker, job_id, {"Kiln-Lease": lease})
        self.user.close()
        self.worker.close()

    def aim(self, case: schemathesis.Case, operation: str) -> None:
        """Point half the cases (chosen by their generated ids) at the real things."""
        ids = case.path_parameters or {}
        if zlib.crc32(json.dumps(ids, sort_keys=True, default=str).encode()) % 2:
            return
        if "job_id" in ids and AUDIENCE[operation] == "worker":
            case.path_parameters = {**ids, "job_id": self.held}
            case.headers = {**(case.headers or {}), "Kiln-Lease": self.lease}
        elif "job_id" in ids:
            ended = operation == "job_events"
            case.path_parameters = {**ids, "job_id": self.finished if ended else self.job}
        elif "dataset_id" in ids:
            case.path_parameters = {**ids, "dataset_id": self.dataset["id"]}
        elif "sha256" in ids:
            case.path_parameters = {**ids, "sha256": self.dataset["sha256"]}
        if operation == "wait_controls" and not isinstance((case.query or {}).get("wait_s"), str):
            case.query = {**(case.query or {}), "wait_s": 0.1}  # held, but not for long


@pytest.fixture(scope="module")
def targets(server: Server, tokens: dict[str, str]) -> Iterator[Targets]:
    made = Targets(server, tokens)
    yield made
    made.close()


def test_the_fuzzed_document_is_the_one_the_server_serves(server):
    assert httpx.get(server.url + "/openapi.json").json() == APP.openapi()
    ops = {op["operationId"] for path in APP.openapi()["paths"].values() for op in path.values()}
    assert set(AUDIENCE) == ops
    assert {AUDIENCE[op] for op in ("claim_job", "create_token", "create_job")} == \
        {"worker", "admin", "user"}


@SCHEMA.parametrize()
@settings(deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, server, tokens, targets):
    operation = case.operation.definition.raw["operationId"]
    targets.aim(case, operation)
    response = case.call(base_url=server.url, timeout=30,
                         headers={"Authorization": f"Bearer {tokens[AUDIENCE[operation]]}"})
    case.validate_response(response, checks=[not_a_server_error])
