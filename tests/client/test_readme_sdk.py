"""The README's "From Python" example runs as written against the real server, and does
what its comments say."""

from __future__ import annotations

import numpy as np

from tests.readme import README, python_blocks


def test_readme_sdk_example_runs(kiln_server, token, monkeypatch, capsys):
    monkeypatch.setenv("KILN_URL", kiln_server.url)
    monkeypatch.setenv("KILN_TOKEN", token)
    namespace: dict = {}
    for block in python_blocks("From Python"):
        exec(compile(block, str(README), "exec"), namespace)
    job, model = namespace["job"], namespace["model"]
    assert job.status == "succeeded"
    rows = job.epochs()
    control = job.controls()[0]
    assert (control.kind, control.path, control.status) == ("adjust", "layers.enc", "applied")
    assert rows[-1].learning_rate("layers.enc") == np.float32(1e-3)
    assert namespace["accuracy"] == rows[-1].metrics["val_accuracy"]
    assert "lr[layers.enc]" in rows.to_pandas().columns
    assert f"job {job.id[:8]}  succeeded" in capsys.readouterr().err  # the progress lines
    assert type(model).__name__ == "Chain"
