"""The SDK's AsyncClient following the event streams of many running jobs at once.

    python bench/client_events.py [--jobs 100] [--epochs 20] [--interval 1.0]

A real ``kiln-server serve`` (SQLite, no local workers) queues ``--jobs`` jobs; a fleet of
simulated workers in a process of its own (one thread per job, through the worker API
with the worker's own ``WorkerClient``: claim, then every ``--interval`` seconds a batch
of step losses and an epoch row, then finish) keeps them all running at once without
training anything, so the cores go to the server and the client. This process follows
every job's stream with one ``AsyncClient`` (one ``job.events()`` task per job) from
before the first claim until each job has finished, and reports:

- whether every event was delivered once: per job, the epoch rows 1..epochs and the step
  batches covering each step exactly once, the final status, and no event id twice;
- the client's CPU time per event (this process's user + system time over the run, so
  it includes the SDK's SSE parsing, JSON decoding and httpx), and events per second;
- beside it, the server's CPU per event over the same time (it also serves the fleet).

The peer here is the server: the client's CPU per event against the server's wall time
per event tells whether the SDK could ever be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
from _server import LocalServer
from _timing import cpu_s

STEPS_PER_EPOCH = 10
#: A simulated worker heartbeats every this many epochs (at the default interval, every
#: 5 s, as a real one does).
HEARTBEAT_EVERY = 5


def _fleet(url: str, token: str, jobs: int, epochs: int, interval: float) -> None:
    """Claim ``jobs`` jobs (a registered worker each) and report synthetic progress."""
    from kiln_server.worker.client import WorkerClient

    client = WorkerClient(url, token)
    barrier = threading.Barrier(jobs)

    def run(i: int) -> None:
        worker = client.register(f"fleet-{i}", {"kind": "cpu", "name": "simulated"})
        claim = None
        while claim is None:
            claim = client.claim(worker, wait_s=5)
        job, lease = claim["job_id"], claim["lease_token"]
        barrier.wait()  # every job running before any reports
        rng = np.random.default_rng(i)
        for e in range(1, epochs + 1):
            first = (e - 1) * STEPS_PER_EPOCH + 1
            losses = [float(v) for v in rng.random(STEPS_PER_EPOCH)]
            row = {"epoch": e, "train_loss": float(np.mean(losses)), "metrics": {},
                   "learning_rates": {"": 0.001}, "duration_s": interval}
            client.post_logs(job, lease, {"epoch": e, "first_step": first, "losses": losses},
                             [row], e * STEPS_PER_EPOCH)
            if e % HEARTBEAT_EVERY == 0:
                client.heartbeat(job, lease, e, e * STEPS_PER_EPOCH)
            time.sleep(interval)
        client.finish(job, lease, "succeeded", epochs, epochs * STEPS_PER_EPOCH)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def _follow_all(url: str, token: str, job_ids: list[str]) -> dict[str, list]:
    """Every job's events, each job followed by a task of its own, all on one client."""
    from kiln_client import AsyncClient

    async with AsyncClient(url, token, max_connections=len(job_ids) + 10) as kiln:
        jobs = [await kiln.jobs.get(j) for j in job_ids]

        async def follow(job: Any) -> tuple[str, list]:
            return job.id, [e async for e in job.events()]

        done = await asyncio.gather(*(follow(j) for j in jobs))
    return dict(done)


def _check(events: list, epochs: int) -> str | None:
    """What is wrong with one job's events, or None."""
    ids = [e.id for e in events]
    if len(set(ids)) != len(ids):
        return "an event id came twice"
    rows = [e.data["epoch"] for e in events if e.kind == "epoch"]
    if rows != list(range(1, epochs + 1)):
        return f"epoch rows {rows}"
    steps = [s for e in events if e.kind == "steps"
             for s in range(e.data["first_step"], e.data["first_step"] + len(e.data["losses"]))]
    if steps != list(range(1, epochs * STEPS_PER_EPOCH + 1)):
        return f"steps {steps[:5]}... ({len(steps)})"
    if events[-1].kind != "status" or events[-1].data["status"] != "succeeded":
        return f"last event {events[-1]}"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between a job's log posts (a real worker's log_interval_s)")
    p.add_argument("--fleet", nargs=2, metavar=("URL", "TOKEN"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fleet:
        _fleet(*args.fleet, args.jobs, args.epochs, args.interval)
        return 0

    from kiln_client import Client

    fleet = None
    with LocalServer() as server:
        worker_token = server.token("fleet", worker=True)
        with Client(server.url, server.admin_token) as kiln:
            ds = kiln.datasets.upload("tiny", x=np.zeros((8, 4), np.float32),
                                      y=np.zeros(8, np.int64))
            job_ids = [kiln.jobs.submit(
                model={"type": "Dense", "in": 4, "out": 2}, optimiser={"rule": "Adam"},
                loss="logitcrossentropy", train=ds, batch_size=8, epochs=args.epochs).id
                for _ in range(args.jobs)]
        fleet = subprocess.Popen([sys.executable, __file__, "--fleet", server.url,
                                  worker_token, "--jobs", str(args.jobs), "--epochs",
                                  str(args.epochs), "--interval", str(args.interval)])
        try:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            server0 = cpu_s(server.proc.pid)
            followed = asyncio.run(_follow_all(server.url, server.admin_token, job_ids))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            server_cpu = cpu_s(server.proc.pid) - server0
            if fleet.wait(60) != 0:
                print("the simulated fleet failed", file=sys.stderr)
                return 1
        finally:
            if fleet.poll() is None:
                fleet.kill()

    problems = {j: why for j, events in followed.items() if (why := _check(events, args.epochs))}
    total = sum(len(e) for e in followed.values())
    print(f"{args.jobs} jobs x {args.epochs} epochs followed at once by one AsyncClient: "
          f"{total} events in {wall:.1f} s ({total / wall:.0f}/s)")
    print(f"  every event delivered once: {'yes' if not problems else 'NO'}")
    for job_id, why in list(problems.items())[:5]:
        print(f"    job {job_id}: {why}")
    print(f"  client CPU: {cpu:.2f} s, {1e6 * cpu / total:.0f} us per event "
          f"({100 * cpu / wall:.0f}% of one core)")
    print(f"  server CPU meanwhile (streams, the fleet's posts, everything): {server_cpu:.1f} s, "
          f"{1e6 * server_cpu / total:.0f} us per event")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
