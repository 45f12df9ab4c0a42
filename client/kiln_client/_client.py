"""The synchronous client: ``Client`` with ``datasets``, ``jobs`` and ``workers``, and the
``Job`` handle that steers one job.

    with Client() as kiln:                       # KILN_URL / KILN_TOKEN or `kiln login`
        ds = kiln.datasets.upload("digits", x=x, y=y)
        job = kiln.jobs.submit(model=Chain(enc=..., dec=...), optimiser=Adam(1e-3),
                               loss="logitcrossentropy", train=(ds, "x", "y"),
                               batch_size=32, epochs=10)
        job.adjust("layers.enc", eta=1e-4)
        job.wait()
        model = job.model()                      # a kiln_engine model, trained
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

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

__all__ = ["Client", "Datasets", "Job", "Jobs", "Workers"]

T = TypeVar("T")
Content = bytes | Callable[[], Iterator[bytes]] | None


class Client(BaseClient):
    """A Kiln server's API. ``url`` and ``token`` default to KILN_URL / KILN_TOKEN, then
    to what ``kiln login`` saved. ``transport`` replaces httpx's (e.g. a MockTransport)."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(url, token, timeout=timeout, retries=retries)
        self._http = httpx.Client(base_url=self.url, headers=self._headers(),
                                  timeout=self.timeout, transport=transport,
                                  verify=self._verify)
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.workers = Workers(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> bool:
        """Whether the server and its database answer (``/healthz``; no token needed)."""
        return self._send("GET", "/healthz").json().get("status") == "ok"

    def me(self) -> User:
        """The user the token belongs to (AuthError for a wrong or revoked token)."""
        return self._call(calls.me())

    # -------------------------------------------------------------- sending

    def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              json: Any = None, content: Content = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        """One request, retried as the policy allows (see _base); raises the typed error
        of an error status."""
        attempt = 0
        while True:
            body = content() if callable(content) else content
            try:
                response = self._http.request(method, path, params=params, json=json,
                                              content=body, headers=headers)
            except httpx.TransportError as e:
                if attempt < self.retries and self._retryable(method, error=e):
                    attempt += 1
                    time.sleep(self._retry_delay(attempt))
                    continue
                raise self._connection_error(e) from e
            if attempt < self.retries and self._retryable(method, response=response):
                attempt += 1
                time.sleep(self._retry_delay(attempt, response))
                continue
            if response.status_code >= 400:
                raise self._error(response)
            return response

    def _call(self, call: Call[T]) -> T:
        response = self._send(call.method, call.path, params=call.params, json=call.json)
        return call.parse(self._decode(response))

    @contextlib.contextmanager
    def _stream(self, path: str, *, headers: dict[str, str] | None = None,
                read_timeout: float | None = None) -> Iterator[httpx.Response]:
        """A GET whose body is read as it comes: an error status raises its typed error, a
        connection that fails (also while the body is read) KilnConnectionError."""
        timeout = self.timeout if read_timeout is None else \
            httpx.Timeout(self.timeout.connect, read=read_timeout, connect=self.timeout.connect)
        try:
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                yield response
        except httpx.TransportError as e:
            raise self._connection_error(e) from e


class Datasets:
    """``client.datasets``: upload, list, get and delete datasets."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(self, name: str, /, **arrays: Any) -> Dataset:
        """Upload numpy arrays as one dataset: ``upload("digits", x=x, y=y)``. They are
        written to a temporary .npz and streamed (never pickled; object arrays are
        refused)."""
        with npz_file(arrays) as f:
            return self._post(f, name)

    def upload_file(self, path: str | os.PathLike[str], name: str | None = None) -> Dataset:
        """Upload an .npz file from disk, streamed; ``name`` defaults to its file name."""
        path = Path(path)
        with open(path, "rb") as f:
            return self._post(f, path.stem if name is None else name)

    def _post(self, f: IO[bytes], name: str) -> Dataset:
        def chunks() -> Iterator[bytes]:
            f.seek(0)
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

        path, params, headers = upload_target(name)
        response = self._client._send("POST", path, params=params, content=chunks,
                                      headers=headers)
        return Dataset.from_json(response.json())

    def list(self) -> list[Dataset]:
        """Your datasets, newest first."""
        return self._client._call(calls.list_datasets())

    def get(self, dataset_id: str) -> Dataset:
        return self._client._call(calls.get_dataset(dataset_id))

    def delete(self, dataset: str | Dataset) -> None:
        """Delete a dataset (Conflict while an unfinished job uses it)."""
        self._client._call(calls.delete_dataset(getattr(dataset, "id", dataset)))


class Jobs:
    """``client.jobs``: submit, list and get jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(self, *, model: Any, optimiser: Any, loss: Any, train: Any, batch_size: int,
               epochs: int, validation: Any = None, seed: int = 0,
               metrics: list[str] | tuple[str, ...] | None = None, stop: Any = None,
               schedule: Any = None, shuffle: bool = True, name: str | None = None,
               device: str | None = None) -> Job:
        """Queue a training job. ``model`` / ``optimiser`` / ``schedule``: kiln_engine
        objects or spec dicts; ``loss``: a name or a kiln_engine.losses function;
        ``train`` / ``validation``: a Dataset, ``(dataset, "x", "y")`` or a dataset id;
        ``stop``: ``"val_accuracy>=0.97"`` or a dict; ``device``: "gpu" or "cpu" to be
        trained only by a worker of that kind (the server's default: "any"; a job no
        worker fits stays queued). The server checks it all before anything is queued
        (ValidationError naming the field)."""
        body = job_body(model=model, optimiser=optimiser, loss=loss, train=train,
                        batch_size=batch_size, epochs=epochs, validation=validation, seed=seed,
                        metrics=metrics, stop=stop, schedule=schedule, shuffle=shuffle,
                        name=name, device=device)
        return self.submit_spec(body)

    def submit_spec(self, spec: dict[str, Any]) -> Job:
        """Queue a job given as the API's JSON body (a job file, read): every field as
        written, so the server names any it does not know."""
        return Job(self._client, self._client._call(calls.create_job(dict(spec))))

    def get(self, job_id: str) -> Job:
        return Job(self._client, self._client._call(calls.get_job(job_id)))

    def list(self, status: str | None = None, *, page_size: int | None = None
             ) -> Iterator[Job]:
        """Every one of your jobs (of ``status``, if given), newest first, fetched a page
        at a time as you iterate."""
        cursor = None
        while True:
            page = self._client._call(calls.list_jobs(status, cursor, page_size))
            for data in page["data"]:
                yield Job(self._client, data)
            cursor = page.get("next_cursor")
            if not cursor:
                return


class Workers:
    """``client.workers``: the workers the server knows."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, status: str | None = None) -> list[Worker]:
        """Every worker (busy, idle or gone; or only those of ``status``)."""
        return self._client._call(calls.list_workers(status))


class Job(JobFields):
    """One job: read its logs, steer it while it trains, wait for it, take its model."""

    _client: Client

    def refresh(self) -> Job:
        """Read the job again from the server."""
        self.data = self._client._call(calls.get_job(self.id))
        return self

    def epochs(self) -> Epochs:
        """One row per finished epoch (``.to_pandas()`` for a DataFrame)."""
        return self._client._call(calls.epochs(self.id))

    def steps(self, max_points: int | None = None) -> Steps:
        """Per-step losses (downsampled by the server to at most ``max_points``)."""
        return self._client._call(calls.steps(self.id, max_points))

    def controls(self) -> list[Control]:
        """Every control sent to the job, with what became of it."""
        return self._client._call(calls.controls(self.id))

    def state(self) -> dict[str, Any]:
        """The live optimiser tree as the worker last reported it: per path, the rule with
        its hyper-parameters, and whether it is frozen."""
        return self._client._call(calls.state(self.id))

    def adjust(self, path: str = "", **hyper: Any) -> Control:
        """Change hyper-parameters of the subtree at ``path`` ('' for all) from the next
        step: ``job.adjust("layers.enc", eta=1e-4)``."""
        return self._client._call(calls.add_control(self.id, "adjust", path,
                                                    hyper_to_json(hyper)))

    def freeze(self, path: str) -> Control:
        """Stop updating the subtree at ``path`` from the next step."""
        return self._client._call(calls.add_control(self.id, "freeze", path))

    def thaw(self, path: str = "") -> Control:
        """Update the subtree at ``path`` again ('' thaws everything)."""
        return self._client._call(calls.add_control(self.id, "thaw", path))

    def pause(self) -> Job:
        """Pause: the worker checkpoints and lets go (``requested`` shows it until then)."""
        self.data = self._client._call(calls.lifecycle(self.id, "pause"))
        return self

    def resume(self) -> Job:
        """Queue a paused job again; it continues from its checkpoint."""
        self.data = self._client._call(calls.lifecycle(self.id, "resume"))
        return self

    def cancel(self) -> Job:
        self.data = self._client._call(calls.lifecycle(self.id, "cancel"))
        return self

    def events(self) -> Iterator[Event]:
        """The job's events as they happen (steps, epoch, control, status), from the start,
        until it finishes; a dropped connection is reopened where it left off."""
        return self._follow(StreamFollower(self._client, self.id))

    def _follow(self, follower: StreamFollower) -> Iterator[Event]:
        path = calls.job_path(self.id, "events")
        while not follower.done:
            error: KilnConnectionError | None = None
            try:
                with self._client._stream(path, headers=follower.headers(),
                                          read_timeout=follower.read_timeout(time.monotonic())
                                          ) as response:
                    decoder = SSEDecoder(follower.last_id)
                    for line in response.iter_lines():
                        if (event := decoder.feed(line)) is not None:
                            follower.seen(event, time.monotonic())
                            yield event
            except KilnConnectionError as e:
                error = e
            if not follower.done:
                time.sleep(follower.dropped(time.monotonic(), error))

    def wait(self, progress: bool = True, timeout: float | None = None) -> Job:
        """Follow the job until it finishes (a live progress bar unless ``progress`` is
        False); the finished job. Raises JobFailed if it failed, WaitTimeout after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with WaitProgress(self.id, self.total_epochs, enabled=progress) as shown:
            for event in self._follow(StreamFollower(self._client, self.id, deadline)):
                shown.on_event(event)
        self.refresh()
        if self.status == "failed":
            raise JobFailed(self)
        return self

    def download_weights(self, file: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the job's latest weights (safetensors; final once it succeeded) to a
        path or a binary file, streamed."""
        with contextlib.ExitStack() as stack:
            if isinstance(file, (str, os.PathLike)):
                out = stack.enter_context(atomic_file(Path(file)))
            else:
                out = file
            with self._client._stream(calls.job_path(self.id, "weights")) as response:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)

    def model(self) -> Any:
        """The job's model as a kiln_engine model with its latest weights (final once it
        succeeded), ready to run here."""
        with self._client._stream(calls.job_path(self.id, "weights")) as response:
            blob = response.read()
        return build_model(self.spec["model"], blob)

