"""kiln_server: Kiln's training service (FastAPI app, job queue, worker API, CLI).

``kiln-server serve`` runs it; ``create_app`` builds the ASGI app for other servers.
The app is imported when first asked for: a ``kiln-server token`` or ``worker`` command
starts without loading the web stack.
"""

from typing import Any

from .settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
