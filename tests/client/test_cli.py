"""The ``kiln`` command line against the session's real server and workers.

The main flows and every error's exit code run ``kiln`` as a real process
(``python -m kiln_client.cli``); the rest run it in-process with Typer's CliRunner, which
goes through the same commands and error handling, to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_client import Client
from kiln_client.cli import app
from kiln_engine.serialise import weights_from_bytes
from typer.testing import CliRunner

from tests.server.conftest import Server, free_port
from tests.server.e2e_support import wait_for

from .conftest import mlp_spec, new_token

KILN = [sys.executable, "-m", "kiln_client.cli"]


def _env(url: str | None, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KILN_URL", "KILN_TOKEN")}
    env.update({k: v for k, v in (("KILN_URL", url), ("KILN_TOKEN", token)) if v})
    return env


def kiln(*args: str, url: str | None = None, token: str | None = None,
         stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``kiln ARGS`` as a process, with KILN_URL / KILN_TOKEN when given."""
    return subprocess.run([*KILN, *args], env=_env(url, token), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(stderr: str, *fragments: str) -> str:
    """The single ``error: ...`` line that stderr must hold (no traceback), containing
    each fragment."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
    return lines[0]


@pytest.fixture
def cli(kiln_server: Server, token: str) -> Any:
    """``cli(*args)``: kiln in-process as this test's user; the Result, with .stdout and
    .stderr apart."""
    runner = CliRunner()
    env = {"KILN_URL": kiln_server.url, "KILN_TOKEN": token}

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(app, list(args), env=env, input=input)
    return invoke


@pytest.fixture
def sdk(kiln_server: Server, token: str) -> Any:
    with Client(kiln_server.url, token) as client:
        yield client


@pytest.fixture
def dataset_id(sdk: Client, digits_npz: Path) -> str:
    return sdk.datasets.upload_file(digits_npz, "digits").id


def job_file(tmp_path: Path, *, fmt: str = "yaml", dataset: str | None = None,
             **fields: Any) -> Path:
    """A job file of the digits MLP (Adam 1e-3, 2 epochs of batch 64), training and
    validating on ``dataset`` (none named if not given)."""
    data = {"dataset": dataset} if dataset else {}
    job = {"name": "digits-mlp", "model": mlp_spec(),
           "optimiser": {"rule": "Adam", "eta": 0.001}, "loss": "logitcrossentropy",
           "train": {**data, "x": "x", "y": "y"}, "validation": {**data, "x": "xv", "y": "yv"},
           "batch_size": 64, "epochs": 2, "metrics": ["loss", "accuracy"], **fields}
    path = tmp_path / f"job.{fmt}"
    path.write_text(json.dumps(job) if fmt == "json" else yaml.safe_dump(job, sort_keys=False))
    return path


def ok(result: Any) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr,
                                   result.exception)
    return result.stdout


# --- login ------------------------------------------------------------------------------

def test_login_checks_and_saves_the_token_and_logout_forgets_it(kiln_server, token):
    me = Client(kiln_server.url, token).me()
    r = kiln("login", "--url", kiln_server.url, stdin=token + "\n")
    assert r.returncode == 0, r.stderr
    assert f"Logged in to {kiln_server.url} as {me.name}" in r.stdout
    config = Path(os.environ["KILN_CONFIG"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": kiln_server.url, "token": token}
    assert token not in r.stdout + r.stderr  # the prompt hides it

    r = kiln("jobs", "--json")  # no URL, no token: what login saved
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []

    r = kiln("logout")
    assert r.returncode == 0 and "Logged out" in r.stdout
    assert not config.exists()
    r = kiln("--url", kiln_server.url, "jobs")
    assert r.returncode == 1
    one_line_error(r.stderr, "kiln login")


def test_login_with_a_wrong_token_saves_nothing(kiln_server):
    r = kiln("login", "--url", kiln_server.url, "--token", "kiln_not-a-token")
    assert r.returncode == 1
    one_line_error(r.stderr)
    assert not Path(os.environ["KILN_CONFIG"]).exists()


def test_login_json_names_the_user(kiln_server, token, cli):
    out = json.loads(ok(cli("login", "--url", kiln_server.url, "--token", token, "--json")))
    assert out["url"] == kiln_server.url and out["user"]["name"]
    assert json.loads(ok(cli("logout", "--json")))["logged_out"] is True
    assert json.loads(ok(cli("logout", "--json")))["logged_out"] is False


# --- datasets ---------------------------------------------------------------------------

def test_datasets_upload_ls_rm(cli, digits_npz, digits):
    up = json.loads(ok(cli("datasets", "upload", str(digits_npz), "--name", "d1", "--json")))
    arrays = {a["name"]: a["shape"] for a in up["arrays"]}
    assert up["name"] == "d1" and arrays["x"] == list(digits["x"].shape)
    line = ok(cli("datasets", "upload", str(digits_npz)))
    assert line.startswith("Uploaded 'digits' as ") and "x 1400x64 float32" in line

    listed = json.loads(ok(cli("datasets", "ls", "--json")))
    assert [d["name"] for d in listed] == ["digits", "d1"]  # newest first
    table = ok(cli("datasets", "ls")).splitlines()
    assert table[0].split() == ["ID", "NAME", "ARRAYS", "SIZE", "CREATED"]
    assert up["id"] in table[2] and "d1" in table[2]

    assert ok(cli("datasets", "rm", up["id"])).strip() == f"Deleted dataset {up['id']}"
    assert [d["name"] for d in json.loads(ok(cli("datasets", "ls", "--json")))] == ["digits"]
    r = cli("datasets", "rm", up["id"])
    assert r.exit_code == 1
    one_line_error(r.stderr, up["id"])


def test_a_dataset_in_use_is_not_removed(cli, sdk, dataset_id, tmp_path):
    job = json.loads(ok(cli("submit", str(job_file(tmp_path, epochs=500, batch_size=8)),
                            "--dataset", dataset_id, "--json")))
    r = cli("datasets", "rm", dataset_id)
    assert r.exit_code == 1
    one_line_error(r.stderr, f"dataset {dataset_id!r} is used by unfinished jobs")
    assert [d.id for d in sdk.datasets.list()] == [dataset_id]
    ok(cli("cancel", job["id"]))


# --- submit -----------------------------------------------------------------------------

def test_submit_a_yaml_file_with_overrides(cli, sdk, dataset_id, tmp_path):
    chain = {"rule": "OptimiserChain", "rules": [{"rule": "WeightDecay", "lambda": 1e-4},
                                                  {"rule": "Adam", "eta": 0.001}]}
    path = job_file(tmp_path, optimiser=chain)
    job = json.loads(ok(cli("submit", str(path), "--dataset", "digits", "--name", "tuned",
                            "--epochs", "3", "--batch-size", "100", "--seed", "7",
                            "--stop", "val_accuracy>=0.99", "--eta", "0.003", "--json")))
    spec = job["spec"]
    assert job["name"] == "tuned" and job["status"] in ("queued", "running", "succeeded")
    assert (spec["epochs"], spec["batch_size"], spec["seed"]) == (3, 100, 7)
    assert spec["stop"]["metric"] == "val_accuracy" and spec["stop"]["at_least"] == 0.99
    assert spec["train"] == {"dataset": dataset_id, "x": "x", "y": "y"}
    assert spec["validation"] == {"dataset": dataset_id, "x": "xv", "y": "yv"}
    # --eta sets the learning rate of the member that has one, not WeightDecay's lambda
    assert spec["optimiser"]["rules"] == [{"rule": "WeightDecay", "lambda": 1e-4},
                                          {"rule": "Adam", "eta": 0.003}]
    assert sdk.jobs.get(job["id"]).name == "tuned"


def test_submit_device_gpu_waits_for_a_gpu_worker(cli, sdk, dataset_id, tmp_path):
    """The server's workers are CPUs: the job stays queued, shown as asking for a gpu."""
    job = json.loads(ok(cli("submit", str(job_file(tmp_path)), "--dataset", dataset_id,
                            "--device", "gpu", "--json")))
    assert (job["device"], job["spec"]["device"], job["status"]) == ("gpu", "gpu", "queued")
    handle = sdk.jobs.get(job["id"])
    assert (handle.device, handle.status) == ("gpu", "queued")
    assert handle.cancel().status == "cancelled"


def test_submit_a_json_file_prints_the_id_and_watch_follows_it(dataset_id, kiln_server,
                                                               token, tmp_path):
    path = job_file(tmp_path, fmt="json", dataset=dataset_id)
    r = kiln("submit", str(path), "--watch", url=kiln_server.url, token=token)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert "epoch 2/2" in r.stderr and f"job {job_id[:8]}  succeeded" in r.stderr
    assert Client(kiln_server.url, token).jobs.get(job_id).status == "succeeded"


def test_submit_a_spec_error_is_one_line_naming_the_field(kiln_server, token, dataset_id,
                                                          tmp_path):
    model = mlp_spec()
    model["layers"]["enc"]["out"] = 0
    path = job_file(tmp_path, model=model)
    r = kiln("submit", str(path), "--dataset", dataset_id, url=kiln_server.url, token=token)
    assert r.returncode == 1 and r.stdout == ""
    one_line_error(r.stderr, "model.layers.enc.out")
    assert list(Client(kiln_server.url, token).jobs.list()) == []


@pytest.mark.parametrize(("name", "text", "says"), [
    ("job.json", '{"model": ', "not valid JSON"),
    ("job.yaml", "model: [1, 2\nloss: x\n", "not valid YAML at line"),
    ("job.yaml", "- model\n- loss\n", "holds one object"),
    ("missing.json", None, "cannot read it"),
])
def test_submit_an_unreadable_job_file_is_a_usage_error(kiln_server, token, tmp_path, name,
                                                        text, says):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    r = kiln("submit", str(path), url=kiln_server.url, token=token)
    assert r.returncode == 2
    one_line_error(r.stderr, str(path), says)


def test_submit_flags_that_cannot_apply_are_usage_errors(cli, dataset_id, tmp_path):
    path = job_file(tmp_path, optimiser={"rule": "WeightDecay", "lambda": 1e-4})
    r = cli("submit", str(path), "--eta", "0.01")
    assert r.exit_code == 2
    one_line_error(r.stderr, "--eta", "no rule with an eta")
    r = cli("submit", str(path), "--stop", "val_accuracy=0.9")
    assert r.exit_code == 2
    one_line_error(r.stderr, "--stop")
    r = cli("submit", str(path), "--dataset", "no-such-data")
    assert r.exit_code == 1
    one_line_error(r.stderr, "no-such-data")


# --- jobs, show, logs, weights ----------------------------------------------------------

def test_jobs_lists_every_page_newest_first_with_status_and_limit(cli, sdk, dataset_id,
                                                                  tmp_path):
    path = job_file(tmp_path, dataset=dataset_id, epochs=500, batch_size=8)
    ids = [json.loads(ok(cli("submit", str(path), "--name", f"j{i}", "--json")))["id"]
           for i in range(3)]
    for job_id in ids:
        ok(cli("cancel", job_id))
    wait_for("the jobs to be cancelled",
             lambda: all(sdk.jobs.get(i).status == "cancelled" for i in ids))

    listed = json.loads(ok(cli("jobs", "--json")))
    assert [j["id"] for j in listed] == ids[::-1]
    assert [j["id"] for j in json.loads(ok(cli("jobs", "--limit", "2", "--json")))] == \
        ids[:0:-1]
    assert json.loads(ok(cli("jobs", "--status", "queued", "--json"))) == []
    rows = ok(cli("jobs")).splitlines()
    assert rows[0].split() == ["ID", "NAME", "STATUS", "EPOCH", "STEP", "CREATED"]
    first = rows[1].split()
    assert first[:3] == [ids[2], "j2", "cancelled"] and first[3].endswith("/500")
    assert rows[1].endswith("ago") and len(rows) == 4
    r = cli("jobs", "--status", "finished")
    assert r.exit_code == 2


def test_show_logs_and_weights_of_a_finished_job(cli, sdk, dataset_id, tmp_path):
    path = job_file(tmp_path, dataset=dataset_id)
    job_id = ok(cli("submit", str(path))).strip()
    ok(cli("watch", job_id))
    job = sdk.jobs.get(job_id)
    assert job.status == "succeeded"

    shown = ok(cli("show", job_id))
    assert re.search(r"^status\s+succeeded$", shown, re.M)
    assert re.search(r"^model\s+Chain, 2,410 parameters$", shown, re.M)
    assert re.search(r"^\s+layers\.enc  Dense  in=64 out=32 activation=relu$", shown, re.M)
    assert re.search(r"^optimiser\s+Adam\(eta=0\.001\)$", shown, re.M)
    assert re.search(rf"^train\s+{dataset_id} \(x=x, y=y\)$", shown, re.M)
    assert re.search(r"^last epoch\s+epoch 2/2  train_loss \S+  val_loss \S+  val_accuracy",
                     shown, re.M)
    assert json.loads(ok(cli("show", job_id, "--json"))) == job.data

    lines = ok(cli("logs", job_id)).splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    logs = json.loads(ok(cli("logs", job_id, "--json")))
    assert [e["epoch"] for e in logs["epochs"]] == [1, 2] and logs["controls"] == []
    events = [json.loads(line) for line in ok(cli("logs", job_id, "-f", "--json")).splitlines()]
    assert [e["data"]["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "succeeded"

    out = tmp_path / "w.safetensors"
    written = json.loads(ok(cli("weights", job_id, "-o", str(out), "--json")))
    assert written == {"job": job_id, "file": str(out), "size_bytes": out.stat().st_size}
    weights = weights_from_bytes(out.read_bytes())
    assert weights["layers.enc.weight"].shape == (32, 64)
    r = cli("weights", job_id, "-o", str(tmp_path / "no-such-dir" / "w"))
    assert r.exit_code == 2
    one_line_error(r.stderr, "no-such-dir")


def test_logs_follow_prints_each_epoch_once_until_the_job_ends(kiln_server, token,
                                                               dataset_id, tmp_path):
    path = job_file(tmp_path, dataset=dataset_id, epochs=4, batch_size=32)
    job_id = kiln("submit", str(path), url=kiln_server.url, token=token).stdout.strip()
    r = kiln("logs", job_id, "-f", url=kiln_server.url, token=token)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch")] == \
        [f"epoch {i}/4" for i in range(1, 5)]
    assert lines[-1] == f"job {job_id} succeeded"


# --- steering ---------------------------------------------------------------------------

def _epochs_with(job: Any, pred: Any) -> Any:
    rows = job.epochs()
    return rows if pred(rows) else None


def test_adjust_and_freeze_mid_training_show_in_the_following_epochs(kiln_server, token,
                                                                     sdk, dataset_id,
                                                                     tmp_path):
    path = job_file(tmp_path, dataset=dataset_id, epochs=400, batch_size=8)
    url = kiln_server.url
    job_id = kiln("submit", str(path), url=url, token=token).stdout.strip()
    job = sdk.jobs.get(job_id)
    wait_for("two epochs", lambda: _epochs_with(job, lambda rows: len(rows) >= 2))

    r = kiln("adjust", job_id, "--path", "layers.enc", "--eta", "0.01", url=url, token=token)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "control 1 adjust layers.enc eta=0.01: pending"
    r = kiln("freeze", job_id, "layers.dec", "--json", url=url, token=token)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seq"] == 2

    def applied() -> Any:
        controls = job.controls()
        return controls if all(c.status == "applied" for c in controls) else None
    adjusted, frozen = wait_for("both controls applied", applied)
    last = max(adjusted.applied_epoch, frozen.applied_epoch)
    rows = wait_for("an epoch after both",
                    lambda: _epochs_with(job, lambda rows: len(rows) > last))

    for row in rows:
        rates = row.learning_rates
        if row.epoch < adjusted.applied_epoch:
            assert set(rates.values()) == {0.001}, row
        else:
            assert rates["layers.enc"] == 0.01 and rates["layers.dec"] == 0.001, row
        assert ("layers.dec" in row.frozen) == (row.epoch >= frozen.applied_epoch), row

    r = kiln("logs", job_id, url=url, token=token)
    lines = r.stdout.splitlines()
    at = lines.index(f"control 1 adjust layers.enc eta=0.01: applied at epoch "
                     f"{adjusted.applied_epoch}, step {adjusted.applied_step}")
    assert lines[at + 1].startswith(f"epoch {adjusted.applied_epoch}/400  ")
    assert "lr layers.enc=0.01 layers.dec=0.001" in lines[at + 1]
    assert any(line.startswith("control 2 freeze layers.dec: applied") for line in lines)

    r = kiln("thaw", job_id, url=url, token=token)
    assert r.stdout.strip() == "control 3 thaw: pending"
    r = kiln("cancel", job_id, url=url, token=token)
    assert re.fullmatch(rf"job {job_id} (running \(cancel requested\)|cancelled)",
                        r.stdout.strip()), r.stdout
    r = kiln("watch", job_id, url=url, token=token)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"error: job {job_id} was cancelled"
    assert "Traceback" not in r.stderr


def test_pause_resume_and_cancel_print_the_status_with_the_request(cli, sdk, dataset_id,
                                                                  tmp_path):
    path = job_file(tmp_path, dataset=dataset_id, epochs=500, batch_size=8)
    job_id = ok(cli("submit", str(path))).strip()
    out = ok(cli("pause", job_id)).strip()
    assert re.fullmatch(rf"job {job_id} (paused|running \(pause requested\))", out), out
    wait_for("the pause", lambda: sdk.jobs.get(job_id).status == "paused")
    assert ok(cli("resume", job_id)).strip() == f"job {job_id} queued"
    cancelled = json.loads(ok(cli("cancel", job_id, "--json")))
    assert cancelled["id"] == job_id and (cancelled["status"], cancelled["requested"]) in (
        ("cancelled", None), ("running", "cancel"))
    wait_for("the cancel", lambda: sdk.jobs.get(job_id).status == "cancelled")
    r = cli("resume", job_id)
    assert r.exit_code == 1
    one_line_error(r.stderr, job_id)


def test_adjust_takes_any_hyper_parameter_and_refuses_bad_ones(cli, sdk, dataset_id,
                                                               tmp_path):
    chain = {"rule": "OptimiserChain", "rules": [{"rule": "WeightDecay", "lambda": 1e-4},
                                                  {"rule": "Adam", "eta": 0.001}]}
    path = job_file(tmp_path, dataset=dataset_id, optimiser=chain, epochs=500,
                    batch_size=8)
    job_id = ok(cli("submit", str(path))).strip()
    control = json.loads(ok(cli("adjust", job_id, "--beta", "0.8,0.99", "--lambda=1e-3",
                                "--json")))
    assert control["hyper"] == {"beta": [0.8, 0.99], "lambda": 0.001}
    r = cli("adjust", job_id, "--eta", "-1")
    assert r.exit_code == 1
    one_line_error(r.stderr, "eta")
    r = cli("adjust", job_id, "--lr", "0.1")
    assert r.exit_code == 1
    one_line_error(r.stderr, "lr")
    for bad in (["--eta", "fast"], [], ["0.1"], ["--eta"]):
        r = cli("adjust", job_id, *bad)
        assert r.exit_code == 2, bad
        one_line_error(r.stderr)
    assert [c.seq for c in sdk.jobs.get(job_id).controls()] == [1]
    ok(cli("cancel", job_id))


# --- workers ----------------------------------------------------------------------------

def test_workers_lists_the_session_workers(cli):
    workers = json.loads(ok(cli("workers", "--json")))
    live = [w for w in workers if w["status"] != "gone"]
    assert len(live) >= 2 and all(w["device"]["kind"] == "cpu" for w in live)
    rows = ok(cli("workers")).splitlines()
    assert rows[0].split() == ["NAME", "DEVICE", "STATUS", "JOB", "LAST", "SEEN"]
    assert sum(" cpu " in row for row in rows[1:]) >= 2


# --- errors -----------------------------------------------------------------------------

def test_an_unknown_job_is_exit_1_with_the_server_message(kiln_server, token):
    for args in (["show", "nope"], ["logs", "nope", "-f"], ["cancel", "nope"]):
        r = kiln(*args, url=kiln_server.url, token=token)
        assert r.returncode == 1, args
        one_line_error(r.stderr, "no job 'nope'")


def test_a_wrong_token_is_exit_1(kiln_server):
    r = kiln("jobs", url=kiln_server.url, token="kiln_wrong")
    assert r.returncode == 1
    one_line_error(r.stderr)


def test_a_server_that_is_down_is_exit_3():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["login", "--token", "t"], ["logs", "abc", "-f"]):
        r = kiln("--url", url, *args, token="t")
        assert r.returncode == 3, (args, r.stderr)
        one_line_error(r.stderr, f"cannot connect to Kiln at {url}")


def test_usage_errors_are_exit_2(kiln_server, token):
    for args in (["no-such-command"], ["jobs", "--limit", "0"], ["show"],
                 ["datasets", "upload", "/no/such.npz"]):
        r = kiln(*args, url=kiln_server.url, token=token)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_broken_config_file_is_a_usage_error():
    Path(os.environ["KILN_CONFIG"]).write_text("[not an object")
    r = kiln("jobs")
    assert r.returncode == 2
    one_line_error(r.stderr, "config file")


@pytest.mark.slow
def test_a_connection_dropped_mid_logs_follow_is_exit_3(tmp_path, digits_npz):
    """A server of this test's own dies while ``logs -f`` follows a job (queued: the
    server has no workers, so the stream stays open): the SDK reopens the stream a few
    times with back-off (about 25 s), then the command ends with one line and exit 3."""
    server = Server(tmp_path)
    try:
        token = new_token(server)
        with Client(server.url, token) as client:
            ds = client.datasets.upload_file(digits_npz)
        path = job_file(tmp_path, dataset=ds.id)
        job_id = kiln("submit", str(path), url=server.url, token=token).stdout.strip()
        follower = subprocess.Popen([*KILN, "logs", job_id, "-f"], text=True,
                                    env=_env(server.url, token), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        log = tmp_path / "server.log"
        wait_for("the event stream to open",
                 lambda: f"/v1/jobs/{job_id}/events" in log.read_text())
        server.proc.kill()
        _, stderr = follower.communicate(timeout=120)
        assert follower.returncode == 3
        one_line_error(stderr, f"cannot connect to Kiln at {server.url}")
    finally:
        server.stop()
