"""Where the blob store is: KILN_BLOB_STORE, parsed (settings.py checks it at startup)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["Location", "parse_location"]

# S3's rule for bucket names (MinIO's is the same).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCEPTED = ("KILN_BLOB_STORE must be file:///an/absolute/path (a directory, local or shared "
             "by every replica) or s3://bucket[/prefix] (S3, or an S3-compatible service "
             "at KILN_S3_ENDPOINT_URL)")


@dataclass(frozen=True)
class Location:
    """A directory (``path``) or an S3 bucket and key prefix."""

    scheme: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""


def parse_location(value: str) -> Location:
    """KILN_BLOB_STORE's value as a Location; ValueError, naming the setting, if it is none."""
    url = urlsplit(value)
    if url.query or url.fragment:
        raise ValueError(f"{_ACCEPTED}; got {value!r} (no ?query or #fragment)")
    if url.scheme == "file" and url.netloc in ("", "localhost") and url.path.startswith("/"):
        return Location("file", path=Path(unquote(url.path)))
    if url.scheme == "s3":
        if not _BUCKET.match(url.netloc):
            raise ValueError(f"{_ACCEPTED}; got {value!r}, whose bucket {url.netloc!r} is not "
                             f"a bucket name (3-63 lowercase letters, digits, '.' and '-')")
        prefix = url.path.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError(f"{_ACCEPTED}; got {value!r}, whose prefix {prefix!r} has an "
                             f"empty, '.' or '..' part")
        return Location("s3", bucket=url.netloc, prefix=prefix)
    raise ValueError(f"{_ACCEPTED}; got {value!r}")
