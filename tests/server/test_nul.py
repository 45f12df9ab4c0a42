"""Text with a NUL character, anywhere a request carries text: PostgreSQL cannot store or
compare one, and the server answers a 422 naming the place, on either database, never a
500 from a failed query."""

from __future__ import annotations

import pytest

from .conftest import mlp_job, upload


def _loc(r) -> list:
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert "NUL" in error["msg"]
    return error["loc"]


def test_a_nul_in_a_body_is_a_422_naming_its_field(user, dataset_id):
    job = mlp_job(dataset_id, name="ok")
    job["train"]["dataset"] = dataset_id + "\x00"
    assert _loc(user.post("/v1/jobs", json=job)) == ["body", "train", "dataset"]
    job = mlp_job(dataset_id)
    job["model"]["layers"]["enc"]["activation"] = "re\x00lu"
    assert _loc(user.post("/v1/jobs", json=job)) == \
        ["body", "model", "layers", "enc", "activation"]
    job = mlp_job(dataset_id)
    job["model"]["layers"]["e\x00nc"] = job["model"]["layers"].pop("enc")
    assert _loc(user.post("/v1/jobs", json=job)) == ["body", "model", "layers", "e\x00nc"]
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": "layers\x00"})
    assert _loc(r) == ["body", "path"]
    assert user.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


@pytest.mark.parametrize("url", ["/v1/jobs/ab%00cd", "/v1/datasets/%00", "/v1/jobs/x%00/epochs"])
def test_a_nul_in_a_path_is_a_422_naming_the_parameter(user, url):
    assert _loc(user.get(url))[0] == "path"


def test_a_nul_in_a_query_or_a_form_is_a_422_naming_it(user, digits_npz):
    assert _loc(user.get("/v1/jobs", params={"status": "queued\x00"})) == ["query", "status"]
    assert _loc(upload(user, digits_npz.read_bytes(), "dig\x00its")) == ["query", "name"]
    r = user.post("/v1/datasets", files={"file": ("digits.npz", digits_npz.read_bytes())},
                  data={"name": "a\x00b"})
    assert _loc(r) == ["body", "name"]
    assert user.get("/v1/datasets").json()["count"] == 0  # nothing kept
