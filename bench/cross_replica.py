"""Wake-ups across API replicas: how soon what is posted to one replica reaches a request
held by another (target: p95 under 100 ms cross-replica).

    python bench/cross_replica.py [--n 100] [--worker-n 60]

Two ``kiln-server serve --workers 0`` replicas, A and B, on one fresh PostgreSQL database
(127.0.0.1:5432, dropped after) and one data directory (their shared blob store), default
settings: a commit on one replica wakes the requests held on the other by LISTEN/NOTIFY
(server/kiln_server/pg_wakeups.py). The requests are always held on B; what they wait for
is posted to A ("cross") or to B itself ("same"), alternately, so that the machine's
drift hits both alike:

- **control**: a hand-driven worker registered on B claims a job through B, heartbeats
  it every 5 s and keeps ``GET /v1/worker/jobs/{id}/controls?after=N&wait_s=20`` open on
  B; an ``adjust`` is posted to ``POST /v1/jobs/{id}/controls``; the time until the
  long-poll's answer with it is read by the worker;
- **claim**: the worker holds ``POST /v1/worker/claim {wait_s: 20}`` on B while the queue
  is empty; a job is posted to ``POST /v1/jobs``; the time until the claim's answer (the
  job is then finished, through B);
- **SSE**: ``GET /v1/jobs/{id}/events`` is held on B by the job's owner; the worker posts
  an epoch row (``POST /v1/worker/jobs/{id}/logs``); the time until the stream's
  ``epoch`` event;
- **real worker**: a ``kiln-server worker`` process attached to B trains a digits job
  (Dense 64->32->10, Adam, batch 64); an ``adjust`` of ``layers.enc`` is posted; the time
  until the worker logs it applied at a step boundary (its log line's clock, this
  machine's), and, as the API tells it, the control's ``resolved_at - created_at``
  (created at the post, resolved when the worker's report of it is stored).

Each latency is from the post's answer (the post has committed) to the arrival, in ms;
"from send" adds the post's own round trip. Before each post the benchmark waits a
random 30-80 ms so that the request on B is held (as it is in use: a control comes
while the poll waits). The machine's load average is printed with the figures: other
people's work shares these 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from _server import LocalServer, pg_database

#: The two kinds of post: to the other replica (A), or to the one holding the request (B).
WHERES = ("cross", "same")
#: A worker's log line for a control applied at a step boundary (worker/run.py).
_APPLIED = re.compile(r"^(\S+ \S+) kiln_server\.worker\.run job \w+: control (\d+) .* applied "
                      r"from step", re.M)
#: How long the benchmark waits for anything to arrive before it calls it lost.
ARRIVAL_TIMEOUT_S = 10.0


def mlp_job(dataset_id: str, epochs: int) -> dict:
    return {"model": {"type": "Chain", "layers": {
                "enc": {"type": "Dense", "in": 64, "out": 32, "activation": "relu"},
                "dec": {"type": "Dense", "in": 32, "out": 10}}},
            "optimiser": {"rule": "Adam", "eta": 0.001}, "loss": "logitcrossentropy",
            "train": {"dataset": dataset_id, "x": "x", "y": "y"},
            "batch_size": 64, "epochs": epochs, "seed": 0}


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                        timeout=60)


class Arrivals:
    """What a held request has brought, by key, and when (perf_counter)."""

    def __init__(self) -> None:
        self._at: dict[object, float] = {}
        self._cond = threading.Condition()

    def add(self, key: object) -> None:
        with self._cond:
            self._at.setdefault(key, time.perf_counter())
            self._cond.notify_all()

    def wait(self, key: object) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._at, ARRIVAL_TIMEOUT_S):
                raise TimeoutError(f"{key!r} did not arrive in {ARRIVAL_TIMEOUT_S} s")
            return self._at[key]


class Latencies:
    """Milliseconds per kind of post ("cross", "same"), from the answer and from the send."""

    def __init__(self) -> None:
        self.answer: dict[str, list[float]] = {w: [] for w in WHERES}
        self.send: dict[str, list[float]] = {w: [] for w in WHERES}

    def timed_post(self, where: str, post: Callable[[], object],
                   arrived: Callable[[object], float]) -> None:
        """Post, then wait for its arrival; record both latencies."""
        time.sleep(random.uniform(0.03, 0.08))  # the request on B is held again by now
        t0 = time.perf_counter()
        key = post()
        t1 = time.perf_counter()
        at = arrived(key)
        self.answer[where].append((at - t1) * 1e3)
        self.send[where].append((at - t0) * 1e3)

    def print(self, label: str) -> None:
        for w in WHERES:
            a, s = self.answer[w], self.send[w]
            print(f"{label:<11} {w:<5}  p50 {_pct(a, 50):6.1f} ms  p95 {_pct(a, 95):6.1f} ms  "
                  f"max {max(a):6.1f} ms   (from send: p50 {_pct(s, 50):6.1f}, p95 "
                  f"{_pct(s, 95):6.1f}; n={len(a)}; load {os.getloadavg()[0]:.1f})", flush=True)


def _pct(xs: list[float], p: int) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Bench:
    """Replicas A and B on one fresh database, a user and a hand-driven worker."""

    def __init__(self, url: str, data_dir: Path) -> None:
        env = {"PYTHONUNBUFFERED": "1"}
        self.a = LocalServer(env=env, database_url=url, data_dir=data_dir)
        try:
            self.b = LocalServer(env=env, database_url=url, data_dir=data_dir)
        except BaseException:
            self.a.close()
            raise
        self.user_token = self.a.token("bench")
        self.worker_token = self.a.token("bench-worker", worker=True)
        self.user = {"cross": client(self.a.url, self.user_token),
                     "same": client(self.b.url, self.user_token)}
        self.worker = {"cross": client(self.a.url, self.worker_token),
                       "same": client(self.b.url, self.worker_token)}
        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        np.savez(buf, x=rng.random((64, 64), dtype=np.float32), y=rng.integers(0, 10, 64))
        self.tiny = self._upload(buf.getvalue())

    def _upload(self, data: bytes) -> str:
        r = self.user["cross"].post("/v1/datasets", content=data,
                                    headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()
        return r.json()["id"]

    def register(self) -> str:
        r = self.worker["same"].post("/v1/worker/register", json={"name": "bench",
                                                                   "device": {}})
        r.raise_for_status()
        return r.json()["id"]

    def claimed_job(self, worker_id: str) -> tuple[str, str]:
        """A job submitted and claimed through B: (its id, its lease)."""
        self.user["same"].post("/v1/jobs", json=mlp_job(self.tiny, 1)).raise_for_status()
        r = self.worker["same"].post("/v1/worker/claim", json={"worker_id": worker_id})
        r.raise_for_status()
        return r.json()["job_id"], r.json()["lease_token"]

    def close(self) -> None:
        for c in (*self.user.values(), *self.worker.values()):
            c.close()
        self.a.close()
        self.b.close()


def _until(stop: threading.Event, every: float, fn: Callable[[], None]) -> threading.Thread:
    """``fn`` every ``every`` s in a thread, until ``stop``."""
    def loop() -> None:
        while not stop.wait(every):
            fn()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def controls_and_events(bench: Bench, n: int) -> None:
    """The control and SSE measurements, on one job held by the hand-driven worker."""
    worker_id = bench.register()
    job_id, lease = bench.claimed_job(worker_id)
    path = f"/v1/worker/jobs/{job_id}"
    headers = {"Kiln-Lease": lease}
    stop = threading.Event()
    beat = client(bench.b.url, bench.worker_token)
    _until(stop, 5.0, lambda: beat.post(f"{path}/heartbeat", headers=headers,
                                        json={"epoch": 0, "step": 0}).raise_for_status())
    controls = Arrivals()

    def poll() -> None:  # the worker's controls long-poll, on B
        after = 0
        with client(bench.b.url, bench.worker_token) as b:
            while not stop.is_set():
                r = b.get(f"{path}/controls", params={"after": after, "wait_s": 20},
                          headers=headers)
                if r.status_code == 409:  # the job is finished: the benchmark is done with it
                    return
                r.raise_for_status()
                for c in r.json()["controls"]:
                    controls.add(c["seq"])
                after = r.json()["seq"]

    threading.Thread(target=poll, daemon=True).start()
    lat = Latencies()
    for i in range(2 * n):
        where = WHERES[i % 2]
        lat.timed_post(where, lambda w=where: bench.user[w].post(
            f"/v1/jobs/{job_id}/controls", json={"kind": "adjust", "path": "",
                                                  "hyper": {"eta": 1e-3}}).json()["seq"],
            controls.wait)
    lat.print("control")

    epochs = Arrivals()

    def follow() -> None:  # the owner's event stream, on B
        with client(bench.b.url, bench.user_token) as b, \
                b.stream("GET", f"/v1/jobs/{job_id}/events") as r:
            epochs.add("open")
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "epoch":
                    epochs.add(json.loads(line[6:])["epoch"])

    threading.Thread(target=follow, daemon=True).start()
    epochs.wait("open")
    def post_epoch(where: str, epoch: int) -> int:
        bench.worker[where].post(f"{path}/logs", headers=headers, json={
            "epochs": [{"epoch": epoch, "train_loss": 1.0}], "step": epoch}).raise_for_status()
        return epoch

    lat = Latencies()
    for i in range(2 * n):
        where = WHERES[i % 2]
        lat.timed_post(where, lambda w=where, e=i + 1: post_epoch(w, e), epochs.wait)
    lat.print("SSE epoch")
    stop.set()
    beat.close()
    bench.worker["same"].post(f"{path}/finish", headers=headers,
                              json={"status": "succeeded", "epoch": 0, "step": 0})


def claims(bench: Bench, n: int) -> None:
    """A job posted while the worker's claim is held on B."""
    worker_id = bench.register()
    lat = Latencies()
    with client(bench.b.url, bench.worker_token) as b:
        for i in range(2 * n):
            where = WHERES[i % 2]
            claimed = Arrivals()

            def hold() -> None:
                r = b.post("/v1/worker/claim", json={"worker_id": worker_id, "wait_s": 20})
                r.raise_for_status()
                claimed.add(r.json()["job_id"])
                b.post(f"/v1/worker/jobs/{r.json()['job_id']}/finish",
                       headers={"Kiln-Lease": r.json()["lease_token"]},
                       json={"status": "succeeded", "epoch": 0, "step": 0}).raise_for_status()

            t = threading.Thread(target=hold)
            t.start()
            lat.timed_post(where, lambda w=where: bench.user[w].post(
                "/v1/jobs", json=mlp_job(bench.tiny, 1)).json()["id"], claimed.wait)
            t.join()
    lat.print("claim")


