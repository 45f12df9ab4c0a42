"""Files on their way up and down: numpy arrays written as an .npz (never pickled), the
request that streams one up, and downloads written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["CHUNK_BYTES", "atomic_file", "npz_file", "upload_target"]

#: Bytes read and sent at a time when streaming a file up or down.
CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def npz_file(arrays: Mapping[str, Any]) -> Iterator[IO[bytes]]:
    """A temporary .npz of ``arrays`` (numbers and booleans only: an object array would
    need pickling, which Kiln never does), deleted afterwards."""
    import numpy as np

    if not arrays:
        raise ValueError("upload needs at least one array, e.g. upload('name', x=x, y=y)")
    checked = {}
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"array {name!r} has dtype {a.dtype}; Kiln takes booleans, "
                             f"integers and floats")
        if a.ndim == 0:
            raise ValueError(f"array {name!r} is a scalar; a dataset array has one row per "
                             f"sample")
        checked[name] = a
    with tempfile.TemporaryFile(suffix=".npz") as f:
        np.savez(f, allow_pickle=False, **checked)
        f.flush()
        yield f


def upload_target(name: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The path, query and headers of an upload named ``name`` (the body is the raw .npz)."""
    return "/v1/datasets", {"name": name}, {"Content-Type": "application/octet-stream"}


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file written next to ``path`` and moved over it only once complete, so a failed
    download never leaves half a file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
