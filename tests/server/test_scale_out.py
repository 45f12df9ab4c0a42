"""Scale-out under faults: two API replicas on one PostgreSQL database and one shared blob
store, eight worker processes, two hundred short jobs submitted at once through both
replicas. While they run, the worker holding a longer job is SIGKILLed and one replica
is restarted. Every job succeeds exactly once, every epoch row is stored exactly once,
and the job whose worker was killed ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import numpy as np
import pytest

from . import conftest, e2e_support
from .e2e_support import (
    Workers,
    digits_job,
    digits_split,
    epochs,
    finished,
    new_client,
    reference_run,
    submit,
    upload_digits,
    wait_for,
    weights,
)

# The fixture this module uses (pytest finds it among the module's names).
make_workers = e2e_support.make_workers

N_JOBS = 200
N_WORKERS = 8
SHORT_EPOCHS = 2
#: The job whose worker is killed: long enough to be caught mid-run with a checkpoint.
LONG_EPOCHS, LONG_BATCH = 8, 8
#: Longer than the suite's 1.5 s: eight workers and two servers share two cores here,
#: and a heartbeat late under that load must not cost a job its lease.
LEASE_S = 6.0
#: The whole run, jobs and faults, must be over within this.
RUN_S = 300.0


@pytest.fixture
def start_replica(tmp_path):
    """``start(i)``: replica i (0 or 1) on one PostgreSQL database and one blob store;
    starting one again reuses its port. All are stopped at the end."""
    running: dict[int, conftest.Server] = {}
    with conftest.pg_database() as url:
        env = {"KILN_LEASE_S": str(LEASE_S),
               "KILN_BLOB_STORE": (tmp_path / "blobs").as_uri()}

        def start(i: int) -> conftest.Server:
            data = tmp_path / f"replica-{i}"
            data.mkdir(exist_ok=True)
            before = running.get(i)
            running[i] = conftest.Server(data, database_url=url, env=env,
                                         port=before.port if before else None)
            return running[i]

        yield start
        for srv in running.values():
            srv.stop()


def _holder_pid(admin: httpx.Client, job_id: str) -> int | None:
    """The pid of the worker process holding ``job_id`` (its name is host:pid)."""
    for w in admin.get("/v1/workers").json()["data"]:
        if w.get("job_id") == job_id and w["status"] == "busy":
            return int(w["name"].rsplit(":", 1)[1])
    return None


def test_two_replicas_eight_workers_two_hundred_jobs_a_worker_killed_a_replica_restarted(
        start_replica, make_workers):
    a, b = start_replica(0), start_replica(1)
    started = time.monotonic()
    client_a, token = new_client(a)
    client_b = b.client(token)
    arrays = digits_split()
    ds = upload_digits(client_a, arrays)

    # The long job first: the one whose worker is killed.
    long_job = digits_job(ds, epochs=LONG_EPOCHS, batch_size=LONG_BATCH, stop=None)
    long_id = submit(client_a, long_job)
    short = digits_job(ds, epochs=SHORT_EPOCHS, stop=None, batch_size=128)
    with ThreadPoolExecutor(8) as pool:  # all at once, half through each replica
        ids = list(pool.map(lambda i: submit((client_a, client_b)[i % 2], short),
                            range(N_JOBS)))

    workers: list[Workers] = []
    for srv in (a, b):  # four workers attached to each replica
        group = make_workers(srv)
        group.start(N_WORKERS // 2)
        workers.append(group)

    # Kill the long job's worker once it has a checkpoint to resume from.
    wait_for("the long job's second epoch", lambda: len(epochs(client_a, long_id)) >= 2,
             timeout=RUN_S, every=0.05)
    with a.client(conftest.ADMIN_TOKEN) as admin:
        pid = wait_for("the long job's worker", lambda: _holder_pid(admin, long_id))
    (victim,) = [p for g in workers for p in g.procs if p.pid == pid]
    (group,) = [g for g in workers if victim in g.procs]
    group.kill(victim)

    # Restart replica b while its workers and the rest of the run go on.
    b.stop()
    time.sleep(0.5)
    b = start_replica(1)
    client_b = b.client(token)

    left = RUN_S - (time.monotonic() - started)
    done = {job_id: finished((client_a, client_b)[n % 2], job_id, timeout=max(left, 1.0))
            for n, job_id in enumerate([long_id, *ids])}
    for g in workers:
        g.stop()
    assert time.monotonic() - started < RUN_S

    failed = {i: (j["status"], j["error"]) for i, j in done.items() if j["status"] != "succeeded"}
    assert not failed
    assert done[long_id]["attempt"] >= 2  # its first holder was killed
    # Each job's success was reported once, by one worker; a killed worker reports none.
    logs = "".join(log for g in workers for log in g.logs())
    successes = Counter(re.findall(r"job (\w+): finished, succeeded", logs))
    assert successes == dict.fromkeys(done, 1), {i: n for i, n in successes.items() if n != 1}
    for n, job_id in enumerate(ids):
        rows = epochs((client_a, client_b)[n % 2], job_id)
        assert [r["epoch"] for r in rows] == list(range(1, SHORT_EPOCHS + 1)), job_id
    assert [r["epoch"] for r in epochs(client_a, long_id)] == list(range(1, LONG_EPOCHS + 1))

    ref_weights, _ = reference_run(long_job, ds, arrays)
    got = weights(client_b, long_id)
    assert sorted(got) == sorted(ref_weights)
    for path, w in ref_weights.items():
        assert got[path].dtype == w.dtype and np.array_equal(got[path], w), path


def test_replicas_starting_together_on_a_new_database_all_start(tmp_path):
    """Three replicas started at once on an empty PostgreSQL database take turns to
    migrate it and to store the admin's token: all three serve, and the token works on
    each (one admin token, not three)."""
    for i in range(3):
        (tmp_path / f"replica-{i}").mkdir()
    with conftest.pg_database() as url, ThreadPoolExecutor(3) as pool:
        starts = [pool.submit(conftest.Server, tmp_path / f"replica-{i}", database_url=url,
                              env={"KILN_BLOB_STORE": (tmp_path / "blobs").as_uri()})
                  for i in range(3)]
        wait(starts)
        servers = [s.result() for s in starts if s.exception() is None]
        try:
            for s in starts:
                s.result()  # a replica that did not start fails the test (after the rest stop)
            for srv in servers:
                with srv.client(conftest.ADMIN_TOKEN) as admin:
                    r = admin.get("/v1/tokens")
                    assert r.status_code == 200, r.text
                    kinds = [t["kind"] for t in r.json()["data"]]
                    assert kinds.count("admin") == 1, r.json()
        finally:
            for srv in servers:
                srv.stop()