def real_worker(bench: Bench, n: int, root: Path) -> None:
    """Controls to a ``kiln-server worker`` process attached to B, training digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    np.savez(buf, x=(d.data / 16).astype(np.float32), y=d.target.astype(np.int64))
    dataset = bench._upload(buf.getvalue())
    log_path = root / "worker.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln_server", "worker", "--url", bench.b.url, "--token",
             bench.worker_token],
            env={**os.environ, "PYTHONUNBUFFERED": "1", "KILN_WORKER_CACHE": str(root / "cache")},
            stdout=log, stderr=subprocess.STDOUT)
    try:
        user = bench.user["cross"]
        job_id = user.post("/v1/jobs", json=mlp_job(dataset, 100_000)).json()["id"]
        while user.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
            time.sleep(0.05)
        time.sleep(1.0)  # its controls long-poll is open by now
        offset = time.time() - time.perf_counter()  # the log's clock, to this one's

        def applied(seq: int) -> float:
            deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
            while time.monotonic() < deadline:
                for when, s in _APPLIED.findall(log_path.read_text()):
                    if int(s) == seq:
                        wall = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                        return wall - offset
                time.sleep(0.005)
            raise TimeoutError(f"control {seq} was not applied in {ARRIVAL_TIMEOUT_S} s")

        lat = Latencies()
        for i in range(2 * n):
            where = WHERES[i % 2]
            lat.timed_post(where, lambda w=where, i=i: bench.user[w].post(
                f"/v1/jobs/{job_id}/controls", json={
                    "kind": "adjust", "path": "layers.enc",
                    "hyper": {"eta": 1e-3 * (1 + i % 2)}}).json()["seq"], applied)
        lat.print("worker")
        time.sleep(0.5)  # the worker's report of the last one is stored by now
        rows = user.get(f"/v1/jobs/{job_id}/controls").json()
        api: dict[str, list[float]] = {w: [] for w in WHERES}
        for i, c in enumerate(rows):
            if c["resolved_at"] is None:
                continue
            span = (datetime.fromisoformat(c["resolved_at"])
                    - datetime.fromisoformat(c["created_at"])).total_seconds() * 1e3
            api[WHERES[i % 2]].append(span)
        for w in WHERES:
            print(f"{'  API':<11} {w:<5}  resolved_at - created_at: p50 {_pct(api[w], 50):6.1f}"
                  f" ms  p95 {_pct(api[w], 95):6.1f} ms", flush=True)
        user.post(f"/v1/jobs/{job_id}/cancel")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="posts of each kind, cross and same")
    ap.add_argument("--worker-n", type=int, default=60,
                    help="controls of each kind to the real worker")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()}", flush=True)
    with pg_database() as url, tempfile.TemporaryDirectory(prefix="kiln-bench-") as d:
        bench = Bench(url, Path(d) / "data")
        try:
            controls_and_events(bench, args.n)
            claims(bench, args.n)
            real_worker(bench, args.worker_n, Path(d))
        finally:
            bench.close()


if __name__ == "__main__":
    main()
