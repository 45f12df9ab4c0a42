"""kiln_server: Kiln's training service (FastAPI app, job queue, worker API, CLI).

``kiln-server serve`` runs it; ``create_app`` builds the ASGI app for other servers.
"""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
