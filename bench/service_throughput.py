"""The service's cost: one job trained through Kiln's server and a worker process, against
the same job trained by the engine alone; and how soon a live control takes effect.

    python bench/service_throughput.py [--rounds 7] [--epochs 24] [--controls 40]
                                       [--replicas 2]

Throughput: a real ``kiln-server serve`` (SQLite, a temporary data directory, default
settings) and a real ``kiln-server worker`` process train the job (with ``--replicas 2``:
two replicas on a fresh PostgreSQL database, the job submitted, and the controls posted,
to one, the worker attached to the other; the server CPU is both replicas'); its time is the job's
``finished_at - started_at`` (claim to finish: dataset fetch, build, training, the logs,
checkpoints, weights and state the worker posts, the final upload). The engine alone runs
the worker's own ``build_trainer`` and steps the same job in a process of its own,
started once as the worker's is; the worker's JobRun also runs it against a stub of the
server in this process (the worker's own cost, without a server competing for the
cores). Each round runs the engine, the service, the stubbed worker, and the engine
again.

The overhead (target: at most 3%) is on throughput: the job's time through the service
over its time in the engine alone. Every side runs with one BLAS thread
(``--blas-threads``): a 64->256->10 MLP gains nothing from a second one, and with two,
OpenBLAS's helper threads spin on both cores and any request the server answers takes
a core from training.

These shared machines are noisy in a way no pairing of runs fixes: the same engine-only
epoch takes 110 ms for a second or two, then 170 ms, then 110 again (measured here, in
one process, with nothing else of ours running), so two back-to-back runs of the same
job differ by up to +-25%, and a median over a few rounds moves by several %. The
benchmark therefore prints two figures:

- **whole job**: the median over interleaved rounds of the job's time through the
  service over the engine's, beside the same median for the engine against itself
  (A/A: a second engine-alone run in each round), which shows how much of it is noise;
- **from its parts**, which the verdict uses: what the service adds, measured where it
  is added, over the engine's time. Outside the steps (every run's time less its
  epochs' step time): the start (the claim's answer, the build), the end (the final
  upload and the finish), the worker's loop around the steps and its epoch rows,
  against the engine's own time outside its steps (validation, the build), round by
  round. Inside the steps, the training thread shares the worker's GIL with the
  threads that post the logs, hold the controls long-poll and heartbeat: their CPU time
  (from /proc, per thread) is at most what they took from the steps. The server runs
  on the core training leaves free (one BLAS thread). Each part is a few tens of ms,
  so the machine's +-25% moves it by a few ms, not by several % of the job.

Printed beside them: the worker's own cost outside the steps against a stub of the
server in this process, and the cost in CPU time, the worker's and the server's from
the submission's answer to the job's end against the engine alone's. The benchmark
learns that a timed job ended from the worker's log, not by asking the server, so that
its own requests (a few ms of server CPU each) do not count as the service's.

Control latency: while a long job runs, ``adjust`` controls are posted one at a time; the
latency of each is from the API's response to the moment the worker applied it at a step
boundary (the worker's log line, same machine, same clock), in milliseconds and in steps
(target: p95 at most one step or 100 ms). Controls reach the worker through its controls
long-poll as soon as they are stored; the server runs with its default settings (the
heartbeat, every 5 s, only renews the lease and is the fallback). The benchmark learns
that a control applied from the worker's log, not by asking the server, and one step is
the job's mean step time then.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _server import LocalServer, pg_database
from _timing import cpu_s, machine
from kiln_server.schemas import JobCreate
from kiln_server.settings import Settings
from kiln_server.worker.build import build_trainer
from kiln_server.worker.client import WorkerClient
from kiln_server.worker.run import JobRun
from threadpoolctl import threadpool_limits

#: Samples, features and classes of the synthetic data set (a noisy linear teacher).
SAMPLES, FEATURES, CLASSES = 16384, 64, 10
_APPLIED = re.compile(r"^(\S+ \S+) kiln_server\.worker\.run job \w+: control (\d+) .* applied "
                      r"from step (\d+)", re.M)


def dataset() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES + 1024, FEATURES)).astype(np.float32)
    logits = x @ rng.standard_normal((FEATURES, CLASSES)) + rng.standard_normal(
        (len(x), CLASSES))
    y = logits.argmax(1).astype(np.int64)
    return {"x": x[:SAMPLES], "y": y[:SAMPLES], "xv": x[SAMPLES:], "yv": y[SAMPLES:]}


#: The server's defaults, which the benchmark runs with (the stub tells them at claim).
DEFAULTS = {k: Settings.model_fields[k].default for k in (
    "heartbeat_interval_s", "log_interval_s", "checkpoint_interval_s")}
#: How often the benchmark asks the server about a job outside the timed runs.
POLL_S = 0.05
#: How often it reads the worker's log for the end of a timed run. The timings are the
#: server's started_at and finished_at, so this costs no precision.
LOG_POLL_S = 0.05
#: A pause before each timed run, so that none starts while the previous one's BLAS
#: threads still spin on the cores (OpenBLAS's wait for more work) or its process winds
#: down.
SETTLE_S = 0.3

#: The hidden width and batch size (--hidden, --batch set them).
HIDDEN, BATCH = 256, 64


def job_spec(dataset_id: str, epochs: int) -> dict[str, Any]:
    return {
        "model": {"type": "Chain", "layers": {
            "enc": {"type": "Dense", "in": FEATURES, "out": HIDDEN, "activation": "relu"},
            "dec": {"type": "Dense", "in": HIDDEN, "out": CLASSES}}},
        "optimiser": {"rule": "Adam", "eta": 0.001}, "loss": "logitcrossentropy",
        "train": {"dataset": dataset_id, "x": "x", "y": "y"},
        "validation": {"dataset": dataset_id, "x": "xv", "y": "yv"},
        "batch_size": BATCH, "epochs": epochs, "seed": 0, "metrics": ["loss", "accuracy"]}


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread so far, to the ns (the scheduler's count);
    NaN off Linux."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclasses.dataclass
class Run:
    """One timed run of the job: its seconds, and each epoch's step time (the engine's
    EpochRecord.seconds: the time inside Trainer.step, without validation)."""

    seconds: float
    epochs: list[float]
    cpu: float = math.nan  # the engine's, or the worker's
    server_cpu: float = math.nan
    other_threads_cpu: float = math.nan  # the worker's, besides its training thread

    @property
    def outside(self) -> float:
        """Seconds outside the steps: start, end, validation, the loop around the steps."""
        return self.seconds - sum(self.epochs)


def engine_alone(spec: dict[str, Any], dataset_id: str, arrays: dict[str, np.ndarray]) -> Run:
    """The engine building and training the job as the worker would, in this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = build_trainer(JobCreate(**spec).model_dump(mode="json"), {dataset_id: arrays})
    total = spec["epochs"] * len(trainer.loader)
    while trainer.steps < total:
        trainer.step()
    return Run(time.perf_counter() - t0, [r.seconds for r in trainer.history],
               cpu=time.process_time() - c0)


