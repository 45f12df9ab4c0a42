"""The SDK's exceptions: one class per kind of failure, each message the server's own.

::

    KilnError
    ├── KilnConnectionError        the server cannot be reached, or the connection dropped
    ├── APIError                   the server answered with an error status
    │   ├── AuthError              401, 403: a missing, wrong or revoked token; not allowed
    │   ├── NotFound               404: no such job, dataset or worker (for this token)
    │   ├── Conflict               409: the job has finished, the dataset is in use, ...
    │   ├── ValidationError        422: ``.errors`` holds the server's items with field paths
    │   └── ServerError            5xx
    ├── JobFailed                  ``job.wait()`` saw the job fail; ``.job`` is the job
    └── WaitTimeout                ``job.wait(timeout=...)`` ran out (also a TimeoutError)

An ``APIError`` carries the ``status`` code and the decoded ``body``. A 422's message
names every bad field by its path, as the server reports it:
``model.layers.enc.out: must be a positive integer; got 0``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthError",
    "Conflict",
    "JobFailed",
    "KilnConnectionError",
    "KilnError",
    "NotFound",
    "ServerError",
    "ValidationError",
    "WaitTimeout",
    "error_for",
    "field_path",
]


class KilnError(Exception):
    """Every error the SDK raises."""


class KilnConnectionError(KilnError):
    """The server could not be reached, or it dropped the connection mid-answer."""


class APIError(KilnError):
    """The server answered with an error status: ``status``, and its decoded ``body``."""

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.message, self.status, self.body = message, status, body


class AuthError(APIError):
    """401 or 403: no token, a wrong or revoked token, or a token not allowed to do this."""


class NotFound(APIError):
    """404: no such resource for this token (another user's job is not found either)."""


class Conflict(APIError):
    """409: the resource's state forbids the request (a finished job, a dataset in use)."""


class ValidationError(APIError):
    """422: the request was refused; ``errors`` lists each bad field (``loc``, ``msg``,
    ``type``, as the server sent them) and ``paths`` their dotted paths."""

    def __init__(self, message: str, *, status: int, body: Any = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, status=status, body=body)
        self.errors = errors or []
        self.paths = [field_path(e.get("loc", [])) for e in self.errors]


class ServerError(APIError):
    """A 5xx: the server failed (after the retries an idempotent call gets)."""


class JobFailed(KilnError):
    """A job ended ``failed``; ``job`` is the job, its ``error`` the reason."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.id} failed: {job.error or 'no reason given'}")
        self.job = job


class WaitTimeout(KilnError, TimeoutError):
    """``wait(timeout=...)`` ran out before the job finished."""


def field_path(loc: list[Any] | tuple[Any, ...]) -> str:
    """``['body', 'model', 'layers', 0, 'out']`` -> ``model.layers[0].out``; a query or
    header location keeps its root (``query.status``), since it is not part of a body."""
    parts = list(loc)
    if parts and parts[0] == "body" and len(parts) > 1:
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _detail_message(body: Any, reason: str) -> tuple[str, list[dict[str, Any]]]:
    """The human message of an error body, and its field errors (422s)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail, []
    if isinstance(detail, list) and detail:
        items = [d for d in detail if isinstance(d, dict)]
        lines = [f"{field_path(d.get('loc', []))}: {d.get('msg', '')}".lstrip(": ")
                 for d in items]
        return "; ".join(lines) or reason, items
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], []
    return reason, []


def error_for(status: int, body: Any, reason: str = "") -> APIError:
    """The exception for an error response (``body`` decoded JSON, or its text)."""
    message, items = _detail_message(body, reason or f"HTTP {status}")
    if status == 422:
        return ValidationError(message, status=status, body=body, errors=items)
    cls = {401: AuthError, 403: AuthError, 404: NotFound, 409: Conflict}.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(message, status=status, body=body)
