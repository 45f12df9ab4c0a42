"""``kiln jobs`` over 1,000 jobs, end to end: from the process's start to its exit, as a
user types it (target: under 1 s).

    python bench/cli_jobs.py [--jobs 1000] [--runs 9]

A real ``kiln-server serve`` (SQLite, a temporary data directory, no workers, so every
job stays queued) holds ``--jobs`` small jobs of one user. The installed ``kiln`` console
script then lists them, ``kiln jobs`` (the table) and ``kiln jobs --json``, each run
``--runs`` times as a subprocess, alternating, with its output piped and checked (a
line per job and a header; one line of compact JSON); the median and the fastest run
are printed.

Beside them, where the time goes, each part measured on its own: the interpreter's start
(``python -c pass``), importing the CLI, a command that sends no request (``kiln logout``
with no saved config: the imports, Typer's parsing, the exit), the requests
(``client.jobs.list`` with the CLI's page size, in this process: the server's time plus
decoding), ``kiln jobs`` in this process (after the imports), and the table alone.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from _server import LocalServer

KILN = str(Path(sys.executable).with_name("kiln"))

MODEL = {"type": "Chain", "layers": {
    "enc": {"type": "Dense", "in": 8, "out": 8, "activation": "relu"},
    "dec": {"type": "Dense", "in": 8, "out": 3}}}


def _submit(url: str, token: str, jobs: int) -> None:
    """``jobs`` small queued jobs on one small dataset."""
    from kiln_client import Client

    rng = np.random.default_rng(0)
    with Client(url, token) as client:
        ds = client.datasets.upload("tiny", x=rng.random((32, 8), dtype=np.float32),
                                    y=rng.integers(0, 3, 32))
        for i in range(jobs):
            client.jobs.submit(model=MODEL, optimiser={"rule": "Adam", "eta": 0.001},
                               loss="logitcrossentropy", train=(ds, "x", "y"),
                               batch_size=8, epochs=10, name=f"job-{i}")


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _process(args: Sequence[str], env: dict[str, str], expect_lines: int | None) -> None:
    r = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    if expect_lines is not None and len(r.stdout.splitlines()) != expect_lines:
        raise RuntimeError(f"{args}: {len(r.stdout.splitlines())} lines, not {expect_lines}")


def _report(what: str, seconds: list[float]) -> None:
    print(f"  {what:<36} median {statistics.median(seconds) * 1000:6.0f} ms   "
          f"min {min(seconds) * 1000:6.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    with LocalServer(workers=0) as server:
        token = server.token("bench")
        t = time.perf_counter()
        _submit(server.url, token, args.jobs)
        print(f"{args.jobs} jobs queued in {time.perf_counter() - t:.1f} s; "
              f"{args.runs} runs each", flush=True)
        env = {"PATH": str(Path(sys.executable).parent), "KILN_URL": server.url,
               "KILN_TOKEN": token, "KILN_CONFIG": str(server.root / "no-config.json")}

        print("end to end, as a process (the two alternating):")
        _process([KILN, "jobs"], env, args.jobs + 1)  # warm the page cache once
        table_s, json_s = [], []
        for _ in range(args.runs):
            table_s += _timed(lambda: _process([KILN, "jobs"], env, args.jobs + 1), 1)
            json_s += _timed(lambda: _process([KILN, "jobs", "--json"], env, 1), 1)
        _report("kiln jobs", table_s)
        _report("kiln jobs --json", json_s)

        print("its parts:")
        _report("python -c pass", _timed(
            lambda: _process([sys.executable, "-c", "pass"], env, None), args.runs))
        _report("python -c 'import kiln_client.cli'", _timed(
            lambda: _process([sys.executable, "-c", "import kiln_client.cli"], env, None),
            args.runs))
        _report("kiln logout (start, no request)",  # no config file: nothing to remove
                _timed(lambda: _process([KILN, "logout"], env, 1), args.runs))
        from kiln_client import Client
        from kiln_client.cli import app
        from kiln_client.cli._jobs import PAGE_SIZE
        from typer.testing import CliRunner

        with Client(server.url, token) as client:
            _report(f"the requests (pages of {PAGE_SIZE})", _timed(
                lambda: list(client.jobs.list(page_size=PAGE_SIZE)), args.runs))
        runner = CliRunner()
        env_in = {"KILN_URL": server.url, "KILN_TOKEN": token}
        _report("kiln jobs in this process", _timed(
            lambda: runner.invoke(app, ["jobs"], env=env_in), args.runs))
        from kiln_client.cli._output import table

        rows = [(f"{i:032x}", f"job-{i}", "running (pause requested)", "3/10", 1234,
                 "5m ago") for i in range(args.jobs)]
        with redirect_stdout(io.StringIO()):
            seconds = _timed(lambda: table(["id", "name", "status", "epoch", "step",
                                            "created"], rows), args.runs)
        _report("the table alone", seconds)
    shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":
    main()
