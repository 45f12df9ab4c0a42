"""What the sync and the async clients share: configuration, the retry policy and how an
error response becomes an exception.

The two clients differ only in how they send (``Client._call`` blocks, ``AsyncClient._call``
awaits; the calls themselves are described once, in ``_calls``), as httpx's and
openai-python's do, so a call cannot behave differently in them.

Retries (after openai-python): a call is retried, up to ``retries`` times, with
exponential back-off from BACKOFF_FIRST_S to BACKOFF_MAX_S with jitter, honouring a
``Retry-After`` header, when the connection failed or the server answered 502, 503 or
504, and the call is idempotent (GET, PUT, DELETE). A POST is retried only when the
connection could not be opened at all, so the server never saw it; otherwise it might
run twice.
"""

from __future__ import annotations

import random
from typing import Any

import httpx

from ._config import resolve
from ._errors import AuthError, KilnConnectionError, error_for
from ._version import __version__

__all__ = ["BACKOFF_FIRST_S", "BACKOFF_MAX_S", "DEFAULT_RETRIES", "DEFAULT_TIMEOUT_S",
           "RETRY_STATUSES", "STREAM_READ_TIMEOUT_S", "BaseClient"]

#: Seconds a call may take (connect: 5 s), unless the client is given another timeout.
DEFAULT_TIMEOUT_S = 30.0
#: Times an idempotent call is tried again after a connection error or a 502/503/504.
DEFAULT_RETRIES = 2
RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Server-sent events: a read may wait this long (the server sends a keep-alive comment
#: every ~15 s of silence, so a longer silence means the connection is dead).
STREAM_READ_TIMEOUT_S = 60.0


class BaseClient:
    """Configuration and policy shared by Client and AsyncClient (no I/O here)."""

    def __init__(self, url: str | None, token: str | None, *, timeout: float,
                 retries: int) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0; got {retries}")
        self.url, self.token = resolve(url, token)
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self.retries = retries

    @property
    def _verify(self) -> bool:
        """Whether to load the CA certificates: only an https server needs them (loading
        them costs a plain-http client 20-40 ms at start, which ``kiln jobs`` feels)."""
        return self.url.startswith("https://")

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"kiln-client/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _retry_delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds before try ``attempt`` + 1: the server's Retry-After when it gives
        one (capped), else exponential back-off with jitter."""
        after = response.headers.get("retry-after", "") if response is not None else ""
        if after.replace(".", "", 1).isdigit():
            return min(float(after), BACKOFF_MAX_S)
        delay = min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
        return delay * (0.75 + random.random() / 2)

    @staticmethod
    def _retryable(method: str, *, error: Exception | None = None,
                   response: httpx.Response | None = None) -> bool:
        if error is not None:
            return method in IDEMPOTENT or isinstance(error, httpx.ConnectError)
        return method in IDEMPOTENT and response is not None and \
            response.status_code in RETRY_STATUSES

    def _connection_error(self, error: Exception) -> KilnConnectionError:
        if isinstance(error, httpx.ConnectError):
            return KilnConnectionError(f"cannot connect to Kiln at {self.url}: {error}")
        if isinstance(error, httpx.TimeoutException):
            return KilnConnectionError(f"Kiln at {self.url} did not answer in time "
                                       f"({type(error).__name__})")
        return KilnConnectionError(f"the connection to Kiln at {self.url} failed: "
                                   f"{error or type(error).__name__}")

    def _error(self, response: httpx.Response) -> Exception:
        """The exception for an error response whose body has been read."""
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        error = error_for(response.status_code, body, response.reason_phrase)
        if isinstance(error, AuthError) and response.status_code == 401 and not self.token:
            error.args = (f"{error.message} (no token: pass token=, set KILN_TOKEN or run "
                          f"`kiln login`)",)
        return error

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        return response.json() if response.content else None
