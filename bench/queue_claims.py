"""The queue under many workers: claims per second and claim latency at 1, 8 and 32
workers, on SQLite and on PostgreSQL (target: at least 500 claims/s on PostgreSQL with 32
workers).

    python bench/queue_claims.py [--workers 1 8 32] [--backends sqlite postgresql]
                                 [--layers transaction http] [--seconds 4] [--depth 2000]
                                 [--owners 1]

Two layers, side by side, on the same fresh database of each backend (SQLite: a file in
a temporary directory; PostgreSQL: a new database at 127.0.0.1:5432, dropped after):

- **transaction**: the claim as the server runs it, without HTTP: ``N`` threads of this
  process (as the server's thread pool runs them), each a registered worker, claim in a
  loop through the server's own session factory (``db.make_engine`` with its connection
  pool, ``make_sessionmaker``, ``session_scope``), what the claim route's transaction
  does (``queue.worker_for``, ``queue.claim``, ``queue.claimed_context``), then finish
  the job (``queue.finish``, succeeded) in a second transaction, as fast as they can.
  The latency is the claim's transaction, commit included.
- **HTTP**: a real ``kiln-server serve --workers 0`` on the same database, ``N``
  concurrent clients (one keep-alive connection each, a minimal asyncio HTTP/1.1 client
  in this process, so the client takes as little as it can of the 2 cores the server
  shares), each ``POST /v1/worker/register`` once, then ``POST /v1/worker/claim``
  ``{worker_id, wait_s: 0}`` and ``POST /v1/worker/jobs/{id}/finish`` in a loop. The
  latency is the claim request's, as the client sees it.

Claims per second count the claims answered in the measured window (after a warm-up of
``--warmup`` s) over its length; each claim is followed by its finish, so the rate is of
whole claim + finish cycles; with ``--claims-only`` each worker claims again at once
(holding its jobs, as a fleet of workers starting does), so the rate is of claims alone.
Printed beside them: the CPU a claim (with its finish) cost
the process that ran it (this one, or the server) and PostgreSQL's backends, which says
where the time goes better than the rate on a loaded machine.

Before each run the queue is topped up to ``--depth`` queued jobs (the claim's pick
reads the queued jobs in order, so the depth matters), in transactions of 1,000, by
``services.jobs.create`` (the validation and insert that ``POST /v1/jobs`` runs, without
HTTP), from one spec on a tiny dataset whose row is written directly (its blob is never
fetched: nothing trains). The finished jobs stay in the table, as they do in use.
``--owners K`` spreads the jobs over K users (on PostgreSQL a transaction that changes a
job takes its owner's stamp lock, services/stamps.py). The machine's load average is
printed with each figure: other people's work shares these cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _server import LocalServer, pg_database
from _timing import cpu_s
from kiln_server import migrate
from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.models import Dataset, Job, JobStatus, User
from kiln_server.schemas import Finish, JobCreate, WorkerRegister
from kiln_server.services import auth, jobs, queue
from kiln_server.services.datasets import inspect_npz
from kiln_server.settings import Settings
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

#: A job as small as a valid one gets: nothing trains it, only the queue sees it.
SPEC = {"model": {"type": "Chain", "layers": [{"type": "Dense", "in": 4, "out": 2}]},
        "optimiser": {"rule": "Adam", "eta": 0.001}, "loss": "logitcrossentropy",
        "batch_size": 4, "epochs": 1}
#: Jobs queued per transaction while filling the queue.
FILL_BATCH = 1000


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """A new database's URL on ``backend``, gone afterwards."""
    if backend == "postgresql":
        with pg_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="kiln-bench-") as d:
            yield f"sqlite:///{d}/kiln.db"


@dataclass
class Run:
    """One run's claims: when each was answered and how long it took, in seconds."""

    at: list[float]
    latency: list[float]
    start: float
    end: float
    dry: bool = False  # the queue ran out before the run's end

    def line(self, label: str, warmup: float, extra: str = "") -> str:
        lo = self.start + warmup
        lat = sorted(x for t, x in zip(self.at, self.latency, strict=True) if t >= lo)
        end = max(self.at) if self.dry else self.end
        rate = len(lat) / (end - lo) if lat else 0.0
        p50 = statistics.median(lat) * 1e3 if lat else float("nan")
        p95 = lat[int(0.95 * (len(lat) - 1))] * 1e3 if lat else float("nan")
        load = os.getloadavg()[0]
        return (f"{label:<28} {rate:7.0f} claims/s   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms"
                f"   ({len(lat)} claims{', queue ran dry' if self.dry else ''}; load "
                f"{load:.1f}{extra})")