class EngineProcess:
    """The engine alone in a process of its own, started once and kept, as the worker's
    is: the two sides then differ only in what the service adds (the benchmark's own
    process holds the server's clients, the stub, and every run's garbage)."""

    def __init__(self, blas_threads: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--engine-child", "--blas-threads", str(blas_threads),
             "--hidden", str(HIDDEN), "--batch", str(BATCH)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, spec: dict[str, Any], dataset_id: str) -> Run:
        self.proc.stdin.write(json.dumps({"spec": spec, "dataset_id": dataset_id}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the engine's process ended")
        return Run(**json.loads(line))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def engine_child() -> None:
    """The EngineProcess's side: one job a line on stdin, its Run a line on stdout."""
    arrays = dataset()
    logging.disable(logging.INFO)
    for line in sys.stdin:
        job = json.loads(line)
        run = engine_alone(job["spec"], job["dataset_id"], arrays)
        print(json.dumps(dataclasses.asdict(run)), flush=True)


class Service:
    """A server and one worker process in a temporary directory; with ``replicas=2``,
    two servers on one fresh PostgreSQL database and one data directory, the user on
    the first and the worker on the second."""

    def __init__(self, root: Path, replicas: int = 1) -> None:
        self._stack = contextlib.ExitStack()
        env = {"PYTHONUNBUFFERED": "1"}
        if replicas == 1:
            self.servers = [self._stack.enter_context(LocalServer(env=env))]
        else:
            url = self._stack.enter_context(pg_database())
            self.servers = [self._stack.enter_context(LocalServer(
                env=env, database_url=url, data_dir=root / "data")) for _ in range(replicas)]
        first, last = self.servers[0], self.servers[-1]
        self.user = httpx.Client(base_url=first.url, timeout=60, headers={
            "Authorization": f"Bearer {first.token('bench')}"})
        self.worker_log = root / "worker.log"
        with open(self.worker_log, "w") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "kiln_server", "worker", "--url", last.url, "--token",
                 first.token("bench-worker", worker=True)],
                env={**os.environ, "PYTHONUNBUFFERED": "1",
                     "KILN_WORKER_CACHE": str(root / "cache")},
                stdout=log, stderr=subprocess.STDOUT)

    def upload(self, arrays: dict[str, np.ndarray]) -> str:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        r = self.user.post("/v1/datasets", content=buf.getvalue())
        r.raise_for_status()
        return r.json()["id"]

    def submit(self, spec: dict[str, Any]) -> str:
        r = self.user.post("/v1/jobs", json=spec)
        r.raise_for_status()
        return r.json()["id"]

    def wait(self, job_id: str, until: tuple[str, ...]) -> dict[str, Any]:
        """The job once its status is in ``until``."""
        while (job := self.user.get(f"/v1/jobs/{job_id}").json())["status"] not in until:
            time.sleep(POLL_S)
        return job

    def ended(self, job_id: str) -> None:
        """Wait until the worker logs the job's end: the benchmark reads the worker's log
        file instead of asking the server, whose few ms of CPU per request would count
        as the service's cost."""
        mark = f"job {job_id}: finished"
        while mark not in self.worker_log.read_text():
            time.sleep(LOG_POLL_S)

    def close(self) -> None:
        self.worker.terminate()
        self.worker.wait(30)
        self._stack.close()


