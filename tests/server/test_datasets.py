"""Datasets over HTTP: upload checks, ownership, delete refused while a job uses it."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from .conftest import MAX_UPLOAD_BYTES, mlp_job, npz_bytes, upload


def test_upload_records_arrays_and_hash(user, digits, digits_npz):
    import hashlib

    content = digits_npz.read_bytes()
    r = upload(user, content, "digits")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["sha256"] == hashlib.sha256(content).hexdigest()
    assert ds["size_bytes"] == len(content)
    assert {a["name"]: (a["shape"], a["dtype"]) for a in ds["arrays"]} == {
        k: (list(v.shape), v.dtype.name) for k, v in digits.items()}
    assert user.get(f"/v1/datasets/{ds['id']}").json() == ds
    assert [d["id"] for d in user.get("/v1/datasets").json()["data"]] == [ds["id"]]


def _pickled_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}, None], dtype=object))
    return buf.getvalue()


def _zip_of_text() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", "not an array")
    return buf.getvalue()


@pytest.mark.parametrize(("content", "words"), [
    (b"hello, not a zip", "not an .npz"),
    (pickle.dumps({"x": [1, 2]}), "not an .npz"),
    (_pickled_npz(), "unpickling"),
    (_zip_of_text(), "not a .npy array"),
    (npz_bytes(x=np.array([1.0, np.nan], dtype=np.float32)), "non-finite"),
    (npz_bytes(x=np.array([1.0, np.inf])), "non-finite"),
    (npz_bytes(x=np.array(3.0)), "scalar"),
    (npz_bytes(x=np.array(["a", "b"])), "dtype"),
], ids=["text", "pickle", "object-array", "bad-member", "nan", "inf", "scalar", "strings"])
def test_bad_upload_is_422_naming_the_problem_and_keeps_nothing(user, server, content, words):
    blobs_before = sorted(p.name for p in (server.data_dir / "blobs").rglob("*"))
    r = upload(user, content)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "file"]
    assert words in err["msg"]
    assert user.get("/v1/datasets").json()["count"] == 0
    assert sorted(p.name for p in (server.data_dir / "blobs").rglob("*")) == blobs_before


def test_upload_over_the_limit_is_413(user):
    big = npz_bytes(x=np.zeros(MAX_UPLOAD_BYTES // 8 + 10))
    assert upload(user, big).status_code == 413

    def chunks():  # no Content-Length: refused while streaming
        yield big[:1000]
        yield big[1000:]

    r = user.post("/v1/datasets", content=chunks())
    assert r.status_code == 413
    assert user.get("/v1/datasets").json()["count"] == 0


def test_another_users_dataset_is_not_found(user, other_user, dataset_id):
    assert other_user.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert other_user.delete(f"/v1/datasets/{dataset_id}").status_code == 404
    assert other_user.get("/v1/datasets").json()["count"] == 0
    assert user.get(f"/v1/datasets/{dataset_id}").status_code == 200


def test_delete_is_refused_while_a_job_uses_it(user, server, digits):
    salt = np.random.default_rng().random(4)  # content no other test uploads: its own blob
    ds = upload(user, npz_bytes(**digits, salt=salt)).json()
    dataset_id, sha = ds["id"], ds["sha256"]
    blob = server.data_dir / "blobs" / sha[:2] / sha
    assert blob.is_file()
    job = user.post("/v1/jobs", json=mlp_job(dataset_id)).json()
    r = user.delete(f"/v1/datasets/{dataset_id}")
    assert r.status_code == 409 and job["id"] in r.json()["detail"]
    assert user.get(f"/v1/datasets/{dataset_id}").status_code == 200
    assert user.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert user.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert user.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert not blob.exists()  # its last user is gone


def test_tokens_are_required(server):
    import httpx

    assert httpx.get(server.url + "/v1/datasets").status_code == 401
    r = httpx.get(server.url + "/v1/datasets", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


# --- multipart uploads (what curl -F sends) ---------------------------------------------

def _blob_names(server) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "blobs").rglob("*"))


def test_a_multipart_upload_is_taken_and_named_after_its_file(user, digits, digits_npz):
    import hashlib

    content = digits_npz.read_bytes()
    r = user.post("/v1/datasets", files={"file": ("digits.npz", content)})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["name"] == "digits"
    assert ds["sha256"] == hashlib.sha256(content).hexdigest()  # the file, not the form
    assert ds["size_bytes"] == len(content)
    assert {a["name"]: (a["shape"], a["dtype"]) for a in ds["arrays"]} == {
        k: (list(v.shape), v.dtype.name) for k, v in digits.items()}
    assert user.get(f"/v1/datasets/{ds['id']}").json() == ds


def test_the_name_comes_from_the_query_then_the_form_then_the_file(user):
    content = npz_bytes(x=np.ones((2, 2)))
    post = lambda **kw: user.post("/v1/datasets", **kw).json()["name"]
    assert post(files={"file": ("dir/Data.NPZ", content)}) == "Data"
    assert post(files={"file": ("a.npz", content), "name": (None, "from-form")}) == "from-form"
    assert post(files={"file": ("a.npz", content), "name": (None, "from-form")},
                params={"name": "from-query"}) == "from-query"


@pytest.mark.parametrize(("files", "words"), [
    ({"name": (None, "only a name")}, "got the fields ['name']"),
    ({"data": ("d.npz", b"PK")}, "got the fields ['data']"),
    ({"file": (None, "text, not a file")}, "file of the field 'file'"),
], ids=["no-file", "file-under-another-name", "file-as-text"])
def test_a_form_without_its_file_is_422_naming_body_file(user, files, words):
    r = user.post("/v1/datasets", files=files)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "file"] and words in err["msg"]
    assert "curl -F file=@data.npz" in err["msg"]
    assert user.get("/v1/datasets").json()["count"] == 0


def test_a_bad_file_or_form_is_422_and_keeps_nothing(user, server):
    before = _blob_names(server)
    r = user.post("/v1/datasets", files={"file": ("x.npz", pickle.dumps({"x": [1]}))})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    assert "not an .npz" in r.json()["detail"][0]["msg"]
    r = user.post("/v1/datasets", content=b"--x\r\n", headers={
        "Content-Type": "multipart/form-data"})  # no boundary
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    r = user.post("/v1/datasets", files={"file": ("x.npz", b"PK"), "name": (None, "n" * 201)})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]
    assert user.get("/v1/datasets").json()["count"] == 0
    assert _blob_names(server) == before


def test_a_multipart_upload_over_the_limit_is_413_and_keeps_nothing(user, server):
    from .conftest import MAX_BODY_BYTES

    before = _blob_names(server)
    just_over = npz_bytes(x=np.zeros(MAX_UPLOAD_BYTES // 8 + 10))  # the file is too large
    far_over = npz_bytes(x=np.zeros((MAX_UPLOAD_BYTES + MAX_BODY_BYTES) // 8 + 10))
    for content in (just_over, far_over):  # the second is refused by its Content-Length
        r = user.post("/v1/datasets", files={"file": ("big.npz", content)})
        assert r.status_code == 413, r.text
        assert "limit" in r.json()["detail"]
    assert user.get("/v1/datasets").json()["count"] == 0
    assert _blob_names(server) == before


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded",  # what curl --data-binary sends unless told
    "application/json", "text/plain",
])
def test_another_content_type_is_415_saying_how_to_send_it(user, content_type):
    r = user.post("/v1/datasets", content=npz_bytes(x=np.ones(3)),
                  headers={"Content-Type": content_type})
    assert r.status_code == 415, r.text
    msg = r.json()["detail"]
    assert repr(content_type) in msg
    assert "curl -F file=@data.npz" in msg
    assert "curl --data-binary @data.npz -H 'Content-Type: application/octet-stream'" in msg
    assert user.get("/v1/datasets").json()["count"] == 0


def test_the_openapi_document_offers_both_bodies(server):
    import httpx

    doc = httpx.get(server.url + "/openapi.json").json()
    body = doc["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/octet-stream", "multipart/form-data"}
    assert body["multipart/form-data"]["schema"]["required"] == ["file"]
