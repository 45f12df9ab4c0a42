"""A job's step losses as a chart asks for them: ``GET /v1/jobs/{id}/steps?max_points=N``
over 100,000 stored steps (target: well under 100 ms).

    python bench/steps_points.py [--steps 100000] [--per-post 100] [--runs 21]

A real ``kiln-server serve`` (SQLite, a temporary data directory, no workers) holds one
job whose steps a hand-driven worker posts in batches of ``--per-post`` (a worker posts a
batch every ``log_interval_s``: at 1 s and 100 steps a second, 1,000 batches hold
100,000 steps). Then the points are read ``--runs`` times for each ``max_points``, the
median and fastest printed: the whole request, as a client sees it, and the server's own
time (the service function on the same database, in this process).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from _server import LocalServer

JOB = {"model": {"type": "Chain", "layers": [{"type": "Dense", "in": 4, "out": 2}]},
       "optimiser": {"rule": "Adam", "eta": 0.001}, "loss": "logitcrossentropy",
       "batch_size": 4, "epochs": 1}


def _job_with_steps(server: LocalServer, steps: int, per_post: int) -> tuple[str, str]:
    """A job holding ``steps`` step losses; (its id, its owner's token)."""
    token, worker_token = server.token("bench"), server.token("bench-worker", worker=True)
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as user, \
         httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {worker_token}"}) as worker:
        buf = io.BytesIO()
        np.savez(buf, x=rng.random((8, 4), dtype=np.float32), y=rng.integers(0, 2, 8))
        ds = user.post("/v1/datasets", params={"name": "tiny"}, content=buf.getvalue(),
                       headers={"Content-Type": "application/octet-stream"}).json()["id"]
        job_id = user.post("/v1/jobs", json={**JOB, "train": {"dataset": ds, "x": "x",
                                                               "y": "y"}}).json()["id"]
        wid = worker.post("/v1/worker/register", json={"name": "bench", "device": {}}
                          ).json()["id"]
        lease = {"Kiln-Lease": worker.post("/v1/worker/claim", json={"worker_id": wid}
                                           ).json()["lease_token"]}
        losses = (2.0 / (1 + np.arange(steps) / 5000) + rng.random(steps) * 0.1).tolist()
        for first in range(0, steps, per_post):
            r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
                "steps": {"epoch": 1, "first_step": first + 1,
                          "losses": losses[first:first + per_post]}})
            r.raise_for_status()
    return job_id, token


def _times(fn, runs: int) -> tuple[float, float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1000, min(out) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--per-post", type=int, default=100)
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()

    from kiln_server.db import make_engine, make_sessionmaker, session_scope
    from kiln_server.models import Job, User
    from kiln_server.services import jobs

    with LocalServer() as server:
        job_id, token = _job_with_steps(server, args.steps, args.per_post)
        sessions = make_sessionmaker(make_engine(
            f"sqlite:///{Path(server.root) / 'data' / 'kiln.db'}"), read_only=True)
        print(f"{args.steps:,} steps in batches of {args.per_post:,}; median / fastest "
              f"of {args.runs} runs")
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as user:
            for points in (1000, 2000):
                got = user.get(f"/v1/jobs/{job_id}/steps", params={"max_points": points})
                body = got.json()
                assert body["count"] == args.steps and len(body["losses"]) <= points
                http = _times(lambda p=points: user.get(f"/v1/jobs/{job_id}/steps",
                                                        params={"max_points": p}), args.runs)
                with session_scope(sessions) as s:
                    owner = s.get(User, s.get(Job, job_id).owner_id)
                    own = _times(lambda p=points, s=s, o=owner: jobs.steps(s, o, job_id, p),
                                 args.runs)
                print(f"max_points={points:>5} (stride {body['stride']}): request "
                      f"{http[0]:6.1f} / {http[1]:6.1f} ms, server's own "
                      f"{own[0]:6.1f} / {own[1]:6.1f} ms")


if __name__ == "__main__":
    main()
