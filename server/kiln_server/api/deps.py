"""Dependencies shared by the routers, as ``Annotated`` aliases.

``SessionDep`` is one session per request, committed when the handler returns and before
the response is sent (``scope="function"``), so a client that gets a 2xx can read what it
wrote. A GET's transactions, and authentication's, only read: on SQLite they take no
lock (db.py), so readers never queue behind writers. Authentication looks a token up
in a transaction of its own, ended at once (and seldom: services/auth.TokenCache): a
write's own transaction holds SQLite's write lock (db.py), and an upload must not hold
it while its body streams in.

Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency
in its thread pool, and each such hop cost a request about 0.1-0.3 ms of the server's
CPU, which a worker training on the same cores feels.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, State, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..blobs import BlobStore, Staging, TooLargeError
from ..errors import NUL_MESSAGE, InvalidError
from ..models import Token, User
from ..settings import Settings

__all__ = [
    "STREAMED",
    "AdminUser",
    "BlobsDep",
    "CurrentUser",
    "CurrentWorkerToken",
    "SessionDep",
    "SettingsDep",
    "committed",
    "limited",
    "multipart",
    "receive",
    "refuse_nul",
    "stage",
    "stage_file",
]

_T = TypeVar("_T")

_bearer = HTTPBearer(auto_error=False, description="a Kiln token: Authorization: Bearer kiln_…")


#: Methods whose handlers only read: their transaction takes no write lock on SQLite.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session. Its commit (or rollback) runs on a thread of its own
    (``app.state.endings``), never one of the pool the handlers share: a handler waiting
    for SQLite's write lock holds one of those, and if every one were held so, a commit
    that needed one to release the lock would wait for ever (each waiter timing out with
    "database is locked")."""
    state = request.app.state
    read_only = request.method in READ_ONLY_METHODS
    session = (state.read_sessions if read_only else state.sessions)()
    try:
        yield session
        if session.in_transaction():  # else nothing to end (the handler had its own)
            await anyio.to_thread.run_sync(session.commit, limiter=state.endings)
    except BaseException:
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.rollback, limiter=state.endings)
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def committed(session: Session, call: Callable[..., _T], *args: Any) -> _T:
    """``call(session, *args)`` on a thread of the pool, its transaction committed on that
    thread as it returns, as a ``def`` handler's is (routing.py): one hop off the event
    loop, not two (an error leaves the rollback to the session's dependency)."""
    def run() -> _T:
        result = call(session, *args)
        if session.in_transaction():
            session.commit()
        return result
    return await run_in_threadpool(run)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]


async def _authenticate(request: Request,
                        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
                        ) -> tuple[User, Token]:
    """The token's user and record: kept a moment (services/auth.TokenCache), so that most
    requests need no lookup, nor a session or a thread to make it with."""
    tokens = request.app.state.tokens
    found = tokens.cached(cred.credentials) if cred else None
    if cred and found is None:
        found = await run_in_threadpool(_look_up, request.app.state, cred.credentials)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


def _look_up(state: State, token: str) -> tuple[User, Token] | None:
    """A lookup in a read-only transaction of its own, ended at once: it takes no write
    lock, even for a write's request."""
    with state.read_sessions() as session:
        return state.tokens.look_up(session, token)


Authenticated = Annotated[tuple[User, Token], Depends(_authenticate)]


async def _user(found: Authenticated) -> User:
    if found[1].worker:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a worker token reaches only /v1/worker")
    return found[0]


async def _worker_token(found: Authenticated) -> Token:
    if not found[1].worker:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the worker API needs a worker token "
                            "(kiln-server token create --user NAME --worker)")
    return found[1]


CurrentUser = Annotated[User, Depends(_user)]
CurrentWorkerToken = Annotated[Token, Depends(_worker_token)]


async def _admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only an admin may do this")
    return user


AdminUser = Annotated[User, Depends(_admin)]


#: The ``max_body_size`` of a route whose body is streamed to disk by :func:`receive`: the
#: app's limit on bodies read into memory (KILN_MAX_BODY_BYTES) does not apply to it;
#: ``receive`` holds it to KILN_MAX_UPLOAD_BYTES instead.
STREAMED = 1 << 62


async def limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``stream``'s chunks, until more than ``limit`` bytes came (then TooLargeError)."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise TooLargeError(limit)
        yield chunk


async def stage(chunks: AsyncIterator[bytes], blobs: BlobStore, limit: int) -> Staging:
    """Write ``chunks`` into blob staging (TooLargeError past ``limit``; nothing is left
    behind if they fail)."""
    staged = blobs.staging(limit)
    try:
        async for chunk in chunks:
            staged.write(chunk)
    except BaseException:
        staged.discard()
        raise
    staged.close()
    return staged


def _refuse_longer(request: Request, limit: int) -> None:
    """TooLargeError, before a byte is read, for a body declared longer than ``limit``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLargeError(limit)


async def receive(request: Request, blobs: BlobStore, limit: int) -> Staging:
    """Stream a request's body into blob staging (TooLargeError past ``limit``)."""
    _refuse_longer(request, limit)
    return await stage(request.stream(), blobs, limit)


@contextlib.asynccontextmanager
async def multipart(request: Request, limit: int, *, max_files: int, max_fields: int,
                    max_field_bytes: int) -> AsyncIterator[FormData]:
    """A multipart/form-data body's form, parsed as it streams in by starlette: its text
    fields (each at most ``max_field_bytes``) and its files, spooled to temporary files
    (disk past 1 MiB), closed when the block ends. The whole body may hold ``limit``
    bytes (TooLargeError past it); a malformed one, or one with more parts than allowed,
    is a 422 naming the body."""
    _refuse_longer(request, limit)
    parser = MultiPartParser(request.headers, limited(request.stream(), limit),
                             max_files=max_files, max_fields=max_fields,
                             max_part_size=max_field_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidError(["body"], f"not a valid multipart body: {e.message}") from None
    try:
        yield form
    finally:
        await form.close()


async def stage_file(upload: UploadFile, blobs: BlobStore, limit: int) -> Staging:
    """Copy a form's file into blob staging (TooLargeError past ``limit``)."""
    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await upload.read(1 << 20):
            yield chunk

    return await stage(chunks(), blobs, limit)


async def refuse_nul(request: Request) -> None:
    """A path or query parameter with a NUL character is a 422 naming it (PostgreSQL
    cannot compare text with one; an app-wide dependency)."""
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if isinstance(value, str) and "\x00" in value:
                raise InvalidError([where, name], NUL_MESSAGE)
