"""Datasets: upload a .npz (the raw body, or a multipart form's file), list, get, delete."""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.datastructures import UploadFile

from ...blobs import BlobStore, Staging
from ...errors import NUL_MESSAGE, InvalidError
from ...schemas import DatasetPublic, DatasetsPublic
from ...services import datasets
from ...settings import Settings
from ..deps import (
    STREAMED,
    BlobsDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    committed,
    multipart,
    receive,
    stage_file,
)
from ..routing import CommitInHandler

router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=CommitInHandler)

_RAW, _FORM = "application/octet-stream", "multipart/form-data"
_MAX_NAME = 200
_HOW = ("send the .npz as the raw body, "
        "curl --data-binary @data.npz -H 'Content-Type: application/octet-stream' URL, "
        "or as the file of a multipart form's field 'file', curl -F file=@data.npz URL")
_NPZ_BODY = {"requestBody": {"required": True, "content": {
    _RAW: {"schema": {"type": "string", "format": "binary",
                      "description": "the .npz (curl --data-binary @data.npz)"}},
    _FORM: {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "the .npz (curl -F file=@data.npz)"},
        "name": {"type": "string", "maxLength": _MAX_NAME,
                 "description": "the dataset's name, if ?name= does not give it (default: "
                                "the file's name without .npz)"}}}}}}}


@router.post("", status_code=201, openapi_extra=_NPZ_BODY, max_body_size=STREAMED, responses={
    413: {"description": "larger than KILN_MAX_UPLOAD_BYTES"},
    415: {"description": "neither application/octet-stream nor multipart/form-data"}})
async def upload_dataset(request: Request, session: SessionDep, user: CurrentUser,
                         blobs: BlobsDep, settings: SettingsDep,
                         name: str = Query("", max_length=_MAX_NAME)) -> DatasetPublic:
    """Upload a .npz of named arrays: the raw body, or a multipart form's ``file`` (as
    ``curl -F file=@data.npz`` sends it); streamed to disk."""
    media = request.headers.get("content-type", _RAW).split(";")[0].strip().lower()
    if media == _FORM:
        staged, name = await _receive_form(request, blobs, settings, name)
    elif media == _RAW:
        staged = await receive(request, blobs, settings.max_upload_bytes)
    else:
        raise HTTPException(415, f"a dataset cannot be sent as {media or 'nothing'!r}; {_HOW}")
    ds = await committed(session, datasets.create, blobs, user, name, staged)
    return DatasetPublic.model_validate(ds)


async def _receive_form(request: Request, blobs: BlobStore, settings: Settings,
                        name: str) -> tuple[Staging, str]:
    """The staged ``file`` of a multipart upload, and the dataset's name: ``?name=``, else
    the form's ``name``, else the file's name without .npz."""
    async with multipart(request, settings.max_upload_bytes + settings.max_body_bytes,
                         max_files=1, max_fields=1, max_field_bytes=4 * _MAX_NAME) as form:
        upload, field = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile):
            got = f"the fields {sorted(form)}" if form else "no fields"
            raise InvalidError(["body", "file"], f"a multipart upload needs the .npz as the "
                               f"file of the field 'file' (curl -F file=@data.npz URL); got {got}")
        if field is not None and (not isinstance(field, str) or len(field) > _MAX_NAME):
            raise InvalidError(["body", "name"], f"must be text of at most {_MAX_NAME} "
                               f"characters")
        if not name:
            base = re.split(r"[\\/]", upload.filename or "")[-1]
            name = field or (base[:-4] if base.lower().endswith(".npz") else base)[:_MAX_NAME]
        if "\x00" in name:
            raise InvalidError(["body", "name" if field else "file"], NUL_MESSAGE)
        return await stage_file(upload, blobs, settings.max_upload_bytes), name


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
