"""The route class of every router: a plain ``def`` handler's transaction is committed in
the handler's own thread, as it returns.

FastAPI runs a ``def`` handler on a thread of its shared pool, then validates the result
on another thread of that pool, and only then ends the request's dependencies (where
``SessionDep`` commits). On SQLite a writing transaction holds the database's one write
lock from its first statement to its commit; had it to wait for a pool thread in
between, and every pool thread were held by a handler waiting for that lock (a burst of
writes, such as a hundred workers registering at once), nothing would ever commit: each
waiter would time out with "database is locked". Committing before the handler's thread
is given back releases the lock without waiting for anything. (An ``async def`` handler
validates its result on the event loop, and its session's commit has threads of its own:
see deps.get_session.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

__all__ = ["CommitInHandler"]


def _committing(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)  # FastAPI reads the handler's signature through it
    def run(**kwargs: Any) -> Any:
        result = handler(**kwargs)
        for value in kwargs.values():
            if isinstance(value, Session) and value.in_transaction():
                value.commit()
        return result
    return run


class CommitInHandler(APIRoute):
    """An APIRoute whose ``def`` handler commits its session before it returns (an error
    leaves the rollback to the session's dependency)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _committing(endpoint)
        super().__init__(path, endpoint, **kwargs)
