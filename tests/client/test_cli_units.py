"""The ``kiln`` command line's pure parts: hyper-parameters from the command line, job
file overrides, how logs interleave, how specs, tables and ages read, and which exit
code each error gets. (test_cli.py drives the commands against a real server.)"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from kiln_client import Control, EpochRow, JobFailed, KilnConnectionError, NotFound
from kiln_client import ValidationError as SpecRefused
from kiln_client.cli._describe import data_text, layer_lines, rule_text, stop_text
from kiln_client.cli._errors import CliError, exit_code, report
from kiln_client.cli._follow import merged
from kiln_client.cli._jobfile import with_dataset, with_eta, with_stop
from kiln_client.cli._output import age, job_state, table
from kiln_client.cli._steer import parse_hyper
from kiln_client.cli._workers import device_text

from .conftest import mlp_spec


def test_parse_hyper_reads_numbers_lists_booleans_and_inf():
    args = ["--eta", "0.01", "--beta", "0.8,0.99", "--lambda=1e-4", "--p", "inf",
            "--nesterov", "true", "--n", "4", "--delta", "-0.5", "--q", "-inf"]
    assert parse_hyper(args) == {"eta": 0.01, "beta": [0.8, 0.99], "lambda": 1e-4,
                                 "p": "inf", "nesterov": True, "n": 4, "delta": -0.5,
                                 "q": "-inf"}
    assert parse_hyper([]) == {}


@pytest.mark.parametrize(("args", "says"), [
    (["--eta", "fast"], "--eta: expected a number"),
    (["--eta", "nan"], "--eta: expected a number"),
    (["--beta", "0.9,x"], "--beta: expected a number"),
    (["--eta"], "--eta needs a value"),
    (["0.1"], "expected a hyper-parameter as --NAME VALUE; got '0.1'"),
    (["--", "1"], "expected a hyper-parameter"),
])
def test_parse_hyper_refuses_what_is_not_a_hyper_parameter(args, says):
    with pytest.raises(CliError, match=says.replace("(", r"\(")) as e:
        parse_hyper(args)
    assert e.value.code == 2


CHAIN = {"rule": "OptimiserChain", "rules": [
    {"rule": "WeightDecay", "lambda": 1e-4}, {"rule": "ClipNorm", "omega": 1.0},
    {"rule": "Adam"}]}


def test_with_eta_sets_each_rule_that_has_one():
    assert with_eta({"optimiser": {"rule": "Descent", "eta": 0.1}}, 0.5)["optimiser"] == \
        {"rule": "Descent", "eta": 0.5}
    job = {"optimiser": CHAIN, "epochs": 3}
    out = with_eta(job, 0.01)
    assert out["optimiser"]["rules"] == [{"rule": "WeightDecay", "lambda": 1e-4},
                                         {"rule": "ClipNorm", "omega": 1.0},
                                         {"rule": "Adam", "eta": 0.01}]
    assert job["optimiser"]["rules"][2] == {"rule": "Adam"}  # the file's job is untouched
    # an unknown rule is left for the server to name (with its "did you mean")
    assert with_eta({"optimiser": {"rule": "SGD"}}, 0.1)["optimiser"] == \
        {"rule": "SGD", "eta": 0.1}
    assert with_eta({"loss": "mse"}, 0.1) == {"loss": "mse"}


def test_with_eta_refuses_an_optimiser_without_a_learning_rate():
    for rule in ({"rule": "WeightDecay"}, {"rule": "OptimiserChain", "rules": [
            {"rule": "ClipGrad"}, {"rule": "SignDecay"}]}):
        with pytest.raises(CliError, match="--eta: the job's optimiser has no rule"):
            with_eta({"optimiser": rule}, 0.1)


def test_with_dataset_fills_train_and_a_validation_without_one():
    job = {"train": {"x": "a", "y": "b"}, "validation": {"x": "xv", "y": "yv"}}
    assert with_dataset(job, "D") == {"train": {"x": "a", "y": "b", "dataset": "D"},
                                      "validation": {"x": "xv", "y": "yv", "dataset": "D"}}
    own = {"train": {"dataset": "old"}, "validation": {"dataset": "V"}}
    assert with_dataset(own, "D") == {"train": {"dataset": "D"},
                                      "validation": {"dataset": "V"}}
    assert with_dataset({}, "D") == {"train": {"dataset": "D"}}


def test_with_stop_parses_the_criterion():
    assert with_stop({}, "val_loss<=0.1")["stop"] == {"metric": "val_loss", "at_most": 0.1}
    with pytest.raises(CliError, match="--stop: stop must look like"):
        with_stop({}, "val_loss < 0.1")


def _row(epoch: int) -> EpochRow:
    return EpochRow.from_json({"epoch": epoch, "train_loss": 1.0 / epoch, "metrics": {},
                               "learning_rates": {"": 0.001}, "frozen": []})


def _control(seq: int, kind: str, epoch: int | None, status: str = "applied") -> Control:
    return Control.from_json({"seq": seq, "kind": kind, "path": "", "hyper": {},
                              "status": status, "applied_epoch": epoch,
                              "applied_step": None if epoch is None else epoch * 10})


def test_logs_put_each_control_where_it_took_effect():
    rows = [_row(e) for e in (1, 2, 3)]
    controls = [_control(1, "adjust", 2), _control(2, "pause", 2), _control(3, "resume", 2),
                _control(4, "freeze", 1), _control(5, "thaw", None, "pending")]
    lines = [line.split(":")[0].split("  ")[0] for line in merged(rows, controls, 3)]
    assert lines == ["control 4 freeze", "epoch 1/3", "control 1 adjust", "epoch 2/3",
                     "control 2 pause", "control 3 resume", "epoch 3/3", "control 5 thaw"]


def test_layer_lines_name_each_leaf_layer_by_its_path():
    assert layer_lines(mlp_spec()) == [
        "layers.enc  Dense  in=64 out=32 activation=relu", "layers.dec  Dense  in=32 out=10"]
    nested = {"type": "Chain", "layers": [
        {"type": "Conv", "in": 1, "out": 4, "kernel": [3, 3]},
        {"type": "SkipConnection", "layer": {"type": "Dense", "in": 4, "out": 4},
         "connection": "+"},
        {"type": "Flatten"}]}
    assert layer_lines(nested) == ["layers.0  Conv  in=1 out=4 kernel=[3, 3]",
                                   "layers.1.layer  Dense  in=4 out=4", "layers.2  Flatten"]
    assert layer_lines({"type": "Dense", "in": 2, "out": 1}) == ["(model)  Dense  in=2 out=1"]


def test_specs_read_as_one_line():
    assert rule_text(CHAIN) == \
        "OptimiserChain(WeightDecay(lambda=0.0001), ClipNorm(omega=1.0), Adam())"
    assert data_text({"dataset": "D", "x": "a"}) == "D (x=a, y=y)"
    assert data_text(None) == "-"
    assert stop_text({"metric": "val_accuracy", "at_least": 0.97}) == "val_accuracy >= 0.97"
    assert stop_text({"metric": "val_loss", "at_most": 0.1}) == "val_loss <= 0.1"
    assert stop_text(None) == "-"


def test_table_aligns_columns_under_upper_case_headers(capsys):
    table(["id", "name"], [("a1", "first"), ("b", None)])
    assert capsys.readouterr().out == "ID  NAME\na1  first\nb\n"


def test_age_and_job_state():
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert [age(now - timedelta(seconds=s), now) for s in (0, 59, 60, 3599, 3600, 86400 * 3)] \
        == ["0s ago", "59s ago", "1m ago", "59m ago", "1h ago", "3d ago"]
    assert age(None, now) == "-"
    assert job_state({"status": "running", "requested": "pause"}) == \
        "running (pause requested)"
    assert job_state({"status": "queued", "requested": None}) == "queued"


def test_device_text():
    assert device_text({"kind": "cpu", "name": "x86_64", "cores": 2}) == "cpu x86_64"
    assert device_text({"kind": "cuda", "index": 0, "name": "H100"}) == "cuda:0 H100"
    assert device_text({}) == "?"


class _Job:
    id, error = "j1", "out of memory"


@pytest.mark.parametrize(("error", "code"), [
    (KilnConnectionError("cannot connect"), 3),
    (NotFound("no job 'x'", status=404), 1),
    (SpecRefused("model.out: bad", status=422), 1),
    (JobFailed(_Job()), 1),
    (CliError("job.json: not valid JSON"), 2),
    (CliError("no dataset", 1), 1),
])
def test_each_error_has_its_exit_code(error, code):
    assert exit_code(error) == code


def test_an_error_is_reported_on_one_line(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    report(SpecRefused("model.layers.enc.out: must be positive;\n  got 0", status=422))
    assert err.getvalue() == "error: model.layers.enc.out: must be positive; got 0\n"
