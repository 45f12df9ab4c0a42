"""End to end: two worker processes drain twenty queued jobs; each runs exactly once, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import re

from . import conftest, e2e_support
from .e2e_support import (
    digits_job,
    digits_split,
    epochs,
    finished,
    new_client,
    submit,
    upload_digits,
)

# The fixtures this module uses (pytest finds them among the module's names).
make_workers = e2e_support.make_workers

JOBS = 20


def _twenty_jobs_each_once(server, make_workers):
    client, _ = new_client(server)
    small = {k: v[:64] for k, v in digits_split().items()}
    ds = upload_digits(client, small)
    ids = [submit(client, digits_job(ds, epochs=2, stop=None, batch_size=16, seed=i,
                                     validation=None, metrics=["loss"]))
           for i in range(JOBS)]
    workers = make_workers(server)
    workers.start(2)
    for job_id in ids:
        done = finished(client, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 1, done
        assert [r["epoch"] for r in epochs(client, job_id)] == [1, 2]
    workers.stop()
    claimed = [m for log in workers.logs() for m in re.findall(r"job (\w+): claimed", log)]
    assert sorted(claimed) == sorted(ids)  # every job claimed once, by one worker


def test_two_workers_twenty_jobs(tmp_path, make_workers, database_url):
    server = conftest.Server(tmp_path, database_url=database_url)
    try:
        _twenty_jobs_each_once(server, make_workers)
    finally:
        server.stop()


