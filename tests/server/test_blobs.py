"""The blob store's contract, held by both backends: the local directory and S3 (through
moto's S3 server on 127.0.0.1). Staging hashes and limits an upload before anything
reaches the store; commit keeps it under its sha256; a read streams it back; a blob the
store lacks is BlobMissingError and a store that does not answer BlobStoreUnavailableError
(the API's 404 and 503)."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kiln_server.blobs import (
    BlobMissingError,
    BlobStore,
    BlobStoreUnavailableError,
    LocalBlobStore,
    TooLargeError,
    open_store,
    parse_location,
)
from kiln_server.blobs.s3 import S3BlobStore
from kiln_server.blobs.store import CHUNK_BYTES
from kiln_server.settings import Settings

from . import s3_support
from .conftest import free_port

s3 = s3_support.s3


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    srv = request.getfixturevalue("s3")
    return S3BlobStore(srv.new_bucket(), "some/prefix", tmp_path / "staging",
                       endpoint_url=srv.url)


def put(store: BlobStore, data: bytes, limit: int = 1 << 30, chunk: int = 1000) -> str:
    staged = store.staging(limit)
    for i in range(0, len(data), chunk):
        staged.write(data[i:i + chunk])
    staged.close()
    return store.commit(staged)


def staged_files(store: BlobStore) -> list[Path]:
    root = store.root if isinstance(store, LocalBlobStore) else store.staging_dir
    return list(root.glob(".incoming-*"))


def test_a_blob_is_kept_under_its_sha256_and_streams_back_whole(store):
    data = os.urandom(2 * CHUNK_BYTES + 12345)  # more than one chunk
    sha = put(store, data, chunk=65536)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.exists(sha)
    stream = store.open(sha)
    assert stream.size == len(data)
    chunks = list(stream)
    assert len(chunks) > 1 and b"".join(chunks) == data
    assert staged_files(store) == []  # the staging file went into the store


def test_the_same_content_twice_is_one_blob(store):
    data = b"the same bytes" * 100
    assert put(store, data) == put(store, data)
    assert b"".join(store.open(hashlib.sha256(data).hexdigest())) == data
    assert staged_files(store) == []


def test_an_upload_over_the_limit_leaves_nothing_behind(store):
    staged = store.staging(limit=2500)
    staged.write(b"x" * 2000)
    with pytest.raises(TooLargeError, match="2,500 bytes"):
        staged.write(b"x" * 1000)
    assert staged_files(store) == []
    assert not store.exists(hashlib.sha256(b"x" * 2000).hexdigest())


def test_a_discarded_staging_file_is_removed(store):
    staged = store.staging(limit=100)
    staged.write(b"abc")
    staged.discard()
    assert staged_files(store) == []


def test_a_missing_blob_is_blob_missing_error(store):
    absent = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(absent)
    with pytest.raises(BlobMissingError, match=absent):
        store.open(absent)
    with pytest.raises(BlobMissingError):
        store.response(absent)
    for bad in ("not-a-sha", "../" + absent[3:], absent.upper()):
        assert not store.exists(bad)
        with pytest.raises(BlobMissingError):
            store.open(bad)


def test_a_deleted_blob_is_gone_and_deleting_again_is_harmless(store):
    sha = put(store, b"short-lived")
    store.delete(sha)
    assert not store.exists(sha)
    with pytest.raises(BlobMissingError):
        store.open(sha)
    store.delete(sha)


def test_marks_are_kept_apart_from_blobs(store):
    assert store.read_mark("store-abc") is None
    store.write_mark("store-abc", b"hello")
    assert store.read_mark("store-abc") == b"hello"
    store.write_mark("store-abc", b"again")
    assert store.read_mark("store-abc") == b"again"
    store.delete_mark("store-abc")
    assert store.read_mark("store-abc") is None
    with pytest.raises(ValueError):
        store.write_mark("../escape", b"no")


def test_the_s3_store_keeps_blobs_under_its_prefix(s3, tmp_path):
    bucket = s3.new_bucket()
    store = S3BlobStore(bucket, "/kiln/blobs/", tmp_path, endpoint_url=s3.url)
    sha = put(store, b"under the prefix")
    store.write_mark("store-1", b"m")
    assert s3.keys(bucket) == ["kiln/blobs/.marks/store-1", f"kiln/blobs/{sha}"]
    assert str(store) == f"s3://{bucket}/kiln/blobs at {s3.url}"


def test_an_unreachable_s3_store_is_blob_store_unavailable(s3, tmp_path):
    store = S3BlobStore("kiln-nowhere", "", tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}")
    sha = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(BlobStoreUnavailableError, match="kiln-nowhere"):
        store.open(sha)
    with pytest.raises(BlobStoreUnavailableError):
        store.exists(sha)
    with pytest.raises(BlobStoreUnavailableError):
        put(store, b"x")
    assert list(tmp_path.iterdir()) == []  # the staging file is gone all the same


def test_a_missing_bucket_is_blob_store_unavailable_not_a_missing_blob(s3, tmp_path):
    store = S3BlobStore("kiln-no-such-bucket", "", tmp_path, endpoint_url=s3.url)
    with pytest.raises(BlobStoreUnavailableError, match="NoSuchBucket"):
        store.open(hashlib.sha256(b"x").hexdigest())
    with pytest.raises(BlobStoreUnavailableError, match="NoSuchBucket"):
        store.read_mark("store-1")


def test_kiln_blob_store_picks_the_backend(tmp_path, s3):
    assert open_store(Settings(data_dir=tmp_path)).root == (tmp_path / "blobs").resolve()
    local = open_store(Settings(data_dir=tmp_path, blob_store=f"file://{tmp_path}/shared"))
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "shared"
    remote = open_store(Settings(data_dir=tmp_path, blob_store="s3://a-bucket/p/q",
                                 s3_endpoint_url=s3.url, s3_region="eu-west-1"))
    assert isinstance(remote, S3BlobStore)
    assert (remote.bucket, remote.prefix) == ("a-bucket", "p/q")
    assert remote.client.meta.region_name == "eu-west-1"
    assert remote.staging_dir == tmp_path / "staging"


@pytest.mark.parametrize("value", ["/no/scheme", "file://relative/path", "file:relative",
                                   "s3://", "s3://UPPER", "s3://ab", "s3://bucket/a//b",
                                   "s3://bucket/../up", "gs://bucket", "s3://bucket?x=1"])
def test_a_bad_kiln_blob_store_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="KILN_BLOB_STORE must be file:///"):
        parse_location(value)
    with pytest.raises(ValueError, match="KILN_BLOB_STORE"):
        Settings(blob_store=value)


def test_a_blob_written_again_is_not_one_written_before_and_is_kept(store):
    """The sweep's two questions: which blobs were last written before a moment, and
    remove one only if it was (a commit of the same content writes it again). S3 keeps
    the time to the second: the moments are a second and more apart."""
    old, renewed = put(store, b"old" * 10), put(store, b"renewed" * 10)
    time.sleep(1.1)
    mid = datetime.now(UTC)
    time.sleep(1.1)
    new = put(store, b"new" * 10)
    assert sorted(store.written_before(mid)) == sorted([old, renewed])
    assert put(store, b"renewed" * 10) == renewed  # the same content, committed again
    assert list(store.written_before(mid)) == [old]
    assert set(store.written_before(datetime.now(UTC) + timedelta(seconds=2))) == {
        old, renewed, new}
    assert not store.delete_if_written_before(renewed, mid)  # written since: kept
    assert not store.delete_if_written_before(new, mid)
    assert store.delete_if_written_before(old, mid)
    assert not store.exists(old) and store.exists(renewed) and store.exists(new)
    assert not store.delete_if_written_before(old, mid)  # gone already
    store.write_mark("m1", b"x")  # marks are not blobs
    assert list(store.written_before(datetime.now(UTC) + timedelta(seconds=2))) != []
    assert all(len(s) == 64 for s in store.written_before(
        datetime.now(UTC) + timedelta(seconds=2)))
