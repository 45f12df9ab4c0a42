"""Datasets: upload a .npz, list, get, delete."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from ...schemas import DatasetPublic, DatasetsPublic
from ...services import datasets
from ..deps import STREAMED, BlobsDep, CurrentUser, SessionDep, SettingsDep, receive

router = APIRouter(prefix="/datasets", tags=["datasets"])

_NPZ_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


@router.post("", status_code=201, openapi_extra=_NPZ_BODY, max_body_size=STREAMED,
             responses={413: {"description": "larger than KILN_MAX_UPLOAD_BYTES"}})
async def upload_dataset(request: Request, session: SessionDep, user: CurrentUser,
                         blobs: BlobsDep, settings: SettingsDep,
                         name: str = Query("", max_length=200)) -> DatasetPublic:
    """Upload a .npz of named arrays (the raw request body, streamed to disk)."""
    staged = await receive(request, blobs, settings.max_upload_bytes)
    ds = await run_in_threadpool(datasets.create, session, blobs, user, name, staged)
    return DatasetPublic.model_validate(ds)


@router.get("")
def list_datasets(session: SessionDep, user: CurrentUser) -> DatasetsPublic:
    """List your datasets, newest first."""
    rows = datasets.list_(session, user)
    return DatasetsPublic(data=[DatasetPublic.model_validate(d) for d in rows], count=len(rows))


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, session: SessionDep, user: CurrentUser) -> DatasetPublic:
    """One dataset: its arrays' names, shapes and dtypes."""
    return DatasetPublic.model_validate(datasets.get(session, user, dataset_id))


@router.delete("/{dataset_id}", status_code=204,
               responses={409: {"description": "an unfinished job uses it"}})
def delete_dataset(dataset_id: str, session: SessionDep, user: CurrentUser,
                   blobs: BlobsDep) -> Response:
    """Delete a dataset no unfinished job uses."""
    datasets.remove(session, blobs, user, dataset_id)
    return Response(status_code=204)
