"""The blob store under a real ``kiln-server serve``: a digits job trained end to end with
its blobs in S3 (moto's S3 server on 127.0.0.1); a blob the store lacks is a 404 and a
store that does not answer a 503, never a 500; and a worker that cannot fetch a blob
retries, then releases the job, so that a blob that comes back (another replica, a
restored store) still trains it. A blob still missing at the job's fifth claim fails it,
saying so."""

from __future__ import annotations

import hashlib
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from kiln_server.worker.run import BLOB_ATTEMPTS

from . import e2e_support, s3_support
from .conftest import Server, npz_bytes, upload
from .e2e_support import (
    digits_job,
    digits_split,
    finished,
    get_job,
    new_client,
    reference_run,
    submit,
    wait_for,
    weights,
)
from .s3_support import S3Server

s3 = s3_support.s3
make_workers = e2e_support.make_workers

#: How long a worker keeps asking for a blob before it releases the job (told at claim).
BLOB_RETRY_S = 1.5


def s3_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return {"KILN_BLOB_STORE": f"s3://{bucket}/kiln", "KILN_S3_ENDPOINT_URL": s3.url}


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server (SQLite) with the default blob store, <data_dir>/blobs."""
    srv = Server(tmp_path_factory.mktemp("blobs-local"),
                 env={"KILN_BLOB_RETRY_S": str(BLOB_RETRY_S)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def s3_server(s3: S3Server, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Server, str]]:
    """A server (SQLite) whose blobs are in a bucket of their own; (server, bucket)."""
    bucket = s3.new_bucket()
    srv = Server(tmp_path_factory.mktemp("blobs-s3"), env=s3_env(s3, bucket))
    yield srv, bucket
    srv.stop()


def salted_digits() -> dict[str, np.ndarray]:
    """The digits split with an array of its own: a blob no other test shares."""
    return {**digits_split(), "salt": np.frombuffer(secrets.token_bytes(8), np.uint8)}


def upload_dataset(client: httpx.Client, arrays: dict[str, np.ndarray]) -> tuple[str, str]:
    """(dataset id, its blob's sha256)."""
    r = upload(client, npz_bytes(**arrays), "digits")
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["sha256"]


def local_blob(server: Server, sha: str) -> Path:
    return server.data_dir / "blobs" / sha[:2] / sha


def hold_weights(server: Server, client: httpx.Client, dataset: str, content: bytes) -> str:
    """A job of ``client``'s on ``dataset`` with ``content`` as its weights, put there by
    a worker holding it (through the worker API); the job's id."""
    job_id = submit(client, digits_job(dataset, epochs=1))
    worker, _ = new_client(server, worker=True)
    with worker:
        wid = worker.post("/v1/worker/register", json={"name": "t", "device": {}}).json()["id"]
        while True:  # what an earlier test left queued is claimed (and cancelled) first
            claim = worker.post("/v1/worker/claim", json={"worker_id": wid}).json()
            lease = {"Kiln-Lease": claim["lease_token"]}
            if claim["job_id"] == job_id:
                break
            worker.post(f"/v1/worker/jobs/{claim['job_id']}/finish", headers=lease,
                        json={"status": "cancelled", "epoch": 0, "step": 0})
        r = worker.put(f"/v1/worker/jobs/{job_id}/weights", headers=lease, content=content)
        assert r.status_code == 204, r.text
        r = worker.post(f"/v1/worker/jobs/{job_id}/finish", headers=lease,
                        json={"status": "cancelled", "epoch": 0, "step": 0})
        assert r.status_code == 204, r.text
    return job_id


def assert_missing(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "is not in this server's blob store" in detail
    for w in words:
        assert w in detail


# ---------------------------------------------------------------- S3, end to end


def test_a_digits_job_trains_end_to_end_with_its_blobs_in_s3(s3, s3_server, make_workers):
    srv, bucket = s3_server
    client, _ = new_client(srv)
    arrays = digits_split()
    ds, ds_sha = upload_dataset(client, arrays)
    job = digits_job(ds, epochs=3, stop=None)
    job_id = submit(client, job)
    make_workers(srv).start(1)

    done = finished(client, job_id)
    assert done["status"] == "succeeded", done["error"]
    r = client.get(f"/v1/jobs/{job_id}/weights")  # streamed from the bucket
    assert r.status_code == 200, r.text
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["content-disposition"] == f'attachment; filename="{job_id}.safetensors"'
    expected, _ = reference_run(job, ds, arrays)
    got = weights(client, job_id)
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])

    # Every blob is in the bucket, under the prefix: the dataset, the final weights, the
    # checkpoints; nothing is kept in the data directory.
    keys = s3.keys(bucket)
    assert f"kiln/{ds_sha}" in keys
    assert f"kiln/{hashlib.sha256(r.content).hexdigest()}" in keys
    assert [k for k in keys if k.startswith("kiln/.marks/")] != []
    assert not (srv.data_dir / "blobs").exists()
    assert list((srv.data_dir / "staging").iterdir()) == []


# ---------------------------------------------------------------- a missing blob: 404


