"""The asynchronous client: ``AsyncClient`` and ``AsyncJob``, the same surface as
``Client`` and ``Job`` with every call awaited (and ``jobs.list`` / ``job.events`` async
iterators)::

    async with AsyncClient() as kiln:
        job = await kiln.jobs.get(job_id)
        async for event in job.events():
            ...
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import httpx

from . import _calls as calls
from ._base import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, BaseClient
from ._calls import Call
from ._errors import JobFailed, KilnConnectionError
from ._files import CHUNK_BYTES, atomic_file, npz_file, upload_target
from ._job import JobFields, StreamFollower, build_model
from ._progress import WaitProgress
from ._spec import hyper_to_json, job_body
from ._sse import SSEDecoder
from ._types import Control, Dataset, Epochs, Event, Steps, User, Worker

__all__ = ["AsyncClient", "AsyncDatasets", "AsyncJob", "AsyncJobs", "AsyncWorkers"]

T = TypeVar("T")
Content = bytes | Callable[[], AsyncIterator[bytes]] | None


class AsyncClient(BaseClient):
    """``Client``'s asynchronous twin (same arguments, same resources)."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 100) -> None:
        super().__init__(url, token, timeout=timeout, retries=retries)
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=min(20, max_connections))
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers(),
                                       timeout=self.timeout, transport=transport, limits=limits,
                                       verify=self._verify)
        self.datasets = AsyncDatasets(self)
        self.jobs = AsyncJobs(self)
        self.workers = AsyncWorkers(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> bool:
        """Whether the server and its database answer (``/healthz``; no token needed)."""
        return (await self._send("GET", "/healthz")).json().get("status") == "ok"

    async def me(self) -> User:
        """The user the token belongs to (AuthError for a wrong or revoked token)."""
        return await self._call(calls.me())

    # -------------------------------------------------------------- sending

    async def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    json: Any = None, content: Content = None,
                    headers: dict[str, str] | None = None) -> httpx.Response:
        """``Client._send``, awaited."""
        attempt = 0
        while True:
            body = content() if callable(content) else content
            try:
                response = await self._http.request(method, path, params=params, json=json,
                                                     content=body, headers=headers)
            except httpx.TransportError as e:
                if attempt < self.retries and self._retryable(method, error=e):
                    attempt += 1
                    await anyio.sleep(self._retry_delay(attempt))
                    continue
                raise self._connection_error(e) from e
            if attempt < self.retries and self._retryable(method, response=response):
                attempt += 1
                await anyio.sleep(self._retry_delay(attempt, response))
                continue
            if response.status_code >= 400:
                raise self._error(response)
            return response

    async def _call(self, call: Call[T]) -> T:
        response = await self._send(call.method, call.path, params=call.params, json=call.json)
        return call.parse(self._decode(response))

    @contextlib.asynccontextmanager
    async def _stream(self, path: str, *, headers: dict[str, str] | None = None,
                      read_timeout: float | None = None) -> AsyncIterator[httpx.Response]:
        """``Client._stream``, awaited."""
        timeout = self.timeout if read_timeout is None else \
            httpx.Timeout(self.timeout.connect, read=read_timeout, connect=self.timeout.connect)
        try:
            async with self._http.stream("GET", path, headers=headers,
                                         timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._error(response)
                yield response
        except httpx.TransportError as e:
            raise self._connection_error(e) from e


class AsyncDatasets:
    """``client.datasets``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upload(self, name: str, /, **arrays: Any) -> Dataset:
        """Upload numpy arrays as one dataset (see ``Datasets.upload``)."""
        with npz_file(arrays) as f:
            return await self._post(f, name)

    async def upload_file(self, path: str | os.PathLike[str], name: str | None = None
                          ) -> Dataset:
        """Upload an .npz file from disk, streamed; ``name`` defaults to its file name."""
        path = Path(path)
        with open(path, "rb") as f:
            return await self._post(f, path.stem if name is None else name)

    async def _post(self, f: IO[bytes], name: str) -> Dataset:
        async def chunks() -> AsyncIterator[bytes]:
            f.seek(0)
            while chunk := await anyio.to_thread.run_sync(f.read, CHUNK_BYTES):
                yield chunk

        path, params, headers = upload_target(name)
        response = await self._client._send("POST", path, params=params, content=chunks,
                                            headers=headers)
        return Dataset.from_json(response.json())

    async def list(self) -> list[Dataset]:
        return await self._client._call(calls.list_datasets())

    async def get(self, dataset_id: str) -> Dataset:
        return await self._client._call(calls.get_dataset(dataset_id))

    async def delete(self, dataset: str | Dataset) -> None:
        await self._client._call(calls.delete_dataset(getattr(dataset, "id", dataset)))


class AsyncJobs:
    """``client.jobs``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def submit(self, *, model: Any, optimiser: Any, loss: Any, train: Any,
                     batch_size: int, epochs: int, validation: Any = None, seed: int = 0,
                     metrics: list[str] | tuple[str, ...] | None = None, stop: Any = None,
                     schedule: Any = None, shuffle: bool = True, name: str | None = None,
                     device: str | None = None) -> AsyncJob:
        """Queue a training job (see ``Jobs.submit``)."""
        body = job_body(model=model, optimiser=optimiser, loss=loss, train=train,
                        batch_size=batch_size, epochs=epochs, validation=validation, seed=seed,
                        metrics=metrics, stop=stop, schedule=schedule, shuffle=shuffle,
                        name=name, device=device)
        return await self.submit_spec(body)

    async def submit_spec(self, spec: dict[str, Any]) -> AsyncJob:
        """Queue a job given as the API's JSON body (a job file, read): every field as
        written, so the server names any it does not know."""
        return AsyncJob(self._client, await self._client._call(calls.create_job(dict(spec))))

    async def get(self, job_id: str) -> AsyncJob:
        return AsyncJob(self._client, await self._client._call(calls.get_job(job_id)))

    async def list(self, status: str | None = None, *, page_size: int | None = None
                   ) -> AsyncIterator[AsyncJob]:
        """Every one of your jobs, newest first, a page at a time (``async for``)."""
        cursor = None
        while True:
            page = await self._client._call(calls.list_jobs(status, cursor, page_size))
            for data in page["data"]:
                yield AsyncJob(self._client, data)
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncWorkers:
    """``client.workers``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, status: str | None = None) -> list[Worker]:
        return await self._client._call(calls.list_workers(status))


class AsyncJob(JobFields):
    """``Job``, awaited."""

    _client: AsyncClient

    async def refresh(self) -> AsyncJob:
        self.data = await self._client._call(calls.get_job(self.id))
        return self

    async def epochs(self) -> Epochs:
        return await self._client._call(calls.epochs(self.id))

    async def steps(self, max_points: int | None = None) -> Steps:
        return await self._client._call(calls.steps(self.id, max_points))

    async def controls(self) -> list[Control]:
        return await self._client._call(calls.controls(self.id))

    async def state(self) -> dict[str, Any]:
        return await self._client._call(calls.state(self.id))

    async def adjust(self, path: str = "", **hyper: Any) -> Control:
        return await self._client._call(calls.add_control(self.id, "adjust", path,
                                                          hyper_to_json(hyper)))

    async def freeze(self, path: str) -> Control:
        return await self._client._call(calls.add_control(self.id, "freeze", path))

    async def thaw(self, path: str = "") -> Control:
        return await self._client._call(calls.add_control(self.id, "thaw", path))

    async def pause(self) -> AsyncJob:
        self.data = await self._client._call(calls.lifecycle(self.id, "pause"))
        return self

    async def resume(self) -> AsyncJob:
        self.data = await self._client._call(calls.lifecycle(self.id, "resume"))
        return self

    async def cancel(self) -> AsyncJob:
        self.data = await self._client._call(calls.lifecycle(self.id, "cancel"))
        return self

    def events(self) -> AsyncIterator[Event]:
        """The job's events (see ``Job.events``), ``async for``."""
        return self._follow(StreamFollower(self._client, self.id))

    async def _follow(self, follower: StreamFollower) -> AsyncIterator[Event]:
        path = calls.job_path(self.id, "events")
        while not follower.done:
            error: KilnConnectionError | None = None
            try:
                async with self._client._stream(
                        path, headers=follower.headers(),
                        read_timeout=follower.read_timeout(time.monotonic())) as response:
                    decoder = SSEDecoder(follower.last_id)
                    async for line in response.aiter_lines():
                        if (event := decoder.feed(line)) is not None:
                            follower.seen(event, time.monotonic())
                            yield event
            except KilnConnectionError as e:
                error = e
            if not follower.done:
                await anyio.sleep(follower.dropped(time.monotonic(), error))

    async def wait(self, progress: bool = True, timeout: float | None = None) -> AsyncJob:
        """Follow the job until it finishes (see ``Job.wait``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with WaitProgress(self.id, self.total_epochs, enabled=progress) as shown:
            async for event in self._follow(StreamFollower(self._client, self.id, deadline)):
                shown.on_event(event)
        await self.refresh()
        if self.status == "failed":
            raise JobFailed(self)
        return self

    async def download_weights(self, file: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the job's latest weights to a path or a binary file, streamed."""
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(file, (str, os.PathLike)):
                out = stack.enter_context(atomic_file(Path(file)))
            else:
                out = file
            async with self._client._stream(calls.job_path(self.id, "weights")) as response:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    out.write(chunk)

    async def model(self) -> Any:
        """The job's model with its latest weights, as a kiln_engine model."""
        async with self._client._stream(calls.job_path(self.id, "weights")) as response:
            blob = await response.aread()
        return build_model(self.spec["model"], blob)
