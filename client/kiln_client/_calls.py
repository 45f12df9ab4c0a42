"""Every single-request API call, described once (method, path, body, and how to read
the answer) for the sync and the async clients to send."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from ._types import Control, Dataset, EpochRow, Epochs, Steps, User, Worker

__all__ = [
    "Call",
    "add_control",
    "controls",
    "create_job",
    "delete_dataset",
    "epochs",
    "get_dataset",
    "get_job",
    "job_path",
    "lifecycle",
    "list_datasets",
    "list_jobs",
    "list_workers",
    "me",
    "state",
    "steps",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, and ``parse`` to read the decoded JSON answer (None
    for an empty one)."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None


def _seg(value: str) -> str:
    """An id as one path segment: quoted, so that no id can reach another route."""
    return quote(str(value), safe="")


def _none(_: Any) -> None:
    return None


def _same(body: Any) -> Any:
    return body


def me() -> Call[User]:
    return Call("GET", "/v1/me", User.from_json)


def list_datasets() -> Call[list[Dataset]]:
    return Call("GET", "/v1/datasets", lambda b: [Dataset.from_json(d) for d in b["data"]])


def get_dataset(dataset_id: str) -> Call[Dataset]:
    return Call("GET", f"/v1/datasets/{_seg(dataset_id)}", Dataset.from_json)


def delete_dataset(dataset_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/datasets/{_seg(dataset_id)}", _none)


def create_job(body: dict[str, Any]) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/jobs", _same, json=body)


def get_job(job_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}", _same)


def list_jobs(status: str | None, cursor: str | None, limit: int | None
              ) -> Call[dict[str, Any]]:
    params = {k: v for k, v in (("status", status), ("cursor", cursor), ("limit", limit))
              if v is not None}
    return Call("GET", "/v1/jobs", _same, params=params)


def lifecycle(job_id: str, action: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/{action}", _same)


def add_control(job_id: str, kind: str, path: str, hyper: dict[str, Any] | None = None
                ) -> Call[Control]:
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/controls", Control.from_json,
                json={"kind": kind, "path": path, "hyper": hyper or {}})


def controls(job_id: str) -> Call[list[Control]]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}/controls",
                lambda b: [Control.from_json(c) for c in b])


def epochs(job_id: str) -> Call[Epochs]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}/epochs",
                lambda b: Epochs(EpochRow.from_json(e) for e in b))


def steps(job_id: str, max_points: int | None) -> Call[Steps]:
    params = None if max_points is None else {"max_points": max_points}
    return Call("GET", f"/v1/jobs/{_seg(job_id)}/steps", Steps.from_json, params=params)


def state(job_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}/state", _same)


def list_workers(status: str | None) -> Call[list[Worker]]:
    params = None if status is None else {"status": status}
    return Call("GET", "/v1/workers", lambda b: [Worker.from_json(w) for w in b["data"]],
                params=params)


def job_path(job_id: str, tail: str = "") -> str:
    """The path of a job's resource (``events``, ``weights``) for a streamed request."""
    return f"/v1/jobs/{_seg(job_id)}" + (f"/{tail}" if tail else "")
