"""Jobs over HTTP: submission validated by the engine, listing, lifecycle and controls.

Every bad input of issue 4 is a 4xx whose body names the field, and leaves no job behind.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from kiln_server.worker.build import build_trainer
from kiln_server.worker.run import state_tree

from .conftest import MAX_BODY_BYTES, MAX_UPLOAD_BYTES, mlp_job, npz_bytes, upload


def _dense(i, o, **kw):
    return {"type": "Dense", "in": i, "out": o, **kw}


def test_valid_job_is_queued(user, dataset_id):
    r = user.post("/v1/jobs", json=mlp_job(dataset_id))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert job["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert user.get(f"/v1/jobs/{job['id']}").json()["spec"]["model"] == \
        mlp_job(dataset_id)["model"]


def _bad_cases(ds: str) -> list[tuple[dict | bytes, int, list, str]]:
    """(body, status, loc prefix, words in the message)."""
    huge = {"type": "Chain", "layers": [_dense(64, 10**6), _dense(10**6, 10**6),
                                        _dense(10**6, 10)]}
    return [
        (b'{"model": {', 422, ["body"], "JSON"),
        (mlp_job(ds, model={"type": "Chain", "layers": {"enc": {"type": "Dense2", "in": 64,
                                                                "out": 10}}}),
         422, ["body", "model", "layers", "enc", "type"], "Dense"),
        (mlp_job(ds, model={"type": "Chain", "layers": [_dense(64, 0)]}),
         422, ["body", "model", "layers", 0, "out"], "positive integer"),
        (mlp_job(ds, optimiser={"rule": "Adamm"}), 422, ["body", "optimiser", "rule"], "Adam"),
        (mlp_job(ds, optimiser={"rule": "Adam", "lr": 0.1}), 422,
         ["body", "optimiser", "lr"], "eta"),
        (mlp_job(ds, model={"type": "Chain", "layers": [_dense(32, 10)]}), 422,
         ["body", "train", "x"], "inputs shaped"),
        (mlp_job(ds, model={"type": "Chain", "layers": [_dense(64, 3)]}, metrics=["loss"],
                 stop=None, loss="mse"), 422, ["body", "loss"], "mse"),
        (mlp_job(ds, epochs=-1), 422, ["body", "epochs"], "greater than 0"),
        (mlp_job(ds, batch_size=0), 422, ["body", "batch_size"], "greater than 0"),
        (mlp_job(ds, model=huge), 422, ["body", "model"], "parameters"),
        (mlp_job(ds, loss="crossentropyy"), 422, ["body", "loss"], "crossentropy"),
        (mlp_job(ds, train={"dataset": ds, "x": "images", "y": "y"}), 422,
         ["body", "train", "x"], "no array 'images'"),
        (mlp_job(ds, train={"dataset": "0" * 32, "x": "x", "y": "y"}), 422,
         ["body", "train", "dataset"], "no dataset"),
        (mlp_job(ds, validation=None), 422, ["body", "stop", "metric"], "validation"),
        (mlp_job(ds, stop={"metric": "train_accuracy", "at_least": 0.9}), 422,
         ["body", "stop", "metric"], "'val_accuracy'"),
        (mlp_job(ds, schedule={"type": "Exp", "start": 0.1, "decay": -1}), 422,
         ["body", "schedule", "decay"], "must be"),
        (mlp_job(ds, surprise=1), 422, ["body", "surprise"], "Extra"),
    ]


CASES = ["malformed-json", "unknown-layer", "zero-width", "unknown-rule", "lr-not-eta",
         "wrong-input-shape", "loss-vs-output", "negative-epochs", "zero-batch",
         "10^12-parameters", "unknown-loss", "unknown-array", "unknown-dataset",
         "stop-needs-validation", "stop-on-unrecorded-metric", "bad-schedule",
         "unknown-field"]


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASES)
def test_bad_job_is_refused_naming_the_field_and_nothing_is_queued(user, dataset_id, case):
    body, status, where, words = _bad_cases(dataset_id)[case]
    if isinstance(body, bytes):
        r = user.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    else:
        r = user.post("/v1/jobs", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert any(d["loc"][:len(where)] == where and words in d["msg"] for d in detail), detail
    assert user.get("/v1/jobs").json()["data"] == []


def test_a_json_body_over_the_limit_is_413_and_nothing_is_queued(user, dataset_id):
    """KILN_MAX_BODY_BYTES bounds what a request may make the server read into memory;
    an upload larger than that still streams in (it has its own, larger limit)."""
    spec = {**mlp_job(dataset_id), "name": "x" * MAX_BODY_BYTES}
    r = user.post("/v1/jobs", json=spec)
    assert r.status_code == 413, r.text
    assert user.get("/v1/jobs").json()["data"] == []
    big = npz_bytes(x=np.zeros(MAX_BODY_BYTES // 8 + 1000))
    assert MAX_BODY_BYTES < len(big) < MAX_UPLOAD_BYTES
    assert upload(user, big).status_code == 201


def test_another_users_dataset_cannot_be_trained_on(other_user, dataset_id):
    r = other_user.post("/v1/jobs", json=mlp_job(dataset_id))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "train", "dataset"]


def test_validation_shapes_must_match_training(user, digits, dataset_id):
    small = upload(user, npz_bytes(x=digits["x"][:10, :32], y=digits["y"][:10])).json()["id"]
    r = user.post("/v1/jobs", json=mlp_job(dataset_id, validation={"dataset": small}))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "validation", "x"]


def test_list_filters_by_status_and_pages_with_a_cursor(user, dataset_id):
    ids = [user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"] for _ in range(5)]
    user.post(f"/v1/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        page = user.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        seen += [j["id"] for j in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    queued = user.get("/v1/jobs", params={"status": "queued"}).json()["data"]
    assert sorted(j["id"] for j in queued) == sorted(ids[1:])
    assert user.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422


def test_another_users_job_is_not_found(user, other_user, dataset_id):
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    for method, path in [("get", ""), ("post", "/cancel"), ("post", "/pause"),
                         ("get", "/controls"), ("get", "/epochs"), ("get", "/steps"),
                         ("get", "/state"), ("get", "/weights")]:
        assert getattr(other_user, method)(f"/v1/jobs/{job_id}{path}").status_code == 404, path
    r = other_user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze"})
    assert r.status_code == 404
    assert user.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    assert user.get(f"/v1/jobs/{job_id}/controls").json() == []


def test_controls_are_numbered_and_validated_against_the_model(user, dataset_id):
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    post = lambda body: user.post(f"/v1/jobs/{job_id}/controls", json=body)
    r = post({"kind": "adjust", "path": "layers.enc", "hyper": {"eta": 1e-4}})
    assert r.status_code == 201, r.text
    assert (r.json()["seq"], r.json()["status"]) == (1, "pending")
    assert post({"kind": "freeze", "path": "layers.enc"}).json()["seq"] == 2
    assert post({"kind": "thaw"}).json()["seq"] == 3

    r = post({"kind": "freeze", "path": "layers.encc"})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "path"] and "'layers.enc'" in err["msg"]
    r = post({"kind": "adjust", "path": "layers.dec", "hyper": {"eta": 0.1, "lr": 0.1}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "hyper", "lr"]
    assert "'eta', 'beta', 'epsilon'" in r.json()["detail"][0]["msg"]
    r = post({"kind": "adjust", "hyper": {"eta": -1}})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "hyper", "eta"] and "must be >= 0" in err["msg"]
    assert post({"kind": "adjust", "path": "layers.enc"}).status_code == 422  # no hyper
    assert post({"kind": "explode"}).status_code == 422
    assert [c["seq"] for c in user.get(f"/v1/jobs/{job_id}/controls").json()] == [1, 2, 3]


def test_a_hyper_parameter_is_named_as_json_spells_it(user, dataset_id):
    chained = {"rule": "OptimiserChain", "rules": [{"rule": "WeightDecay", "lambda": 1e-4},
                                                   {"rule": "Adam"}]}
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id, optimiser=chained)).json()["id"]
    post = lambda hyper: user.post(f"/v1/jobs/{job_id}/controls",
                                   json={"kind": "adjust", "hyper": hyper})
    r = post({"lamda": 1e-3})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "hyper", "lamda"]
    assert "'lambda'" in err["msg"] and "lambda_" not in err["msg"]
    assert post({"lambda": 1e-3}).status_code == 201


@pytest.mark.parametrize("changes", [
    {}, {"optimiser": {"rule": "OptimiserChain", "rules": [{"rule": "ClipNorm"},
                                                           {"rule": "Momentum"}]},
         "schedule": {"type": "Exp", "start": 0.01, "decay": 0.9}}])
def test_a_queued_jobs_state_is_the_tree_its_worker_will_start_with(user, dataset_id, digits,
                                                                     changes):
    """Before any worker reported, /state is what a worker's first report would be."""
    spec = mlp_job(dataset_id, **changes)
    job = user.post("/v1/jobs", json=spec).json()
    r = user.get(f"/v1/jobs/{job['id']}/state")
    assert r.status_code == 200
    trainer = build_trainer(job["spec"], {dataset_id: digits})
    assert r.json() == state_tree(trainer)


