"""A name that is almost right gets a 422 that names the field and says what was meant."""

from __future__ import annotations

import pytest

from .conftest import mlp_job


def _nested(dataset_id: str) -> dict:
    """mlp_job with an encoder of two layers: Chain(enc=Chain(Dense, Dense), dec=Dense)."""
    return mlp_job(dataset_id, model={"type": "Chain", "layers": {
        "enc": {"type": "Chain", "layers": [
            {"type": "Dense", "in": 64, "out": 32, "activation": "relu"},
            {"type": "Dense", "in": 32, "out": 32, "activation": "relu"}]},
        "dec": {"type": "Dense", "in": 32, "out": 10}}})


@pytest.mark.parametrize(("path", "meant"), [
    ("enc", "layers.enc"), ("enc.0", "layers.enc.layers.0"), ("dec", "layers.dec"),
    ("enc.1.weight", "layers.enc.layers.1.weight"), ("layers.encc", "layers.enc"),
])
def test_a_control_path_without_its_layers_prefix_suggests_the_full_one(user, dataset_id,
                                                                       path, meant):
    job_id = user.post("/v1/jobs", json=_nested(dataset_id)).json()["id"]
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": path})
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "path"]
    assert f"did you mean {meant!r}" in err["msg"]
    assert user.get(f"/v1/jobs/{job_id}/controls").json() == []  # nothing was queued
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze", "path": meant})
    assert r.status_code == 201, r.text  # and what it suggests is taken


@pytest.mark.parametrize(("optimiser", "where", "meant"), [
    ({"rule": "Adamw"}, ["body", "optimiser", "rule"], "AdamW"),
    ({"rule": "adam"}, ["body", "optimiser", "rule"], "Adam"),
    ({"rule": "SGD", "eta": 0.1}, ["body", "optimiser", "rule"], "Descent"),
    ({"rule": "OptimiserChain", "rules": [{"rule": "weightdecay"}, {"rule": "Adam"}]},
     ["body", "optimiser", "rules", 0, "rule"], "WeightDecay"),
])
def test_an_unknown_rule_suggests_the_one_meant(user, dataset_id, optimiser, where, meant):
    r = user.post("/v1/jobs", json=mlp_job(dataset_id, optimiser=optimiser))
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == where
    assert err["msg"].endswith(f"(did you mean {meant!r}?)")
    assert user.get("/v1/jobs").json()["data"] == []


def test_an_activation_in_another_case_suggests_the_one_meant(user, dataset_id):
    model = {"type": "Chain", "layers": {
        "enc": {"type": "Dense", "in": 64, "out": 32, "activation": "ReLU"},
        "dec": {"type": "Dense", "in": 32, "out": 10}}}
    r = user.post("/v1/jobs", json=mlp_job(dataset_id, model=model))
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "model", "layers", "enc", "activation"]
    assert err["msg"].endswith("(did you mean 'relu'?)")
