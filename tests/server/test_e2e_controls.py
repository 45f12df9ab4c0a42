"""End to end: live controls on a running job (adjust, freeze, thaw) and pause / resume /
cancel, seen in the epoch rows, the state tree and the downloaded weights."""

from __future__ import annotations

import time

import numpy as np

from . import e2e_support
from .e2e_support import (
    digits_job,
    digits_split,
    epochs,
    get_job,
    new_client,
    submit,
    upload_digits,
    wait_for,
    weights,
)

# The fixtures this module uses (pytest finds them among the module's names).
e2e_server = e2e_support.e2e_server
make_workers = e2e_support.make_workers

ENC = ("layers.enc.weight", "layers.enc.bias")
DEC = ("layers.dec.weight", "layers.dec.bias")


def _control(client, job_id, **body):
    r = client.post(f"/v1/jobs/{job_id}/controls", json=body)
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]

    def resolved():
        c = next(c for c in client.get(f"/v1/jobs/{job_id}/controls").json() if c["seq"] == seq)
        return c if c["status"] != "pending" else None
    return wait_for(f"control {seq} ({body}) to be resolved", resolved, every=0.1)


def _lifecycle(client, job_id, action, status):
    r = client.post(f"/v1/jobs/{job_id}/{action}")
    assert r.status_code == 200, r.text
    return wait_for(f"job {job_id} to be {status}", lambda: (
        j if (j := get_job(client, job_id))["status"] == status else None), every=0.1)


def _epochs_past(client, job_id, epoch):
    return wait_for(f"job {job_id} to pass epoch {epoch}", lambda: (
        rows if (rows := epochs(client, job_id)) and rows[-1]["epoch"] > epoch else None),
        every=0.1)


def test_adjust_freeze_thaw_pause_resume_cancel(e2e_server, make_workers):
    client, _ = new_client(e2e_server)
    ds = upload_digits(client, digits_split())
    job_id = submit(client, digits_job(ds, epochs=5000, stop=None))
    make_workers(e2e_server).start(1)
    _epochs_past(client, job_id, 0)

    # adjust: the rows from the epoch it applied in carry the new rate for layers.enc only
    adjust = _control(client, job_id, kind="adjust", path="layers.enc", hyper={"eta": 3e-4})
    assert adjust["status"] == "applied", adjust
    rows = _epochs_past(client, job_id, adjust["applied_epoch"])
    before = [r["learning_rates"] for r in rows if r["epoch"] < adjust["applied_epoch"]]
    after = [r["learning_rates"] for r in rows if r["epoch"] >= adjust["applied_epoch"]]
    assert before and all(lr == {"": 0.003} for lr in before)
    assert after and all(lr == {"layers.enc": 3e-4, "layers.dec": 0.003} for lr in after)
    want = {"layers.enc.weight": 3e-4, "layers.enc.bias": 3e-4,
            "layers.dec.weight": 0.003, "layers.dec.bias": 0.003}
    wait_for("the state tree to show the new rate", lambda: {
        p: s["rule"]["eta"] for p, s in client.get(f"/v1/jobs/{job_id}/state").json().items()
    } == want, every=0.1)

    # freeze: across a pause and a resume, layers.enc stays bit for bit; layers.dec moves
    freeze = _control(client, job_id, kind="freeze", path="layers.enc")
    assert freeze["status"] == "applied", freeze
    first = _lifecycle(client, job_id, "pause", "paused")
    assert first["step"] >= freeze["applied_step"]
    w1 = weights(client, job_id)
    time.sleep(0.5)
    assert get_job(client, job_id)["step"] == first["step"]  # a paused job does not train
    _lifecycle(client, job_id, "resume", "running")
    _epochs_past(client, job_id, first["epoch"] + 2)
    second = _lifecycle(client, job_id, "pause", "paused")
    w2 = weights(client, job_id)
    assert second["step"] > first["step"]
    for p in ENC:
        assert np.array_equal(w1[p], w2[p]), p
    for p in DEC:
        assert not np.array_equal(w1[p], w2[p]), p

    # thaw, sent while paused: applied at the first step after the resume; enc moves again
    r = client.post(f"/v1/jobs/{job_id}/controls", json={"kind": "thaw", "path": "layers.enc"})
    assert r.status_code == 201, r.text
    _lifecycle(client, job_id, "resume", "running")
    thaw = _control(client, job_id, kind="thaw", path="layers.enc")  # idempotent: applies too
    _epochs_past(client, job_id, second["epoch"] + 2)
    controls = client.get(f"/v1/jobs/{job_id}/controls").json()
    first_thaw = next(c for c in controls if c["kind"] == "thaw")
    assert first_thaw["status"] == "applied"
    assert first_thaw["applied_step"] == second["step"] + 1
    third = _lifecycle(client, job_id, "pause", "paused")
    w3 = weights(client, job_id)
    for p in ENC + DEC:
        assert not np.array_equal(w2[p], w3[p]), p
    assert thaw["status"] == "applied"

    rows = epochs(client, job_id)
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))  # none lost or doubled
    for r in rows:
        frozen = freeze["applied_epoch"] <= r["epoch"] < first_thaw["applied_epoch"]
        assert r["frozen"] == (["layers.enc"] if frozen else []), r

    # cancel: a running job stops for good at its next step boundary
    _lifecycle(client, job_id, "resume", "running")
    _epochs_past(client, job_id, third["epoch"])
    cancelled = _lifecycle(client, job_id, "cancel", "cancelled")
    time.sleep(0.5)
    assert get_job(client, job_id)["step"] == cancelled["step"]
    assert len(epochs(client, job_id)) <= cancelled["epoch"]
    r = client.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": ""})
    assert r.status_code == 409, r.text
    kinds = [(c["kind"], c["status"]) for c in client.get(f"/v1/jobs/{job_id}/controls").json()]
    assert kinds.count(("pause", "applied")) == 3 and kinds.count(("resume", "applied")) == 3
    assert kinds[-1] == ("cancel", "applied")