def test_lifecycle_of_a_job_no_worker_holds(user, dataset_id):
    job_id = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()["id"]
    act = lambda what: user.post(f"/v1/jobs/{job_id}/{what}")
    assert act("resume").status_code == 409  # queued, not paused
    assert act("pause").json()["status"] == "paused"
    assert act("pause").status_code == 409
    assert act("resume").json()["status"] == "queued"
    assert act("cancel").json()["status"] == "cancelled"
    for what in ("cancel", "pause", "resume"):
        assert act(what).status_code == 409
    r = user.post(f"/v1/jobs/{job_id}/controls", json={"kind": "freeze"})
    assert r.status_code == 409 and "finished" in r.json()["detail"]
    kinds = [(c["kind"], c["status"]) for c in user.get(f"/v1/jobs/{job_id}/controls").json()]
    assert kinds == [("pause", "applied"), ("resume", "applied"), ("cancel", "applied")]


def test_openapi_documents_every_route(server):
    import httpx

    spec = httpx.get(server.url + "/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"create_job", "list_jobs", "create_control", "upload_dataset", "claim_job",
            "heartbeat", "finish_job", "job_events", "jobs_events"} <= ops
    assert np.all([op.get("summary") for path in spec["paths"].values()
                   for op in path.values()])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs <= set(spec["components"]["schemas"])  # every schema it names is there
    finish = spec["paths"]["/v1/worker/jobs/{job_id}/finish"]["post"]["requestBody"]
    assert set(finish["content"]) == {"application/json", "multipart/form-data"}


def test_every_field_users_read_is_described_in_the_openapi_document(server):
    import httpx

    schemas = httpx.get(server.url + "/openapi.json").json()["components"]["schemas"]
    for name in ("JobPublic", "JobsPublic", "JobLatest", "JobWorker", "ControlPublic",
                 "EpochPublic", "StepsPublic", "WorkerPublic", "WorkersPublic"):
        props = schemas[name]["properties"]
        undescribed = [p for p, s in props.items() if not s.get("description")]
        assert props and not undescribed, (name, undescribed)
    job = schemas["JobPublic"]["properties"]
    assert "completed" in job["epoch"]["description"]
    assert "completed" in job["step"]["description"]
    assert {"epochs", "steps_per_epoch", "requested", "latest", "worker"} <= set(job)
