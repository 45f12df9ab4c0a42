"""uvicorn running Kiln's app, for ``kiln-server serve``.

When it shuts down (SIGTERM, SIGINT), the held controls long-polls are woken before
uvicorn waits for open requests to finish: each would otherwise hold the shutdown for its
whole wait.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

__all__ = ["Server"]


class Server(uvicorn.Server):
    """uvicorn's server for ``app``, which answers its long-polls at shutdown."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="info"))
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.app.state.wakeups.close()
        await super().shutdown(sockets)
