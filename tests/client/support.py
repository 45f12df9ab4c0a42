"""Helpers of the SDK tests: the async client driven from sync test code (so every test
runs against ``Client`` and ``AsyncClient`` alike), and a TCP proxy that can drop its
connections mid-stream."""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Iterator
from typing import Any

from anyio.from_thread import BlockingPortal

__all__ = ["Blocking", "Proxy"]


class Blocking:
    """An object of the async SDK seen through a portal: each coroutine it returns is run
    to its end, each async iterator becomes an iterator, and each async SDK object it
    hands back is wrapped again. Plain records (Dataset, Control, ...) pass through."""

    def __init__(self, target: Any, portal: BlockingPortal) -> None:
        self._target, self._portal = target, portal

    @property
    def target(self) -> Any:
        return self._target

    def _wrap(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            async def run() -> Any:
                return await value
            value = self._portal.call(run)
        if hasattr(value, "__aiter__"):
            return self._iterate(value)
        if type(value).__module__ == "kiln_client._async_client":
            return Blocking(value, self._portal)
        return value

    def _iterate(self, it: Any) -> Iterator[Any]:
        while True:
            try:
                item = self._portal.call(it.__anext__)
            except StopAsyncIteration:
                return
            yield self._wrap(item)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.ismethod(value) or inspect.isfunction(value):
            return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))
        return self._wrap(value)

    def __eq__(self, other: object) -> bool:
        return self._target == (other._target if isinstance(other, Blocking) else other)

    def __hash__(self) -> int:
        return hash(self._target)

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self._target.aclose)


class Proxy:
    """A TCP proxy to ``port`` on 127.0.0.1; ``drop()`` cuts every open connection (the
    client sees its stream end mid-way), and new ones are forwarded again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self) -> None:
        """Cut every connection open now."""
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.drop()
