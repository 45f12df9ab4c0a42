"""The dashboard's time to first render in headless Chromium: a job's page over 100,000
steps and 200 epochs, and the jobs page over 1,000 jobs (targets: under 1 s each).

    python bench/dashboard_render.py [--runs 7] [--steps 100000] [--epochs 200]
                                     [--jobs 1000] [--busy]

A real ``kiln-server serve`` (SQLite, a temporary data directory, no workers) serves the
built dashboard (``make dashboard``). A hand-driven worker gives one user's job its
history through the worker API, as a worker would: it registers, claims the job, reports
the steps an epoch, then posts the step losses in batches of 10,000 with the epoch rows
they end (each with its learning rates and frozen subtrees), applies four controls the
user sends on the way (adjust ``layers.enc``, freeze and thaw ``layers.dec``, adjust the
whole model), reports the state tree and finishes. A second job gets the same history
and stays running (its page then also follows the job's stream, which replays the
history). Another user submits ``--jobs`` jobs with the SDK, which stay queued.

"First render" is from the navigation's start to the page drawn with its data: on a
job's page the step chart's points and canvas, all the epochs on the epoch chart and in
the epoch table; on the jobs page the table of every job (``data-total``). Each run opens
a new browser context (nothing cached: the dashboard's files are fetched again) and is
timed twice: ``page``, performance.now() in the page at the first animation frame where
the data is drawn, and ``wall``, this process's clock around the navigation and that
wait (the extra is Playwright's messages). Each page is timed signed in (the token put in
localStorage before the navigation, as on a return visit) and with the sign-in form
filled and sent first. ``--busy`` times everything again while a worker process trains a
long job on the same cores, for the same server (another user's job, queued before the
jobs page's jobs, so that the worker started then takes it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from _server import LocalServer
from cli_jobs import _submit as submit_queued_jobs

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "server" / "kiln_server" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
STEPS_PER_POST = 10_000
FEATURES, CLASSES, BATCH = 8, 3, 4
MODEL = {"type": "Chain", "layers": {
    "enc": {"type": "Dense", "in": FEATURES, "out": 8, "activation": "relu"},
    "dec": {"type": "Dense", "in": 8, "out": CLASSES}}}
ETA = 0.001
ADAM = {"rule": "Adam", "eta": ETA, "beta": [0.9, 0.999], "epsilon": 1e-8}
#: The controls the user sends, by the epoch from whose first step they apply (a fifth,
#: two fifths... of the way).
CONTROLS = ((1, {"kind": "adjust", "path": "layers.enc", "hyper": {"eta": 3e-4}}),
            (2, {"kind": "freeze", "path": "layers.dec"}),
            (3, {"kind": "thaw", "path": "layers.dec"}),
            (4, {"kind": "adjust", "path": "", "hyper": {"eta": 1e-4}}))

#: A job's page is drawn: the step chart has points and a canvas; every epoch is on the
#: epoch chart and in the table. The value: the page's clock then.
JOB_DRAWN = """(epochs) => {
    const steps = document.querySelector('[data-testid=chart-step-loss]');
    const loss = document.querySelector('[data-testid=chart-epoch-loss]');
    return steps && Number(steps.dataset.points) > 0 && steps.querySelector('canvas')
        && loss && Number(loss.dataset.points) === epochs && loss.querySelector('canvas')
        && document.querySelectorAll('[data-testid=epoch-row]').length === epochs
        ? performance.now() : false;
}"""
#: The jobs page is drawn: the table lists every job, and its first rows are there.
JOBS_DRAWN = """(jobs) => {
    const table = document.querySelector('[data-testid=jobs-table]');
    return table && Number(table.dataset.total) === jobs
        && table.querySelector('[data-testid=job-row]') ? performance.now() : false;
}"""


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _job_with_history(user: httpx.Client, worker: httpx.Client, worker_id: str, steps: int,
                      epochs: int, finish: bool) -> str:
    """A job holding ``steps`` step losses and ``epochs`` epoch rows, controls applied on
    the way; finished (succeeded) or left running. Its id."""
    per_epoch = steps // epochs
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.random((per_epoch * BATCH, FEATURES), dtype=np.float32),
             y=rng.integers(0, CLASSES, per_epoch * BATCH))
    ds = user.post("/v1/datasets", params={"name": "random"}, content=buf.getvalue(),
                   headers={"Content-Type": "application/octet-stream"}).json()["id"]
    job_id = user.post("/v1/jobs", json={
        "name": "history", "model": MODEL, "optimiser": {"rule": "Adam", "eta": ETA},
        "loss": "logitcrossentropy", "train": {"dataset": ds, "x": "x", "y": "y"},
        "validation": {"dataset": ds, "x": "x", "y": "y"}, "batch_size": BATCH,
        "epochs": epochs, "metrics": ["loss", "accuracy"]}).json()["id"]
    claim = worker.post("/v1/worker/claim", json={"worker_id": worker_id}).json()
    assert claim["job_id"] == job_id, claim
    lease = {"Kiln-Lease": claim["lease_token"]}
    worker.post(f"/v1/worker/jobs/{job_id}/heartbeat", headers=lease, json={
        "epoch": 0, "step": 0, "steps_per_epoch": per_epoch}).raise_for_status()

    losses = (2.0 / (1 + np.arange(steps) / 5000) + rng.random(steps) * 0.2).tolist()
    control_at = {1 + epochs * i // 5: body for i, body in CONTROLS}
    eta = {"enc": ETA, "dec": ETA}  # each layer's learning rate
    frozen: list[str] = []
    rows: list[dict] = []
    first = 1  # the first step not posted yet
    for epoch in range(1, epochs + 1):
        if epoch in control_at:  # sent by the user, applied by the worker at the epoch's start
            body = control_at[epoch]
            seq = user.post(f"/v1/jobs/{job_id}/controls", json=body).json()["seq"]
            worker.post(f"/v1/worker/jobs/{job_id}/controls", headers=lease, json={
                "results": [{"seq": seq, "status": "applied", "epoch": epoch,
                             "step": (epoch - 1) * per_epoch + 1}]}).raise_for_status()
            if body["kind"] == "adjust":
                for layer in eta:
                    if body["path"] in ("", f"layers.{layer}"):
                        eta[layer] = body["hyper"]["eta"]
            else:
                frozen = [body["path"]] if body["kind"] == "freeze" else []
        # as a worker reports them: one rate for the model while its layers share it
        rates = ({"": eta["enc"]} if eta["enc"] == eta["dec"]
                 else {f"layers.{layer}": v for layer, v in eta.items()})
        end = epoch * per_epoch
        mean = float(np.mean(losses[end - per_epoch:end]))
        rows.append({"epoch": epoch, "train_loss": mean, "val_loss": mean * 1.1,
                     "metrics": {"val_accuracy": min(0.99, 0.3 + epoch / (1.5 * epochs))},
                     "learning_rates": rates, "frozen": list(frozen),
                     "samples_per_s": 20_000.0, "duration_s": per_epoch * BATCH / 20_000})
        if end - first + 1 >= STEPS_PER_POST or epoch == epochs:
            worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
                "steps": {"epoch": (first - 1) // per_epoch + 1, "first_step": first,
                          "losses": losses[first - 1:end]},
                "epochs": rows, "step": end}).raise_for_status()
            first, rows = end + 1, []
    tree = {f"layers.{layer}.{leaf}": {"rule": {**ADAM, "eta": eta[layer]},
                                       "frozen": f"layers.{layer}" in frozen, "scheduled": []}
            for layer in eta for leaf in ("weight", "bias")}
    worker.put(f"/v1/worker/jobs/{job_id}/state", headers=lease,
               json={"tree": tree}).raise_for_status()
    if finish:
        worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease, json={
            "status": "succeeded", "epoch": epochs, "step": steps}).raise_for_status()
    return job_id


def _first_render(browser, url: str, token: str, where: str, drawn: str, arg: int,
                  sign_in: bool) -> tuple[float, float]:
    """One navigation in a new context: (page ms, wall ms) to the page drawn."""
    context = browser.new_context(viewport=VIEWPORT)
    if not sign_in:
        context.add_init_script(f"localStorage.setItem('kiln.token', {json.dumps(token)})")
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(f"{url}/{where}", wait_until="commit")
        if sign_in:
            page.get_by_test_id("token-input").fill(token)
            page.get_by_test_id("sign-in").click()
        page_ms = page.wait_for_function(drawn, arg=arg, polling="raf", timeout=60_000
                                         ).json_value()
        return page_ms, (time.perf_counter() - start) * 1000
    finally:
        context.close()


def _report(name: str, time_one: Callable[[], tuple[float, float]], runs: int) -> None:
    time_one()  # a first navigation, not counted: the browser and the server warm up
    times = [time_one() for _ in range(runs)]
    page, wall = [t[0] for t in times], [t[1] for t in times]
    print(f"  {name:<50} page {statistics.median(page):5.0f} / {min(page):5.0f} ms   "
          f"wall {statistics.median(wall):5.0f} / {min(wall):5.0f} ms", flush=True)


def _measure(browser, url: str, cases: list[tuple[str, str, str, str, int]], runs: int
             ) -> None:
    print(f"median / fastest of {runs} runs (from the navigation's start):")
    for name, token, where, drawn, arg in cases:
        for sign_in in (False, True):
            label = f"{name}, {'with the sign-in' if sign_in else 'signed in'}"
            _report(label, lambda t=token, w=where, d=drawn, a=arg, s=sign_in: _first_render(
                browser, url, t, w, d, a, s), runs)


def _queue_busy_job(server: LocalServer) -> tuple[str, str]:
    """A long job of a user of its own (digits, batch 32, 100,000 epochs), queued before
    the jobs page's jobs, so that a worker started later trains it; (its id, the user's
    token)."""
    from kiln_client import Client
    from sklearn.datasets import load_digits

    d = load_digits()
    token = server.token("bench-busy")
    with Client(server.url, token) as kiln:
        ds = kiln.datasets.upload("digits", x=(d.data / 16).astype(np.float32),
                                  y=d.target.astype(np.int64))
        return kiln.jobs.submit(model={"type": "Chain", "layers": {
            "enc": {"type": "Dense", "in": 64, "out": 32, "activation": "relu"},
            "dec": {"type": "Dense", "in": 32, "out": 10}}}, optimiser={"rule": "Adam"},
            loss="logitcrossentropy", train=(ds, "x", "y"), batch_size=32,
            epochs=100_000).id, token


def _start_worker(server: LocalServer, job_id: str, token: str) -> subprocess.Popen:
    """A ``kiln-server worker`` process on this server, once it trains ``job_id`` (of the
    user of ``token``)."""
    with open(server.root / "worker.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln_server", "worker", "--url", server.url,
             "--token", server.token("bench-busy-worker", worker=True)],
            env={**os.environ, "KILN_WORKER_CACHE": str(server.root / "cache")},
            stdout=log, stderr=subprocess.STDOUT)
    with _client(server.url, token) as owner:
        deadline = time.monotonic() + 60
        while owner.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"the worker did not start; see {server.root}/worker.log")
            time.sleep(0.2)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--busy", action="store_true",
                    help="time it all again while a worker trains on the same cores")
    args = ap.parse_args()
    if not (DASHBOARD / "index.html").is_file():
        sys.exit(f"the dashboard is not built ({DASHBOARD}/index.html is missing): run "
                 "`make dashboard`")
    from playwright.sync_api import sync_playwright

    # a lease that outlives the benchmark: the running job stays running
    with LocalServer(env={"KILN_LEASE_S": "3600", "KILN_DASHBOARD_DIR": str(DASHBOARD)}
                     ) as server:
        t = time.perf_counter()
        token, jobs_token = server.token("bench"), server.token("bench-jobs")
        with _client(server.url, token) as user, \
                _client(server.url, server.token("bench-worker", worker=True)) as worker:
            worker_id = worker.post("/v1/worker/register", json={
                "name": "bench", "device": {"kind": "cpu"}}).json()["id"]
            finished, running = (_job_with_history(user, worker, worker_id, args.steps,
                                                   args.epochs, finish)
                                 for finish in (True, False))
        busy_job = _queue_busy_job(server) if args.busy else None
        submit_queued_jobs(server.url, jobs_token, args.jobs)
        print(f"{args.steps:,} steps and {args.epochs} epochs in a job, {args.jobs:,} jobs "
              f"queued: made in {time.perf_counter() - t:.1f} s")
        cases = [(f"job page, {args.steps:,} steps, finished", token, f"#/jobs/{finished}",
                  JOB_DRAWN, args.epochs),
                 (f"job page, {args.steps:,} steps, running", token, f"#/jobs/{running}",
                  JOB_DRAWN, args.epochs),
                 (f"jobs page, {args.jobs:,} jobs", jobs_token, "#/jobs", JOBS_DRAWN,
                  args.jobs)]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=CHROMIUM_ARGS)
            _measure(browser, server.url, cases, args.runs)
            if busy_job:
                worker_proc = _start_worker(server, *busy_job)
                try:
                    print("while a worker trains a job on the same cores (and server):")
                    _measure(browser, server.url, cases, args.runs)
                finally:
                    worker_proc.terminate()
                    worker_proc.wait(30)
            browser.close()


if __name__ == "__main__":
    main()