class _StubServer:
    """The worker API answered in-process at once (httpx.MockTransport): what the worker
    itself costs, without a server process competing for the cores."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.data = buf.getvalue()
        self.sha = hashlib.sha256(self.data).hexdigest()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(self.sha):
            return httpx.Response(200, content=self.data)
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(200, json={"lease_expires_at": _in(60), "action": "continue",
                                             "controls": []})
        if request.method == "GET" and request.url.path.endswith("/controls"):
            # Nothing new: held for the poll's whole wait, as the server does.
            time.sleep(float(request.url.params["wait_s"]))
            return httpx.Response(200, json={"seq": 0, "action": "continue", "controls": []})
        return httpx.Response(204)


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def worker_stubbed(stub: _StubServer, spec: dict[str, Any], cache: Path) -> Run:
    """The worker's JobRun running the job against the stub."""
    claim = {"job_id": "bench", "lease_token": "lease", "lease_expires_at": _in(60),
             **DEFAULTS, "attempt": 1,
             "spec": JobCreate(**spec).model_dump(mode="json"),
             "datasets": {spec["train"]["dataset"]: {"sha256": stub.sha}}, "controls": [],
             "checkpoint": None}
    client = WorkerClient("http://stub", "token", transport=httpx.MockTransport(stub))
    t0 = time.perf_counter()
    job = JobRun(client, claim, device="cpu", cache=cache, shutdown=threading.Event())
    job.run()
    return Run(time.perf_counter() - t0, [r.seconds for r in job.trainer.history])


