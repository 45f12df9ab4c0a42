"""The S3 blob store: objects in a bucket of Amazon S3 or of an S3-compatible service
(MinIO, Ceph, …), through boto3.

A blob is the object ``<prefix>/<sha256>``, a mark ``<prefix>/.marks/<name>``. An upload
is staged in a local directory (hashed and held to its size limit as it streams in), then
committed by boto3's managed transfer (multipart when large) under its hash, unless the
bucket already holds it; a read streams the object's body. Credentials come from boto3's
standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .staging import Staging
from .store import (
    CHUNK_BYTES,
    BlobMissingError,
    BlobStore,
    BlobStoreUnavailableError,
    BlobStream,
    check_mark,
    check_sha256,
    is_sha256,
)

__all__ = ["S3BlobStore"]

#: Error codes that mean "no such object" (a HEAD's has no body: only its status).
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
#: Seconds to connect to the service, and to wait for its answer, before boto3 retries.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
#: boto3's attempts at one call (its "standard" retry mode, with back-off).
MAX_ATTEMPTS = 3


class S3BlobStore(BlobStore):
    """Blobs in ``bucket`` under ``prefix``, staged in ``staging_dir``; ``endpoint_url``
    for a service other than AWS (path-style addressing then, as MinIO wants)."""

    def __init__(self, bucket: str, prefix: str, staging_dir: Path, *,
                 endpoint_url: str | None = None, region: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.staging_dir = Path(staging_dir)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                        s3={"addressing_style": "path"} if endpoint_url else None)
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def __str__(self) -> str:
        return self.location + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _blob(self, sha256: str) -> str:
        return self._key(check_sha256(sha256))

    def _mark(self, name: str) -> str:
        return self._key(f".marks/{check_mark(name)}")

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """The service's errors as BlobStoreUnavailableError (``what``: the call, in words)."""
        try:
            yield
        except ClientError as e:
            err = e.response.get("Error", {})
            raise BlobStoreUnavailableError(
                f"the blob store {self} refused to {what}: {err.get('Code')}: "
                f"{err.get('Message')}") from e
        except (BotoCoreError, Boto3Error) as e:
            raise BlobStoreUnavailableError(f"the blob store {self} did not {what}: {e}") \
                from e

    @staticmethod
    def _missing(e: ClientError) -> bool:
        return str(e.response.get("Error", {}).get("Code")) in _MISSING

    def staging(self, limit: int) -> Staging:
        return Staging(self.staging_dir, limit)

    def commit(self, staged: Staging) -> str:
        key = self._blob(staged.sha256)
        try:
            if self.exists(staged.sha256):  # written again, in place: the sweep spares it
                with self._calling("renew a blob"):
                    self.client.copy_object(Bucket=self.bucket, Key=key,
                                            CopySource={"Bucket": self.bucket, "Key": key},
                                            MetadataDirective="REPLACE")
            else:
                with self._calling("store a blob"):
                    self.client.upload_file(str(staged.path), self.bucket, key)
        finally:
            staged.discard()
        return staged.sha256

    def exists(self, sha256: str) -> bool:
        try:
            key = self._blob(sha256)
        except BlobMissingError:
            return False
        with self._calling("say whether it holds a blob"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as e:
                if self._missing(e):
                    return False
                raise
        return True

    def open(self, sha256: str) -> BlobStream:
        key = self._blob(sha256)
        with self._calling("send a blob"):
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as e:
                if self._missing(e):
                    raise BlobMissingError(sha256) from None
                raise
        body = obj["Body"]
        return BlobStream(int(obj["ContentLength"]), body.iter_chunks(CHUNK_BYTES), body.close)

    def delete(self, sha256: str) -> None:
        with self._calling("delete a blob"):
            self.client.delete_object(Bucket=self.bucket, Key=self._blob(sha256))

    def written_before(self, when: datetime) -> Iterator[str]:
        start = self._key("")
        with self._calling("list its blobs"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(start):]
                    if is_sha256(name) and obj["LastModified"] < when:
                        yield name

    def delete_if_written_before(self, sha256: str, when: datetime) -> bool:
        key = self._blob(sha256)
        with self._calling("delete a blob"):
            try:
                written = self.client.head_object(Bucket=self.bucket, Key=key)["LastModified"]
            except ClientError as e:
                if self._missing(e):
                    return False
                raise
            if written >= when:
                return False
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def read_mark(self, name: str) -> bytes | None:
        with self._calling("send a mark"):
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self._mark(name))
            except ClientError as e:
                if self._missing(e):
                    return None
                raise
            with contextlib.closing(obj["Body"]) as body:
                return body.read()

    def write_mark(self, name: str, data: bytes) -> None:
        with self._calling("store a mark"):
            self.client.put_object(Bucket=self.bucket, Key=self._mark(name), Body=data)

    def delete_mark(self, name: str) -> None:
        with self._calling("delete a mark"):
            self.client.delete_object(Bucket=self.bucket, Key=self._mark(name))
