"""The blob store: datasets, checkpoints and weights, named by the sha256 of their content.

Two backends behind one interface (store.py): a local directory (local.py, the embedded
default ``<data_dir>/blobs``) and S3 or an S3-compatible service (s3.py). KILN_BLOB_STORE
picks one (location.py); every replica of one database must use the same store
(services/blob_store.py checks it at startup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .local import LocalBlobStore
from .location import Location, parse_location
from .staging import Staging, TooLargeError
from .store import BlobMissingError, BlobStore, BlobStoreUnavailableError, BlobStream

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["BlobMissingError", "BlobStore", "BlobStoreUnavailableError", "BlobStream",
           "LocalBlobStore", "Location", "Staging", "TooLargeError", "open_store",
           "parse_location"]


def open_store(settings: Settings) -> BlobStore:
    """The blob store ``settings`` name (nothing is read from it yet)."""
    if settings.blob_store is None:
        return LocalBlobStore(settings.data_dir / "blobs")
    where = parse_location(settings.blob_store)
    if where.scheme == "file":
        return LocalBlobStore(where.path)
    from .s3 import S3BlobStore  # boto3 is imported only by a server that uses S3

    return S3BlobStore(where.bucket, where.prefix, settings.data_dir / "staging",
                       endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