def through_service(svc: Service, spec: dict[str, Any]) -> Run:
    """The job run through the service, from its claim to its finish (the server's
    timestamps), with the CPU seconds the worker (and its threads besides the training
    one) and the server spent from its submission's answer to its end (an idle worker's
    claim attempts until then included)."""
    worker_pid = svc.worker.pid

    def cpu() -> tuple[float, float, float]:  # the training thread is the worker's main one
        return (cpu_s(worker_pid), main_thread_cpu_s(worker_pid),
                sum(cpu_s(s.proc.pid) for s in svc.servers))

    job_id = svc.submit(spec)  # checking a submission is not training: not counted
    before = cpu()
    svc.ended(job_id)
    worker, training, server = (b - a for a, b in zip(before, cpu()))
    job = svc.user.get(f"/v1/jobs/{job_id}").json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the benchmark job ended {job['status']}: {job['error']}")
    started, ended = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    rows = svc.user.get(f"/v1/jobs/{job_id}/epochs").json()
    return Run((ended - started).total_seconds(), [r["duration_s"] for r in rows],
               cpu=worker, server_cpu=server, other_threads_cpu=worker - training)


def control_latency(svc: Service, dataset_id: str, n: int) -> tuple[list[float], float]:
    """Seconds from each control's API response to its application, and seconds per step."""
    job_id = svc.submit(job_spec(dataset_id, 10_000))
    while not svc.user.get(f"/v1/jobs/{job_id}/epochs").json():
        time.sleep(0.05)
    answered: dict[int, float] = {}

    def applied() -> dict[int, float]:
        return {int(seq): datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for when, seq, _ in _APPLIED.findall(svc.worker_log.read_text())}

    for i in range(n):
        r = svc.user.post(f"/v1/jobs/{job_id}/controls", json={
            "kind": "adjust", "path": "layers.enc", "hyper": {"eta": 1e-3 * (1 + i % 2)}})
        answered[r.json()["seq"]] = time.time()
        while r.json()["seq"] not in applied():
            time.sleep(0.01)
        time.sleep(0.05 * (i % 3))  # arrive at different points of a step
    svc.user.post(f"/v1/jobs/{job_id}/cancel")
    svc.wait(job_id, ("cancelled",))
    done = applied()
    rows = svc.user.get(f"/v1/jobs/{job_id}/epochs").json()
    step_s = sum(r["duration_s"] for r in rows) / (len(rows) * -(-SAMPLES // BATCH))
    return [done[s] - t for s, t in answered.items()], step_s


def _median_ratio(a: list[Run], b: list[Run]) -> float:
    """The median over rounds of b's seconds over a's, minus one."""
    return statistics.median(y.seconds / x.seconds for x, y in zip(a, b)) - 1


def report(epochs: int, alone: list[Run], again: list[Run], served: list[Run],
           stubbed: list[Run]) -> None:
    steps = epochs * -(-SAMPLES // BATCH)

    def med(runs: list[Run], key: Callable[[Run], float]) -> float:
        return statistics.median(key(r) for r in runs)

    def outside_extra(runs: list[Run]) -> float:
        """Median seconds outside the steps over the engine's, round by round."""
        return statistics.median(r.outside - a.outside for a, r in zip(alone, runs))

    print(f"job: Dense {FEATURES}->{HIDDEN}->{CLASSES} with Adam, {SAMPLES} samples, "
          f"batch {BATCH}, {epochs} epochs ({steps} steps), validation each epoch")
    base = med(alone, lambda r: r.seconds)
    print(f"engine alone   : {base:.3f} s ({steps * BATCH / base:,.0f} samples/s), "
          f"{med(alone, lambda r: r.cpu):.2f} CPU-s")
    print(f"through service: {med(served, lambda r: r.seconds):.3f} s "
          f"({steps * BATCH / med(served, lambda r: r.seconds):,.0f} samples/s), CPU-s: "
          f"worker {med(served, lambda r: r.cpu):.2f} + server "
          f"{med(served, lambda r: r.server_cpu):.2f}")
    print(f"worker, server stubbed in-process: {med(stubbed, lambda r: r.seconds):.3f} s; "
          f"outside the steps {outside_extra(stubbed) * 1e3:+.0f} ms over the engine (the "
          f"worker's own cost)")
    whole, whole_aa = _median_ratio(alone, served), _median_ratio(alone, again)
    spread = ", ".join(f"{s.seconds / a.seconds - 1:+.0%}" for a, s in zip(alone, served))
    aa_rounds = [b.seconds / a.seconds - 1 for a, b in zip(alone, again)]
    print(f"service overhead, whole job: {whole:+.1%} (median of {len(alone)} interleaved "
          f"rounds; per round {spread}); the engine against itself the same way (A/A): "
          f"{whole_aa:+.1%}, rounds {min(aa_rounds):+.0%} to {max(aa_rounds):+.0%}")
    outside, threads = outside_extra(served), med(served, lambda r: r.other_threads_cpu)
    overhead = (outside + threads) / base
    print(f"service overhead from its parts: {overhead:+.1%} target <= +3%: "
          f"{'met' if overhead <= 0.03 else 'NOT met'}")
    print(f"  {outside * 1e3:+.0f} ms outside the steps (the start, the end, the worker's "
          f"loop; the engine's A/A: {outside_extra(again) * 1e3:+.0f} ms) + "
          f"{threads * 1e3:.0f} ms CPU of the worker's other threads (posts, heartbeats, the "
          f"long-poll: at most what they took from the steps) over the engine's {base:.2f} s")
    def epoch_ratio(runs: list[Run]) -> float:
        return statistics.median(e for r in runs for e in r.epochs) / \
            statistics.median(e for r in alone for e in r.epochs) - 1

    print(f"  inside the steps, for comparison: the median epoch's step time "
          f"{epoch_ratio(served):+.1%} (A/A {epoch_ratio(again):+.1%})")
    cpu = statistics.median((s.cpu + s.server_cpu) / a.cpu for a, s in zip(alone, served)) - 1
    print(f"  in CPU time (worker + server over engine alone): {cpu:+.1%}")


def main() -> None:
    global HIDDEN, BATCH
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--controls", type=int, default=40)
    p.add_argument("--replicas", type=int, default=1, choices=[1, 2],
                   help="2: two API replicas on PostgreSQL, the job submitted to one and "
                   "the worker attached to the other")
    p.add_argument("--hidden", type=int, default=HIDDEN)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads of every side (default 1: see the module's docstring)")
    p.add_argument("--engine-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    HIDDEN, BATCH = args.hidden, args.batch
    threadpool_limits(args.blas_threads)
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.blas_threads)
    if args.engine_child:
        engine_child()
        return
    print(machine())
    arrays = dataset()
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(Path(tmp), args.replicas)
        engine = EngineProcess(args.blas_threads)
        try:
            ds = svc.upload(arrays)
            spec = job_spec(ds, args.epochs)
            stub, cache = _StubServer(arrays), Path(tmp) / "stub-cache"
            # Warm-up: the worker caches the data set, and both sides start their BLAS
            # threads.
            engine.run(spec, ds)
            through_service(svc, spec)
            worker_stubbed(stub, spec, cache)
            alone, again, served, stubbed = [], [], [], []
            for _ in range(args.rounds):
                for runs, run in ((alone, lambda: engine.run(spec, ds)),
                                  (served, lambda: through_service(svc, spec)),
                                  (stubbed, lambda: worker_stubbed(stub, spec, cache)),
                                  (again, lambda: engine.run(spec, ds))):
                    time.sleep(SETTLE_S)
                    runs.append(run())
            report(args.epochs, alone, again, served, stubbed)
            lat, step_s = control_latency(svc, ds, args.controls)
        finally:
            engine.close()
            svc.close()
    q = statistics.quantiles(lat, n=20)
    p50, p95 = statistics.median(lat), q[18]
    print(f"control latency over {len(lat)} adjusts (default settings: heartbeat every "
          f"{DEFAULTS['heartbeat_interval_s']} s, controls by long-poll; one step = "
          f"{step_s * 1e3:.2f} ms): p50 {p50 * 1e3:.0f} ms "
          f"({p50 / step_s:.1f} steps), p95 {p95 * 1e3:.0f} ms ({p95 / step_s:.1f} steps), "
          f"max {max(lat) * 1e3:.0f} ms; target p95 <= 1 step or 100 ms: "
          f"{'met' if p95 <= max(step_s, 0.1) else 'NOT met'}")


if __name__ == "__main__":
    main()
