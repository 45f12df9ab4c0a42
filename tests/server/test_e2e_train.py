"""End to end: scikit-learn's digits through a real server and a real worker process."""

from __future__ import annotations

import re
import sys

import numpy as np
from kiln_engine import Chain, losses, model_from_spec, onecold
from kiln_engine.serialise import load_state_dict

from . import e2e_support
from .e2e_support import (
    digits_job,
    digits_split,
    epochs,
    finished,
    new_client,
    submit,
    upload_digits,
    weights,
)

# The fixtures this module uses (pytest finds them among the module's names).
e2e_server = e2e_support.e2e_server
make_workers = e2e_support.make_workers


def test_digits_mlp_with_adam_stops_at_95_percent(e2e_server, make_workers):
    client, _ = new_client(e2e_server)
    arrays = digits_split()
    ds = upload_digits(client, arrays)
    job = digits_job(ds, epochs=40, stop={"metric": "val_accuracy", "at_least": 0.95})
    job_id = submit(client, job)
    make_workers(e2e_server).start(1)

    done = finished(client, job_id)
    assert done["status"] == "succeeded", done["error"]
    rows = epochs(client, job_id)
    # One row per epoch, in order, the last the first to reach the criterion.
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert 1 < len(rows) < job["epochs"]
    accuracy = [r["metrics"]["val_accuracy"] for r in rows]
    assert accuracy[-1] >= 0.95 and max(accuracy[:-1]) < 0.95
    assert done["epoch"] == len(rows)
    per_epoch = -(-len(arrays["x"]) // job["batch_size"])
    assert done["step"] == len(rows) * per_epoch
    for r in rows:
        assert r["learning_rates"] == {"": 0.003}
        assert r["frozen"] == [] and r["skipped_steps"] == 0
        assert r["train_loss"] > 0 and r["samples_per_s"] > 0 and r["duration_s"] > 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    # The final weights are the model the last row describes.
    model = model_from_spec(job["model"])
    assert isinstance(model, Chain)
    load_state_dict(model, weights(client, job_id))
    yhat = model(arrays["xv"])
    assert float(np.mean(onecold(yhat) == arrays["yv"])) == accuracy[-1]
    assert float(losses.logitcrossentropy(yhat, arrays["yv"])) == \
        np.float32(rows[-1]["val_loss"])

    steps = client.get(f"/v1/jobs/{job_id}/steps").json()
    assert steps["steps"] == list(range(1, done["step"] + 1))


def test_a_failed_jobs_error_says_what_and_where_without_server_paths(e2e_server, make_workers):
    """A worker whose blob cache cannot be made (its directory is a file) fails the job:
    the error names the exception, the failing path's tail and the Kiln module and line,
    and none of the machine's directories."""
    client, _ = new_client(e2e_server)
    ds = upload_digits(client, digits_split())
    job_id = submit(client, digits_job(ds, epochs=1, stop=None))
    workers = make_workers(e2e_server)
    (workers.root / "cache").write_text("not a directory")
    workers.start(1)

    done = finished(client, job_id)
    assert done["status"] == "failed"
    error = done["error"]
    assert re.fullmatch(r"NotADirectoryError: \[Errno 20\] Not a directory: '…/cache/[0-9a-f]{2}'"
                        r" \(at kiln_server/worker/client\.py:\d+\)", error), error
    for where in (str(workers.root), "/tmp", "/home", "/work", "/root", sys.prefix):
        assert not re.search(rf"(?<![\w.]){re.escape(where)}", error), (where, error)
    assert "site-packages" not in error and ".venv" not in error
    # The worker's own log keeps the whole traceback for whoever runs it.
    assert str(workers.root / "cache") in workers.logs()[0]
