"""Datasets: .npz uploads checked before they are kept, listed, deleted.

An upload is streamed to a staging file (never held in memory whole), hashed on the way,
then opened with ``np.load(allow_pickle=False)``: an object array (which would need
unpickling), a file that is not an .npz, or non-finite values are a 422 that says which.
The smallest and largest value of each integer or boolean array are recorded with it, so
a job whose class labels do not fit its model is refused at submission (jobspec.py).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from ..blobs import BlobStore, Staging
from ..errors import ConflictError, InvalidError, NotFoundError
from ..models import ACTIVE, Dataset, Job, JobDataset, User

__all__ = ["create", "get", "inspect_npz", "list_", "remove"]

#: Rows checked for non-finite values, or scanned for the range, at a time (bounds the
#: memory of the check).
FINITE_CHECK_ROWS = 65_536


def _fail(msg: str) -> InvalidError:
    return InvalidError(["body", "file"], msg)


def _value_range(arr: np.ndarray) -> dict[str, int]:
    """``{"min": …, "max": …}`` of an integer or boolean array (booleans as 0 and 1); {}
    for an empty one."""
    if arr.size == 0:
        return {}
    chunks = [arr[i:i + FINITE_CHECK_ROWS] for i in range(0, arr.shape[0], FINITE_CHECK_ROWS)]
    return {"min": min(int(c.min()) for c in chunks), "max": max(int(c.max()) for c in chunks)}


def inspect_npz(path: Path) -> list[dict[str, Any]]:
    """Name, shape and dtype of every array in an .npz, and the range of each integer or
    boolean one; InvalidError if it cannot be trained on."""
    if not zipfile.is_zipfile(path):
        raise _fail("is not an .npz file (a zip archive of .npy arrays, as np.savez writes)")
    out = []
    try:
        with np.load(path, allow_pickle=False, mmap_mode=None) as npz:
            if not npz.files:
                raise _fail("the .npz holds no arrays")
            for name in npz.files:
                try:
                    arr = npz[name]
                except ValueError as e:  # object arrays need pickle, which is refused
                    raise _fail(f"array {name!r} cannot be loaded without unpickling "
                                f"(an object array?): {e}") from None
                if not isinstance(arr, np.ndarray):  # np.load hands back a non-.npy member raw
                    raise _fail(f"member {name!r} is not a .npy array")
                if arr.dtype.kind not in "biuf":
                    raise _fail(f"array {name!r} has dtype {arr.dtype}; expected booleans, "
                                f"integers or floats")
                if arr.ndim == 0:
                    raise _fail(f"array {name!r} is a scalar; expected a batch (first axis "
                                f"= samples)")
                if arr.dtype.kind == "f":
                    for i in range(0, arr.shape[0], FINITE_CHECK_ROWS):
                        if not np.isfinite(arr[i:i + FINITE_CHECK_ROWS]).all():
                            raise _fail(f"array {name!r} holds non-finite values (nan or inf)")
                record = {"name": name, "shape": list(arr.shape), "dtype": arr.dtype.name}
                out.append(record | ({} if arr.dtype.kind == "f" else _value_range(arr)))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _fail(f"is not a readable .npz file: {e}") from None
    except ValueError as e:  # a member that is not a valid .npy
        raise _fail(f"is not a valid .npz file: {e}") from None
    return out


def create(session: Session, blobs: BlobStore, owner: User, name: str,
           staged: Staging) -> Dataset:
    """Keep an uploaded .npz if it is trainable data (InvalidError, and nothing kept, if not)."""
    try:
        arrays = inspect_npz(staged.path)
    except BaseException:
        staged.discard()
        raise
    sha = blobs.commit(staged)
    ds = Dataset(owner_id=owner.id, name=name, sha256=sha, size_bytes=staged.size,
                 arrays=arrays)
    session.add(ds)
    session.flush()
    return ds


def list_(session: Session, owner: User) -> list[Dataset]:
    return list(session.scalars(select(Dataset).where(Dataset.owner_id == owner.id)
                                .order_by(Dataset.created_at.desc(), Dataset.id)))


def get(session: Session, owner: User, dataset_id: str) -> Dataset:
    ds = session.get(Dataset, dataset_id)
    if ds is None or ds.owner_id != owner.id:
        raise NotFoundError(f"no dataset {dataset_id!r}")
    return ds


def remove(session: Session, blobs: BlobStore, owner: User, dataset_id: str) -> None:
    """Delete a dataset unless an unfinished job reads it; its blob goes with its last user."""
    ds = get(session, owner, dataset_id)
    users = session.scalars(select(Job.id).join(JobDataset, JobDataset.job_id == Job.id)
                            .where(JobDataset.dataset_id == ds.id, Job.status.in_(ACTIVE))
                            ).all()
    if users:
        raise ConflictError(f"dataset {dataset_id!r} is used by unfinished jobs {sorted(users)}; "
                            f"cancel them or wait for them to finish")
    session.execute(delete(JobDataset).where(JobDataset.dataset_id == ds.id))
    session.delete(ds)
    session.flush()
    shared = session.scalar(select(exists().where(Dataset.sha256 == ds.sha256)))
    if not shared:
        blobs.delete(ds.sha256)
