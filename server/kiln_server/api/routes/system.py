"""Health, Prometheus metrics, the caller, and tokens (admin: create, list, revoke)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ...models import Token, User
from ...schemas import TokenCreate, TokenInfo, TokenPublic, TokensPublic, UserPublic
from ...services import auth, metrics
from ..deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from ..routing import CommitInHandler

router = APIRouter(tags=["system"], route_class=CommitInHandler)

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


@router.get("/v1/me")
async def whoami(user: CurrentUser) -> UserPublic:
    """The user this token belongs to (clients check a token with it)."""
    return UserPublic(name=user.name, admin=user.is_admin)


def _info(token: Token, user: User) -> TokenInfo:
    return TokenInfo(id=token.id, user=user.name, kind=auth.token_kind(token, user),
                     prefix=token.prefix, created_at=token.created_at)


@router.post("/v1/tokens", status_code=201)
def create_token(body: TokenCreate, session: SessionDep, admin: AdminUser) -> TokenPublic:
    """Create a token for a user (created if new; made an admin with ``admin``), or a
    worker token; its secret is shown only now."""
    token, secret = auth.create_token(session, body.user, worker=body.worker, admin=body.admin)
    user = session.get(User, token.user_id)
    return TokenPublic(**_info(token, user).model_dump(), worker=token.worker, token=secret)


@router.get("/v1/tokens")
def list_tokens(session: SessionDep, admin: AdminUser) -> TokensPublic:
    """Every token: its id, user, kind, first characters and creation time (never the
    secret, which the server does not keep)."""
    tokens = [_info(t, u) for t, u in auth.list_tokens(session)]
    return TokensPublic(data=tokens, count=len(tokens))


@router.delete("/v1/tokens/{token_id}", status_code=204, responses={
    404: {"description": "no such token"},
    409: {"description": "the last admin token: create another admin token first"}})
def revoke_token(token_id: str, request: Request, session: SessionDep,
                 admin: AdminUser) -> None:
    """Revoke a token: every request with it is refused (401) from now on (by the other
    API replicas, within KILN_AUTH_CACHE_S)."""
    auth.revoke_token(session, token_id)
    session.commit()
    request.app.state.tokens.forget()  # after the commit: no request finds it again
