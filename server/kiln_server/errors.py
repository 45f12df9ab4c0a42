"""The API's error shape, one for every 4xx.

Every error body is FastAPI's: ``{"detail": "..."}`` for errors about a resource (401,
403, 404, 409, 413 for a body over its limit, 415 for a body of a type the route does
not take), and for invalid input (422) a list naming each bad field by its location,
exactly as FastAPI reports a malformed request::

    {"detail": [{"loc": ["body", "model", "layers", "enc", "layers", 0, "out"],
                 "msg": "must be a positive integer; got 0", "type": "value_error"}]}

So a client handles one shape whether pydantic or the engine found the problem.
:class:`InvalidError` carries such a list from the service layer; engine errors (``SpecError``
paths such as ``model.layers.enc.layers[0].out``) become locations with :func:`loc`.
A 422 body is always JSON: an ``input`` that came as bytes which are not UTF-8 is echoed
with the undecodable bytes replaced, never a 500 for failing to encode it.
A blob the blob store lacks is a 404, and a store that does not answer a 503 (with
Retry-After): another replica, or a later try, may serve it. So is a request whose
database connection turned out dead (the database restarted): the pool has let go of its
connections, and the next try gets new ones.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from .blobs import BlobMissingError, BlobStoreUnavailableError, TooLargeError

__all__ = ["NUL_MESSAGE", "ConflictError", "InvalidError", "NotFoundError", "install_handlers",
           "loc", "nul_at"]

log = logging.getLogger("kiln_server")

#: Seconds a client is told to wait (Retry-After) before asking an unavailable store again.
RETRY_AFTER_S = 2

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def loc(path: str, root: str = "body") -> list[str | int]:
    """``'model.layers[0].out'`` -> ``['body', 'model', 'layers', 0, 'out']``."""
    return [root, *(int(i) if i else name for name, i in _PART.findall(path))]


#: Why text with a NUL character is refused (PostgreSQL cannot store one in text).
NUL_MESSAGE = "must not contain a NUL character (\\u0000)"


#: What may hold text in a JSON body: numbers, booleans and nulls are passed over.
_TEXTUAL = (str, dict, list, tuple)


def nul_at(value: Any) -> list[str | int] | None:
    """The path to the first string containing a NUL character (a key or a value) in
    ``value`` (JSON-like: dicts, lists, strings); None if there is none. Cheap on the
    long lists of numbers that workers post (a step's losses): one type check each."""
    if isinstance(value, str):
        return [] if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return [key]
            if isinstance(item, _TEXTUAL) and (inner := nul_at(item)) is not None:
                return [key, *inner]
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if isinstance(item, _TEXTUAL) and (inner := nul_at(item)) is not None:
                return [i, *inner]
    return None


class InvalidError(Exception):
    """Input that passed the schema but not the server's checks: a 422 naming the field."""

    def __init__(self, location: list[str | int], msg: str, kind: str = "value_error") -> None:
        super().__init__(f"{'.'.join(map(str, location))}: {msg}")
        self.errors = [{"loc": location, "msg": msg, "type": kind}]


class NotFoundError(Exception):
    """No such resource for this caller (another user's is not found either)."""


class ConflictError(Exception):
    """The resource is in a state that forbids the request (a 409): a finished job, a lost lease."""


def _try_again(detail: str) -> JSONResponse:
    """A 503 that tells the client when to try again (another replica, or a later try,
    may serve it)."""
    return JSONResponse({"detail": detail}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def install_handlers(app: FastAPI) -> None:
    """Map the service layer's exceptions, and invalid requests, to responses."""

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(exc.errors(), custom_encoder={
            bytes: lambda b: b.decode("utf-8", "replace")})}, status_code=422)

    @app.exception_handler(InvalidError)
    async def _invalid(_: Request, exc: InvalidError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BlobMissingError)
    async def _blob_missing(_: Request, exc: BlobMissingError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BlobStoreUnavailableError)
    async def _blob_store_down(_: Request, exc: BlobStoreUnavailableError) -> JSONResponse:
        # The store's own words stay in the log: they may name its host and bucket.
        log.warning("blob store: %s", exc)
        return _try_again("the blob store is unavailable; try again shortly")

    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if not exc.connection_invalidated:
            raise exc  # a bug: a 500
        log.warning("database: a connection was lost (%s); the pool starts afresh",
                    exc.orig)
        return _try_again("the database connection was lost; try again")

    @app.exception_handler(TooLargeError)
    async def _too_large(_: Request, exc: TooLargeError) -> JSONResponse:
        return JSONResponse({"detail": f"the body is {exc}"}, status_code=413)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)
