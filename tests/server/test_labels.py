"""Class labels outside the model's output classes are refused at submission, naming the
targets, from the range each integer array's upload recorded."""

from __future__ import annotations

import numpy as np
import pytest
from kiln_server.errors import InvalidError
from kiln_server.models import Dataset
from kiln_server.schemas import JobCreate
from kiln_server.services.jobspec import check_job
from kiln_server.settings import Settings

from .conftest import npz_bytes, upload

X = np.random.default_rng(0).random((8, 4)).astype(np.float32)


def _dataset(client, **arrays: np.ndarray) -> str:
    r = upload(client, npz_bytes(x=X, **arrays))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _job(ds: str, classes: int = 3, loss: str = "logitcrossentropy", **changes) -> dict:
    return {"model": {"type": "Dense", "in": 4, "out": classes},
            "optimiser": {"rule": "Adam"}, "loss": loss,
            "train": {"dataset": ds, "x": "x", "y": "y"},
            "batch_size": 4, "epochs": 1, "metrics": ["loss"], **changes}


def _refused(client, body: dict, where: list) -> str:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == where
    assert client.get("/v1/jobs").json()["data"] == []  # nothing queued
    return err["msg"]


def test_the_upload_records_the_range_of_integer_and_boolean_arrays(user):
    y = np.array([2, 0, 1, 1, 0, 2, 1, 0])
    r = upload(user, npz_bytes(x=X, y=y, mask=np.array([True, False] * 4),
                               none=np.zeros((0,), np.int64)))
    arrays = {a["name"]: a for a in r.json()["arrays"]}
    assert (arrays["y"]["min"], arrays["y"]["max"]) == (0, 2)
    assert (arrays["mask"]["min"], arrays["mask"]["max"]) == (0, 1)
    assert arrays["x"]["min"] is None and arrays["x"]["max"] is None  # floats: no range
    assert arrays["none"]["min"] is None  # nothing to range over


def test_a_label_past_the_last_class_is_refused_naming_train_y(user):
    ds = _dataset(user, y=np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    msg = _refused(user, _job(ds, classes=3), ["body", "train", "y"])
    assert msg == "labels range over [0, 3] but the model has 3 output classes (0..2)"
    for loss in ("crossentropy", "focal_loss"):
        assert "3 output classes" in _refused(user, _job(ds, 3, loss), ["body", "train", "y"])
    r = user.post("/v1/jobs", json=_job(ds, classes=4))  # four classes: every label fits
    assert r.status_code == 201, r.text


def test_a_negative_label_is_refused(user):
    ds = _dataset(user, y=np.array([-1, 0, 1, 2, 0, 1, 2, 0]))
    msg = _refused(user, _job(ds, classes=3), ["body", "train", "y"])
    assert "[-1, 2]" in msg


def test_validation_labels_are_checked_too(user):
    ds = _dataset(user, y=np.array([0, 1, 2, 0, 1, 2, 0, 1]), yv=np.array([0, 1, 2, 5] * 2))
    body = _job(ds, validation={"dataset": ds, "x": "x", "y": "yv"})
    msg = _refused(user, body, ["body", "validation", "y"])
    assert msg == "labels range over [0, 5] but the model has 3 output classes (0..2)"
    body["validation"]["y"] = "y"
    assert user.post("/v1/jobs", json=body).status_code == 201


def test_binary_targets_must_be_0_or_1(user):
    ds = _dataset(user, y=np.array([[0], [1], [2], [1], [0], [1], [0], [1]]),
                  ok=np.array([[0], [1]] * 4, dtype=np.int8))
    msg = _refused(user, _job(ds, classes=1, loss="logitbinarycrossentropy"),
                   ["body", "train", "y"])
    assert msg == "labels range over [0, 2] but logitbinarycrossentropy takes labels 0 and 1"
    body = _job(ds, classes=1, loss="logitbinarycrossentropy")
    body["train"]["y"] = "ok"
    assert user.post("/v1/jobs", json=body).status_code == 201


def test_targets_of_other_losses_are_not_labels(user):
    ds = _dataset(user, y=np.arange(24).reshape(8, 3))  # integers, but regression targets
    assert user.post("/v1/jobs", json=_job(ds, classes=3, loss="mse")).status_code == 201


@pytest.mark.parametrize("recorded", [True, False])
def test_a_dataset_without_a_recorded_range_is_not_checked(recorded):
    """Datasets uploaded before ranges were recorded carry none: their labels are unknown."""
    y = {"name": "y", "shape": [8], "dtype": "int64"}
    ds = Dataset(id="d" * 32, arrays=[{"name": "x", "shape": [8, 4], "dtype": "float32"},
                                      {**y, "min": 0, "max": 7} if recorded else y])
    job = JobCreate.model_validate(_job(ds.id, classes=3))
    if recorded:
        with pytest.raises(InvalidError, match=r"labels range over \[0, 7\]") as e:
            check_job(job, {ds.id: ds}, Settings())
        assert e.value.errors[0]["loc"] == ["body", "train", "y"]
    else:
        assert check_job(job, {ds.id: ds}, Settings()).parameters == 4 * 3 + 3
