"""Health, Prometheus metrics, and tokens (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ...schemas import TokenCreate, TokenPublic
from ...services import auth, metrics
from ..deps import AdminUser, SessionDep, SettingsDep

router = APIRouter(tags=["system"])

#: A worker counts as live if seen within this many leases.
LIVE_WORKER_LEASES = 2


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, str]:
    """Liveness: the server answers and its database does."""
    metrics.ping(session)
    return {"status": "ok"}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus_metrics(session: SessionDep, settings: SettingsDep) -> Response:
    """Prometheus text: jobs by status, queue depth, live workers, steps per second."""
    snap = metrics.snapshot(session, LIVE_WORKER_LEASES * settings.lease_s)
    registry = CollectorRegistry()
    jobs = Gauge("kiln_jobs", "Jobs by status", ["status"], registry=registry)
    for status, n in snap["jobs"].items():
        jobs.labels(status=status).set(n)
    Gauge("kiln_queue_depth", "Queued jobs", registry=registry).set(snap["queue_depth"])
    Gauge("kiln_workers", "Workers seen recently", registry=registry).set(snap["workers"])
    Gauge("kiln_steps_per_second", "Training steps per second, over the last minute",
          registry=registry).set(snap["steps_per_s"])
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/tokens", status_code=201)
def create_token(body: TokenCreate, session: SessionDep, admin: AdminUser) -> TokenPublic:
    """Create a token for a user (created if new), or a worker token; shown only now."""
    token = auth.create_token(session, body.user, worker=body.worker)
    return TokenPublic(user=body.user, worker=body.worker, token=token)