def test_a_blob_missing_from_the_local_store_is_a_404_not_a_500(local_server):
    client, _ = new_client(local_server)
    ds, ds_sha = upload_dataset(client, salted_digits())
    job_id = hold_weights(local_server, client, ds, b"some weights")
    assert client.get(f"/v1/jobs/{job_id}/weights").content == b"some weights"
    local_blob(local_server, hashlib.sha256(b"some weights").hexdigest()).unlink()
    local_blob(local_server, ds_sha).unlink()

    assert_missing(client.get(f"/v1/jobs/{job_id}/weights"), f"job {job_id!r}'s weights")
    worker, _ = new_client(local_server, worker=True)
    with worker:
        assert_missing(worker.get(f"/v1/worker/blobs/{ds_sha}"), ds_sha)
        assert_missing(worker.get("/v1/worker/blobs/not-a-sha256"))


def test_a_blob_missing_from_the_bucket_is_a_404_not_a_500(s3, s3_server):
    srv, bucket = s3_server
    client, _ = new_client(srv)
    ds, ds_sha = upload_dataset(client, salted_digits())
    job_id = hold_weights(srv, client, ds, b"weights in s3")
    assert client.get(f"/v1/jobs/{job_id}/weights").content == b"weights in s3"
    for sha in (hashlib.sha256(b"weights in s3").hexdigest(), ds_sha):
        s3.client().delete_object(Bucket=bucket, Key=f"kiln/{sha}")

    assert_missing(client.get(f"/v1/jobs/{job_id}/weights"), f"job {job_id!r}'s weights")
    worker, _ = new_client(srv, worker=True)
    with worker:
        assert_missing(worker.get(f"/v1/worker/blobs/{ds_sha}"), ds_sha)


def test_an_unreachable_bucket_is_a_503_not_a_500(tmp_path):
    moto = S3Server(tmp_path)
    bucket = moto.new_bucket()
    (tmp_path / "srv").mkdir()
    srv = Server(tmp_path / "srv", env=s3_env(moto, bucket))
    try:
        client, _ = new_client(srv)
        ds, ds_sha = upload_dataset(client, salted_digits())
        job_id = hold_weights(srv, client, ds, b"weights")
        moto.stop()  # the store goes away

        r = client.get(f"/v1/jobs/{job_id}/weights")
        assert r.status_code == 503, r.text
        assert r.json()["detail"] == "the blob store is unavailable; try again shortly"
        assert int(r.headers["retry-after"]) > 0
        worker, _ = new_client(srv, worker=True)
        with worker:
            assert worker.get(f"/v1/worker/blobs/{ds_sha}").status_code == 503
        r = upload(client, npz_bytes(**salted_digits()))
        assert r.status_code == 503, r.text
        assert list((srv.data_dir / "staging").iterdir()) == []
    finally:
        srv.stop()
        moto.stop()


# ---------------------------------------------------------------- the worker's side


def hide(server: Server, sha: str, where: Path) -> None:
    shutil.move(local_blob(server, sha), where)


def restore(server: Server, sha: str, where: Path) -> None:
    shutil.move(where, local_blob(server, sha))


def test_a_worker_retries_a_blob_the_server_lacks_for_a_moment(local_server, make_workers,
                                                               tmp_path):
    client, _ = new_client(local_server)
    ds, sha = upload_dataset(client, salted_digits())
    hide(local_server, sha, tmp_path / "away")
    job_id = submit(client, digits_job(ds, epochs=2, stop=None))
    workers = make_workers(local_server)
    workers.start(1)
    wait_for("the worker's first 404", lambda: f"GET blob {sha} failed (HTTP 404"
             in workers.logs()[0])
    restore(local_server, sha, tmp_path / "away")

    done = finished(client, job_id)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 1  # fetched within the claim, on a later try


def test_a_worker_releases_a_job_whose_blob_stays_missing_and_it_trains_later(
        local_server, make_workers, tmp_path):
    client, _ = new_client(local_server)
    ds, sha = upload_dataset(client, salted_digits())
    hide(local_server, sha, tmp_path / "away")
    job_id = submit(client, digits_job(ds, epochs=2, stop=None))
    workers = make_workers(local_server)
    workers.start(1)
    # Released after BLOB_RETRY_S of 404s, queued again, claimed again: not failed.
    job = wait_for("a second claim", lambda: (
        j if (j := get_job(client, job_id))["attempt"] >= 2 else None))
    assert job["status"] in ("queued", "running") and job["error"] is None
    assert f"job {job_id}: released at step 0" in workers.logs()[0]
    restore(local_server, sha, tmp_path / "away")

    done = finished(client, job_id)
    assert done["status"] == "succeeded", done["error"]
    assert 2 <= done["attempt"] < BLOB_ATTEMPTS


def test_a_blob_missing_at_every_claim_fails_the_job_saying_so(local_server, make_workers,
                                                                tmp_path):
    client, _ = new_client(local_server)
    ds, sha = upload_dataset(client, salted_digits())
    local_blob(local_server, sha).unlink()
    job_id = submit(client, digits_job(ds, epochs=1, stop=None))
    make_workers(local_server).start(1)

    done = finished(client, job_id, timeout=BLOB_ATTEMPTS * (BLOB_RETRY_S + 5) + 30)
    assert done["status"] == "failed"
    assert done["attempt"] == BLOB_ATTEMPTS
    assert f"unavailable at each of its {BLOB_ATTEMPTS} claims" in done["error"]
    assert f"GET blob {sha}: HTTP 404" in done["error"]
