"""``serve``'s supervisor of local workers, on real processes that stand in for workers:
one that dies is replaced, later and later while it keeps dying, sooner again once one
stayed up; its jobs are handed back first; once stopped, nothing is started again."""

from __future__ import annotations

import logging
import socket
import sys
import time

import httpx
import pytest
from kiln_server import serving
from kiln_server.serving import LocalWorkers

from . import conftest

# A stand-in worker: notes when it started, then exits with status 3 at once, except the
# fifth, which first stays up a while.
STAND_IN = """
import sys, time
path = sys.argv[1]
try:
    n = len(open(path).read().splitlines())
except FileNotFoundError:
    n = 0
with open(path, "a") as f:
    f.write(f"{time.monotonic()}\\n")
time.sleep(float(sys.argv[2]) if n == 4 else 0)
sys.exit(3)
"""
FIRST_S, MAX_S, STABLE_S = 0.2, 0.8, 0.6
#: The waits before each replacement: doubling to the longest, then the first again
#: after the fifth, which stayed up STABLE_S.
DELAYS = [0.2, 0.4, 0.8, 0.8, 0.2, 0.4]


def test_a_dying_worker_is_replaced_with_a_growing_delay_reset_once_it_stays_up(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(serving, "SUPERVISE_EVERY_S", 0.02)
    caplog.set_level(logging.INFO, logger="kiln_server")
    starts_file = tmp_path / "starts"
    deaths: list[tuple[float, int]] = []

    def on_exit(pid: int) -> list[str]:
        deaths.append((time.monotonic(), pid))
        return [f"job-of-{pid}"]

    workers = LocalWorkers("http://127.0.0.1:9", "token", 1, on_exit=on_exit,
                           command=[sys.executable, "-c", STAND_IN, str(starts_file),
                                    str(STABLE_S + 0.2)],
                           first_s=FIRST_S, max_s=MAX_S, stable_s=STABLE_S)
    try:
        deadline = time.monotonic() + 60
        while len(deaths) < len(DELAYS) + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        workers.stop()
    starts = [float(t) for t in starts_file.read_text().split()]
    assert len(deaths) >= len(DELAYS) + 1 and len(starts) >= len(DELAYS) + 1
    # Each replacement came after its wait (and soon after it: a Python process took over
    # a second to start on a loaded CI machine), each death once, by pid.
    for (died, _), started, delay in zip(deaths, starts[1:], DELAYS, strict=False):
        assert delay <= started - died < delay + 3.0, (started - died, delay)
    assert len({pid for _, pid in deaths}) == len(deaths)
    restarts = [r.args for r in caplog.records if "starting another in" in r.getMessage()]
    assert [round(a[3], 3) for a in restarts[:len(DELAYS)]] == DELAYS
    assert all(a[1] == "exited with status 3" for a in restarts)
    assert restarts[4][2] >= STABLE_S  # the fifth stayed up
    handed_back = [r.getMessage() for r in caplog.records if "queued again" in r.getMessage()]
    assert handed_back[:2] == [f"queued again the job(s) local worker {pid} held: job-of-{pid}"
                               for _, pid in deaths[:2]]


def test_nothing_is_started_once_stopped(tmp_path, monkeypatch):
    """Stopped while a replacement waits: it is never started, and no process is left."""
    monkeypatch.setattr(serving, "SUPERVISE_EVERY_S", 0.02)
    starts_file = tmp_path / "starts"
    workers = LocalWorkers("http://127.0.0.1:9", "token", 2,
                           command=[sys.executable, "-c", STAND_IN, str(starts_file), "0"],
                           first_s=0.5, max_s=0.5, stable_s=60)
    deadline = time.monotonic() + 30
    while any(s.proc is not None for s in workers.slots) and time.monotonic() < deadline:
        time.sleep(0.01)  # both died; their replacements wait
    workers.stop()
    started = len(starts_file.read_text().split())
    time.sleep(1.0)  # past the replacements' wait
    assert len(starts_file.read_text().split()) == started == 2
    assert all(s.proc is None for s in workers.slots)
    assert not workers.supervisor.is_alive()


def test_a_test_server_whose_port_is_taken_first_starts_on_another(tmp_path, monkeypatch):
    """The suite's harness (conftest.Server): a free port taken by another process
    before the server binds it is not mistaken for the server (it may answer /healthz
    for another test); the server starts again on another port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, conftest.free_port()])
        monkeypatch.setattr(conftest, "free_port", lambda: next(ports))
        server = conftest.Server(tmp_path)
        try:
            assert server.port != busy
            assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        finally:
            server.stop()
        with pytest.raises(RuntimeError, match="could not bind a port"):
            conftest.Server(tmp_path, port=busy)
