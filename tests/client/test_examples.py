"""The examples run as their docstrings say, against the real server and workers."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(args: list[str], url: str, token: str, timeout: float = 300) -> str:
    env = {**os.environ, "KILN_URL": url, "KILN_TOKEN": token}
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_digits_example_steers_its_run_and_the_rows_show_it(kiln_server, token):
    out = _run([sys.executable, str(EXAMPLES / "digits.py")], kiln_server.url, token)
    controls = re.findall(r"control (\d) (\w+) (\S+) .*: applied at epoch (\d+), step (\d+)",
                          out)
    assert [c[1:3] for c in controls] == [("adjust", "layers.enc"), ("freeze", "layers.dec"),
                                         ("thaw", "layers.dec")]
    rows = {int(e): (ast.literal_eval(lr), ast.literal_eval(frozen)) for e, lr, frozen in
            re.findall(r"epoch +(\d+) .* lr (\{.*?\})  frozen (\[.*?\])", out)}
    assert sorted(rows) == list(range(1, 13))
    adjusted_at, frozen_at, thawed_at = (int(c[3]) for c in controls)
    assert rows[1][0] == {"": pytest.approx(3e-3)} and rows[1][1] == []
    assert rows[adjusted_at + 1][0] == {"layers.enc": pytest.approx(3e-4),
                                        "layers.dec": pytest.approx(3e-3)}
    assert rows[frozen_at + 1][1] == ["layers.dec"]
    assert thawed_at >= frozen_at + 2 and thawed_at < 12 and rows[thawed_at + 1][1] == []
    accuracy = float(re.search(r"classifies ([\d.]+)% of the validation", out).group(1))
    assert accuracy > 80 and "job succeeded" in out


def test_the_job_file_submits_with_the_cli(kiln_server, token, digits_npz, tmp_path):
    kiln = [sys.executable, "-m", "kiln_client.cli"]
    _run([*kiln, "datasets", "upload", str(digits_npz)], kiln_server.url, token)
    job_id = _run([*kiln, "submit", str(EXAMPLES / "digits-job.yaml"), "--dataset", "digits",
                   "--epochs", "3"], kiln_server.url, token).split()[-1]
    _run([*kiln, "watch", job_id], kiln_server.url, token)
    weights = tmp_path / "w.safetensors"
    _run([*kiln, "weights", job_id, "-o", str(weights)], kiln_server.url, token)
    from kiln_engine.serialise import weights_from_bytes

    arrays = weights_from_bytes(weights.read_bytes())
    assert arrays["layers.enc.weight"].shape == (128, 64)
    assert np.isfinite(arrays["layers.dec.bias"]).all()
