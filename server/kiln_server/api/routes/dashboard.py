"""The web dashboard: the files Vite built (dashboard/ in the repository, built into this
package's ``dashboard/``) at ``/`` and ``/assets/…``, and at ``/`` a page that says how
to build them while they are missing.

The page signs in with a token of its own, so ``/`` needs none. Vite names each asset
after a hash of its content, so assets are cached for a year; ``index.html``, which
names them, is revalidated at every load, so a new build shows at once. Each request
looks at the directory afresh: a build made while the server runs is served.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["BUILD_COMMANDS", "is_built", "routes"]

#: How to build the dashboard, from the repository's root.
BUILD_COMMANDS = "make dashboard   (or: cd dashboard && npm ci && npm run build)"
#: Vite's file names change with their content: a cached asset never goes stale.
ASSET_CACHE = "public, max-age=31536000, immutable"

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kiln: dashboard not built</title></head>
<body style="font-family: sans-serif; max-width: 44em; margin: 3em auto">
<h1>Kiln's dashboard is not built</h1>
<p>The API is up (<a href="/docs">/docs</a>), but this server has no built dashboard in
<code>{directory}</code>. Build it (Node.js &ge; 20 and npm) from the repository's root:</p>
<pre>{commands}</pre>
<p>then reload this page. <code>make run</code> builds it before it starts the server.</p>
</body></html>
"""


def is_built(directory: Path) -> bool:
    """Whether ``directory`` holds a built dashboard."""
    return (directory / "index.html").is_file()


class _Assets(StaticFiles):
    """Vite's hashed assets, cached for good; a 404 (not an error) while nothing is built."""

    async def check_config(self) -> None:
        """The directory may not exist yet (a 404 per file then), nor is it required to."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = ASSET_CACHE
        return response


def routes(directory: Path) -> list[BaseRoute]:
    """The dashboard's routes, for the build in ``directory``."""

    async def index(request: Request) -> Response:
        if is_built(directory):
            return FileResponse(directory / "index.html", media_type="text/html",
                                headers={"Cache-Control": "no-cache"})
        return HTMLResponse(_NOT_BUILT.format(directory=html.escape(str(directory)),
                                              commands=html.escape(BUILD_COMMANDS)),
                            headers={"Cache-Control": "no-cache"})

    return [Route("/", index, methods=["GET"], name="dashboard"),
            Mount("/assets", app=_Assets(directory=directory / "assets", check_dir=False),
                  name="dashboard_assets")]