class Queue:
    """A fresh database, migrated as the server migrates it, with users and a worker
    token, that queues jobs through the services."""

    def __init__(self, url: str, owners: int) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate.upgrade(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.settings = Settings(database_url=url)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "tiny.npz"
            rng = np.random.default_rng(0)
            np.savez(path, x=rng.random((8, 4), dtype=np.float32), y=rng.integers(0, 2, 8))
            arrays, size = inspect_npz(path), path.stat().st_size
        self.specs: list[tuple[str, JobCreate]] = []
        with session_scope(self.sessions) as session:
            for i in range(owners):
                token, _ = auth.create_token(session, f"bench-{i}")
                ds = Dataset(owner_id=token.user_id, name="tiny", sha256="0" * 64,
                             size_bytes=size, arrays=arrays)
                session.add(ds)
                session.flush()
                self.specs.append((token.user_id, JobCreate.model_validate(
                    {**SPEC, "train": {"dataset": ds.id, "x": "x", "y": "y"}})))
            self.worker_token, self.worker_secret = auth.create_token(session, "bench-worker",
                                                                      worker=True)

    def fill(self, depth: int) -> float:
        """Queue jobs, round-robin over the owners, until ``depth`` are queued; the seconds
        it took."""
        t0 = time.perf_counter()
        with session_scope(self.sessions) as session:
            n = depth - session.scalar(select(func.count()).where(
                Job.status == JobStatus.queued))
        for first in range(0, n, FILL_BATCH):
            with session_scope(self.sessions) as session:
                owners = [session.get(User, o) for o, _ in self.specs]
                for i in range(first, min(n, first + FILL_BATCH)):
                    k = i % len(self.specs)
                    jobs.create(session, owners[k], self.specs[k][1], self.settings)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.engine.dispose()


def transaction_run(q: Queue, workers: int, seconds: float, finish: bool) -> Run:
    """``workers`` threads claiming (and finishing, with ``finish``) through the services
    for ``seconds``."""
    sessions: sessionmaker[Session] = q.sessions
    with session_scope(sessions) as session:
        ids = [queue.register(session, q.worker_token, WorkerRegister(name=f"w{i}",
                                                                      device={})).id
               for i in range(workers)]
    done = Finish(status="succeeded", epoch=0, step=0)
    at: list[float] = []
    latency: list[float] = []
    dry = threading.Event()
    start = time.perf_counter()
    end = start + seconds

    def work(worker_id: str) -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            with session_scope(sessions) as session:  # a claim transaction, of one claim
                (worker,) = queue.workers_seen(session, [(q.worker_token.id, worker_id)])
                (job,) = queue.claim(session, [worker], q.settings.lease_s)
                if job is None:
                    dry.set()
                    return
                queue.claimed_context(session, [job])
                job_id, lease = job.id, job.lease_token
            t1 = time.perf_counter()
            at.append(t1)  # list.append is atomic under the GIL
            latency.append(t1 - t0)
            if finish:
                with session_scope(sessions) as session:
                    queue.finish(session, job_id, lease, done)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Run(at, latency, start, end, dry.is_set())


class _Conn:
    """One keep-alive HTTP/1.1 connection: as little client as can be, so that the cores
    go to the server. Bodies are JSON; responses carry a Content-Length (uvicorn's do)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 token: str) -> None:
        self.reader, self.writer = reader, writer
        self.auth = f"Authorization: Bearer {token}\r\n"

    async def post(self, path: str, body: object, headers: str = "") -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: bench\r\n{self.auth}{headers}"
                          f"Content-Type: application/json\r\nContent-Length: {len(data)}"
                          f"\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""


async def _http_run(urls: list[str], secret: str, workers: int, seconds: float,
                    finish: bool) -> Run:
    at: list[float] = []
    latency: list[float] = []
    dry = False
    conns = []
    for i in range(workers):  # the workers spread over the replicas
        host, port = urls[i % len(urls)].removeprefix("http://").split(":")
        conns.append(_Conn(*await asyncio.open_connection(host, int(port)), secret))
    ids = []
    for c in conns:
        status, body = await c.post("/v1/worker/register", {"name": "bench", "device": {}})
        assert status == 201, body
        ids.append(json.loads(body)["id"])
    start = time.perf_counter()
    end = start + seconds

    async def work(c: _Conn, worker_id: str) -> None:
        nonlocal dry
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            status, body = await c.post("/v1/worker/claim", {"worker_id": worker_id,
                                                             "wait_s": 0})
            t1 = time.perf_counter()
            if status == 204:
                dry = True
                return
            assert status == 200, body
            at.append(t1)
            latency.append(t1 - t0)
            if not finish:
                continue
            claimed = json.loads(body)
            status, body = await c.post(
                f"/v1/worker/jobs/{claimed['job_id']}/finish",
                {"status": "succeeded", "epoch": 0, "step": 0},
                f"Kiln-Lease: {claimed['lease_token']}\r\n")
            assert status == 204, body

    await asyncio.gather(*(work(c, i) for c, i in zip(conns, ids, strict=True)))
    for c in conns:
        c.writer.close()
    return Run(at, latency, start, end, dry)


def http_run(servers: list[LocalServer], q: Queue, workers: int, seconds: float,
             finish: bool) -> Run:
    return asyncio.run(_http_run([s.url for s in servers], q.worker_secret, workers, seconds,
                                 finish))


def _pg_cpu_s(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``url``'s database (the
    server runs on this machine); empty for SQLite."""
    if not url.startswith("postgresql"):
        return {}
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        pids = [p for (p,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname "
                                           "= current_database() AND pid <> pg_backend_pid()")]
    return {p: cpu_s(p) for p in pids}


def _measure(label: str, q: Queue, depth: int, warmup: float, run: Callable[[], Run],
             pids: list[int] | None = None) -> None:
    """Fill the queue, run, print the run's line: the rate and latencies, and the CPU
    each claim (with its finish) cost the process that ran it (this one, or the server)
    and PostgreSQL's backends (those connected at the end; one that left meanwhile is
    not counted)."""
    fill_s = q.fill(depth)
    time.sleep(0.5)  # let the fill's work settle
    pg0 = _pg_cpu_s(q.url)
    def cpu_now() -> float:
        return sum(cpu_s(p) for p in pids) if pids else time.process_time()

    cpu0 = cpu_now()
    r = run()
    cpu = cpu_now() - cpu0
    pg = sum(s - pg0.get(p, 0.0) for p, s in _pg_cpu_s(q.url).items())
    n = max(len(r.at), 1)
    extra = f"; CPU a claim: {'server' if pids else 'this process'} {cpu / n * 1e3:.1f} ms"
    if q.url.startswith("postgresql"):
        extra += f", PostgreSQL {pg / n * 1e3:.1f} ms"
    print(r.line(label, warmup, extra + f"; fill {fill_s:.1f} s"), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"])
    ap.add_argument("--layers", nargs="+", default=["transaction", "http"],
                    choices=["transaction", "http"])
    ap.add_argument("--seconds", type=float, default=4.0, help="each run's length")
    ap.add_argument("--warmup", type=float, default=0.5,
                    help="seconds at the start of each run left out of its figures")
    ap.add_argument("--owners", type=int, default=1, help="users the jobs belong to")
    ap.add_argument("--claims-only", action="store_true",
                    help="no finishes: each worker claims again at once, its jobs held (a "
                    "burst of claims, as when a fleet of workers starts)")
    ap.add_argument("--replicas", type=int, default=1,
                    help="HTTP: API replicas on the one database and data directory, the "
                    "workers spread over them (their CPU summed)")
    ap.add_argument("--depth", type=int, default=2000,
                    help="jobs queued at the start of each run (topped up before each)")
    args = ap.parse_args()

    print(f"{os.cpu_count()} cores; load average {os.getloadavg()}; {args.seconds:g} s "
          f"runs from {args.depth} queued jobs, of {args.owners} owner(s)", flush=True)
    finish = not args.claims_only
    for backend in args.backends:
        with fresh_database(backend) as url:
            q = Queue(url, args.owners)
            try:
                if "transaction" in args.layers:
                    for n in args.workers:
                        _measure(f"{backend} transaction N={n}", q, args.depth, args.warmup,
                                 lambda n=n: transaction_run(q, n, args.seconds, finish))
                if "http" in args.layers:
                    with contextlib.ExitStack() as stack:
                        shared = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                        servers = [stack.enter_context(LocalServer(
                            database_url=url, data_dir=shared)) for _ in range(args.replicas)]
                        label = "HTTP" if args.replicas == 1 else f"HTTP x{args.replicas}"
                        for n in args.workers:
                            _measure(f"{backend} {label} N={n}", q, args.depth, args.warmup,
                                     lambda n=n: http_run(servers, q, n, args.seconds, finish),
                                     [s.proc.pid for s in servers])
            finally:
                q.close()


if __name__ == "__main__":
    main()
