"""The FastAPI application: routers, error handlers, and what runs beside them.

On start the app opens the database, applies the migrations, makes sure the admin has a
token (printing a newly generated one once), and starts the reaper, which returns jobs
whose lease expired to the queue every ``reaper_interval_s`` (the only place they are
returned: a claim does not reap).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from . import migrate
from .api.claim_batches import ClaimBatches
from .api.deps import refuse_nul
from .api.routes import dashboard, datasets, jobs, system, worker, workers
from .db import make_engine, make_sessionmaker, session_scope, setup_lock
from .errors import install_handlers
from .openapi import document_specs
from .services import auth, blob_store, blob_sweep, queue
from .settings import Settings
from .wakeups import Wakeups

__all__ = ["create_app", "prepare"]

log = logging.getLogger("kiln_server")

#: Threads that commit or roll back the requests' sessions, apart from the handlers'.
ENDING_THREADS = 8


def prepare(settings: Settings) -> tuple[object, str | None]:
    """Open and migrate the database and seed the admin: (engine, new admin token or None)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.url, settings.db_pool_size)
    with setup_lock(engine):
        migrate.upgrade(engine)
        with session_scope(make_sessionmaker(engine)) as session:
            token = auth.seed_admin(session, settings.admin_token)
    return engine, token


async def _every(interval_s: float, name: str, round_: Callable[[], list[str]],
                 report: Callable[[list[str]], str]) -> None:
    """Run ``round_`` on a thread every ``interval_s``, logging what it did (``report``
    of what it returned, when anything); a round that fails is logged, and the next tries
    again. The reaper's and the blob sweep's schedule: every replica runs both, and a
    round of either leaves nothing for another replica's to do twice."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            done = await run_in_threadpool(round_)
        except Exception:
            log.exception("%s: failed", name)
            continue
        if done:
            log.info("%s: %s", name, report(done))


def _reap_once(app: FastAPI) -> list[str]:
    """A round of the reaper: one UPDATE of the running jobs whose lease expired, which a
    job leaves at the first round that returns it."""
    with session_scope(app.state.sessions) as session:
        return queue.reap(session)


def _sweep_once(app: FastAPI) -> list[str]:
    """A round of the blob sweep (services/blob_sweep.py)."""
    return blob_sweep.sweep(app.state.sessions, app.state.blobs,
                            app.state.settings.blob_sweep_grace_s)


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from KILN_* environment variables)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine, token = await run_in_threadpool(prepare, settings)
        if token is not None:
            print(f"Kiln admin token (shown once, stored hashed): {token}", flush=True)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.read_sessions = make_sessionmaker(engine, read_only=True)
        app.state.endings = anyio.CapacityLimiter(ENDING_THREADS)  # see deps.get_session
        app.state.claims = ClaimBatches(app.state.sessions, settings)
        # The replicas' shared blob store (services/blob_store.py): a replica whose store
        # is not the database's refuses to start.
        app.state.blobs = await run_in_threadpool(blob_store.open_shared, settings,
                                                  app.state.sessions)
        await run_in_threadpool(app.state.wakeups.attach, app.state.sessions,
                                asyncio.get_running_loop(), settings.sqlite_recheck_s)
        tasks = [asyncio.create_task(_every(
                     settings.reaper_interval_s, "reaper", functools.partial(_reap_once, app),
                     lambda ids: f"returned {len(ids)} job(s) with expired leases: {ids}")),
                 asyncio.create_task(_every(
                     settings.blob_sweep_interval_s, "blob sweep",
                     functools.partial(_sweep_once, app),
                     lambda shas: f"removed {len(shas)} blob(s) nothing refers to"))]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await run_in_threadpool(app.state.wakeups.detach, app.state.sessions)
        engine.dispose()

    # Bodies read into memory (JSON) stop at max_body_bytes with a 413; uploads stream
    # to disk under their own limit (deps.STREAMED).
    app = FastAPI(title="Kiln", version="0.1.0", lifespan=lifespan,
                  description="Training as a service: submit jobs, steer them while they run.",
                  generate_unique_id_function=_operation_id,
                  max_body_size=settings.max_body_bytes, dependencies=[Depends(refuse_nul)])
    # Created with the app, not at startup: a server running it wakes the held
    # long-polls when it begins to shut down (serving.py), before the lifespan ends.
    app.state.wakeups = Wakeups()
    app.state.tokens = auth.TokenCache(settings.auth_cache_s)
    install_handlers(app)
    document_specs(app)
    v1 = APIRouter(prefix="/v1")
    for module in (datasets, jobs, workers, worker):
        v1.include_router(module.router)
    app.include_router(system.router)
    app.include_router(v1)
    app.router.routes.extend(dashboard.routes(settings.dashboard_dir))
    return app
