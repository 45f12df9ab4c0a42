"""The OpenAPI document carries the engine's spec schemas, and its example job is accepted."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from kiln_engine import model_schema, optimiser_schema
from kiln_engine.json_schema import spec_definitions
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .conftest import npz_bytes, upload

SCHEMAS = "#/components/schemas/"


@pytest.fixture(scope="module")
def doc(server) -> dict:
    r = httpx.get(server.url + "/openapi.json")
    assert r.status_code == 200
    return r.json()


def _validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    """A validator of the document's schema ``name``, its references resolved in it."""
    registry = Registry().with_resource("urn:kiln", Resource(doc, DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"urn:kiln{SCHEMAS}{name}"},
                                           registry=registry)


def test_the_document_holds_the_engines_spec_schemas(doc):
    schemas = doc["components"]["schemas"]
    specs = spec_definitions(SCHEMAS)
    assert {"ModelSpec", "OptimiserSpec", "ScheduleSpec", "DenseLayer", "AdamRule",
            "ExpSchedule", "Activation"} <= set(specs)
    assert {name: schemas.get(name) for name in specs} == specs
    for schema in schemas.values():  # each is a valid 2020-12 schema (OpenAPI 3.1's dialect)
        jsonschema.Draft202012Validator.check_schema(schema)
    assert "x-kiln-spec" not in json.dumps(doc)  # every mark became a reference


def test_job_create_refers_to_them(doc):
    props = doc["components"]["schemas"]["JobCreate"]["properties"]
    assert props["model"]["$ref"] == SCHEMAS + "ModelSpec"
    assert props["optimiser"]["$ref"] == SCHEMAS + "OptimiserSpec"
    assert {"$ref": SCHEMAS + "ScheduleSpec"} in props["schedule"]["anyOf"]
    post = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert post["schema"] == {"$ref": SCHEMAS + "JobCreate"}


def test_the_documents_job_schema_checks_the_specs(doc):
    job = _validator(doc, "JobCreate")
    [example] = doc["components"]["schemas"]["JobCreate"]["examples"]
    job.validate(example)
    bad_model = {**example, "model": {"type": "Chain", "layers": {"enc": {"type": "Dense",
                                                                           "in": 64, "out": 0}}}}
    bad_rule = {**example, "optimiser": {"rule": "Adam", "eta": -1}}
    bad_schedule = {**example, "schedule": {"type": "Exp", "start": 0.1}}
    for body in (bad_model, bad_rule, bad_schedule):
        assert not job.is_valid(body)


def test_the_example_job_is_accepted_by_post_jobs(doc, user, digits):
    [example] = doc["components"]["schemas"]["JobCreate"]["examples"]
    jsonschema.validate(example["model"], model_schema())
    jsonschema.validate(example["optimiser"], optimiser_schema())
    x, y = digits["x"], digits["y"]
    names = {example["train"]["x"]: x[:1400], example["train"]["y"]: y[:1400],
             example["validation"]["x"]: x[1400:], example["validation"]["y"]: y[1400:]}
    r = upload(user, npz_bytes(**names), "digits")
    assert r.status_code == 201, r.text
    dataset = r.json()["id"]
    body = {**example, "train": {**example["train"], "dataset": dataset},
            "validation": {**example["validation"], "dataset": dataset}}
    r = user.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["name"] == example["name"]
    assert job["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert user.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
