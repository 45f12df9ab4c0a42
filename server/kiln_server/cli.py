"""``kiln-server``: serve, migrate, create tokens, run a worker.

    kiln-server serve [--host H] [--port P] [--data-dir D] [--database-url URL] [--workers N]
    kiln-server migrate [--data-dir D] [--database-url URL]
    kiln-server token create --user NAME [--worker | --admin] [--data-dir D] [--database-url URL]
    kiln-server token list [--data-dir D] [--database-url URL]
    kiln-server token revoke ID_OR_TOKEN [--data-dir D] [--database-url URL]
    kiln-server worker --url URL --token TOKEN [--device cpu|cuda:N | --gpus N,N,…|all]
                       [--dataset-memory-mb MB]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from .db import make_sessionmaker, session_scope
from .models import User
from .settings import Settings

__all__ = ["main"]

#: The user that owns the tokens of the workers ``serve --workers N`` starts.
LOCAL_WORKER_USER = "local-worker"


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from .api.routes import dashboard
    from .app import create_app, prepare
    from .services import auth, blob_store, queue
    from .serving import LocalWorkers, serve
    from .worker import worker_name

    settings = _settings(args)
    engine, token = prepare(settings)  # migrate before the workers start
    sessions = make_sessionmaker(engine)
    try:  # a replica given a blob store of its own stops here, saying why
        blob_store.open_shared(settings, sessions)
    except blob_store.BlobStoreStartupError as e:
        print(f"kiln-server serve: {e}", file=sys.stderr, flush=True)
        return 1
    url = f"http://{args.host}:{args.port}"
    if token is not None:
        print(f"Kiln admin token (shown once, stored hashed): {token}", flush=True)
    start_workers = local = None
    app = create_app(settings)
    if args.workers:
        with session_scope(sessions) as session:
            local, secret = auth.create_token(session, LOCAL_WORKER_USER, worker=True)

        def requeue(pid: int) -> list[str]:  # the jobs of a local worker that died
            # The app's sessions: their commit wakes the claims held for a queued job.
            with session_scope(app.state.sessions) as session:
                return queue.requeue_held_by(session, local.id, worker_name(pid))

        start_workers = functools.partial(LocalWorkers, url, secret, args.workers,
                                          on_exit=requeue)
    engine.dispose()  # the app has its own; a requeue connects again when it needs to
    print(f"Kiln is serving at {url} (docs at {url}/docs) with {args.workers} local "
          f"worker(s)", flush=True)
    if dashboard.is_built(settings.dashboard_dir):
        print(f"Dashboard: {url}/", flush=True)
    else:
        print(f"Dashboard: not built (no {settings.dashboard_dir / 'index.html'}); build it "
              f"with: {dashboard.BUILD_COMMANDS}", flush=True)
    try:
        serve(app, args.host, args.port, start_workers)
    finally:
        if local is not None:  # its workers are gone; each start makes a new one
            with session_scope(sessions) as session:
                auth.revoke_token(session, local.id)
            engine.dispose()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from . import migrate
    from .db import make_engine, setup_lock

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.url)
    with setup_lock(engine):
        migrate.upgrade(engine)
    print(f"database at {settings.url} is up to date")
    return 0


def _token_sessions(args: argparse.Namespace) -> sessionmaker[Session]:
    """The database's sessions, migrated and with its admin seeded."""
    from .app import prepare

    engine, admin_token = prepare(_settings(args))
    if admin_token is not None:  # a fresh database: its admin token is shown only now
        print(f"Kiln admin token (shown once, stored hashed): {admin_token}", file=sys.stderr)
    return make_sessionmaker(engine)


def _token_create(args: argparse.Namespace) -> int:
    from .services import auth

    with session_scope(_token_sessions(args)) as session:
        token, secret = auth.create_token(session, args.user, worker=args.worker,
                                          admin=args.admin)
        kind = auth.token_kind(token, session.get(User, token.user_id))
        print(f"created {kind} token {token.id} for {args.user!r}", file=sys.stderr)
    print(secret)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from .services import auth

    with session_scope(_token_sessions(args)) as session:
        rows = [(t.id, u.name, auth.token_kind(t, u), t.prefix or "-",
                 f"{t.created_at:%Y-%m-%d %H:%M:%S}Z") for t, u in auth.list_tokens(session)]
    table = [("ID", "USER", "KIND", "PREFIX", "CREATED"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join([*(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)),
                         row[-1]]))
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from .errors import ConflictError
    from .services import auth

    try:
        with session_scope(_token_sessions(args)) as session:
            token = auth.find_token(session, args.token)
            if token is None:
                print(f"kiln-server token revoke: no token {args.token!r} (give its id, as "
                      f"`kiln-server token list` shows it, or the token itself)", file=sys.stderr)
                return 1
            auth.revoke_token(session, token.id)
    except ConflictError as e:
        print(f"kiln-server token revoke: {e}", file=sys.stderr)
        return 1
    print(f"revoked token {token.id}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from kiln_engine import DeviceError

    from . import worker  # written separately; imported only when a worker is asked for

    token = args.token or os.environ.get("KILN_WORKER_TOKEN")
    if not token:
        print("kiln-server worker: give --token or set KILN_WORKER_TOKEN", file=sys.stderr)
        return 2
    memory = args.dataset_memory_mb
    if memory is None:
        memory = os.environ.get("KILN_WORKER_DATASET_MEMORY_MB",
                                str(worker.DEFAULT_MEMORY_MB))
    if not memory.isdigit():
        print(f"kiln-server worker: --dataset-memory-mb (or KILN_WORKER_DATASET_MEMORY_MB) "
              f"must be a whole number of MB >= 0; got {memory!r}", file=sys.stderr)
        return 2
    try:  # the device, or every GPU, checked before anything starts
        if args.gpus is None:
            device = worker.describe_device(args.device)
        else:
            gpus = [worker.describe_device(f"cuda:{n}") for n in worker.parse_gpus(args.gpus)]
    except (DeviceError, ValueError) as e:
        flag = "--device" if args.gpus is None else "--gpus"
        print(f"kiln-server worker: {e if flag in str(e) else f'{flag}: {e}'}",
              file=sys.stderr)
        return 2
    if args.gpus is None:
        return worker.main(url=args.url, token=token, device=device,
                           dataset_memory_mb=int(memory)) or 0
    return worker.per_gpu(args.url, token, gpus, ["--dataset-memory-mb", memory])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiln-server", description="Kiln's training service")
    sub = p.add_subparsers(dest="command", required=True)

    def storage(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", help="blobs and the SQLite database (KILN_DATA_DIR)")
        sp.add_argument("--database-url", help="e.g. postgresql://… (KILN_DATABASE_URL)")

    serve = sub.add_parser("serve", help="run the API server (and local workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="local workers, replaced if they die (0 for none)")
    storage(serve)
    serve.set_defaults(run=_serve)

    mig = sub.add_parser("migrate", help="apply the database migrations")
    storage(mig)
    mig.set_defaults(run=_migrate)

    token = sub.add_parser("token", help="manage tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--user", required=True, help="its user (created if new)")
    kind = create.add_mutually_exclusive_group()
    kind.add_argument("--worker", action="store_true", help="a token for the worker API")
    kind.add_argument("--admin", action="store_true",
                      help="make the user an admin (e.g. to replace a lost admin token)")
    storage(create)
    create.set_defaults(run=_token_create)
    listing = tsub.add_parser("list", help="list the tokens (never their secrets)")
    storage(listing)
    listing.set_defaults(run=_token_list)
    revoke = tsub.add_parser("revoke", help="revoke a token: it is refused from now on")
    revoke.add_argument("token", metavar="ID_OR_TOKEN",
                        help="the token's id (see `token list`) or the token itself")
    storage(revoke)
    revoke.set_defaults(run=_token_revoke)

    work = sub.add_parser("worker", help="run a worker that pulls jobs from a server")
    work.add_argument("--url", required=True)
    work.add_argument("--token", help="a worker token (or KILN_WORKER_TOKEN)")
    where = work.add_mutually_exclusive_group()
    where.add_argument("--device", default="cpu",
                       help="what to train on: cpu (the default) or cuda:N (GPU N); a cuda "
                       "worker claims the jobs that ask for a gpu, and those that ask for any")
    where.add_argument("--gpus", metavar="N,N,…|all",
                       help="run one worker per GPU listed (e.g. 0,1; all: every GPU this "
                       "machine shows), each with --device cuda:N, restarted if it exits, "
                       "all stopped by SIGTERM / SIGINT")
    work.add_argument("--dataset-memory-mb", metavar="MB",
                      help="loaded datasets kept in memory for later jobs (default "
                      "KILN_WORKER_DATASET_MEMORY_MB or 1024; 0 keeps none)")
    work.set_defaults(run=_worker)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ValidationError as e:  # a KILN_* setting's value (Settings)
        for err in e.errors(include_url=False):
            name = "KILN_" + "_".join(map(str, err["loc"])).upper()
            msg = err["msg"].removeprefix("Value error, ")
            print(f"kiln-server: {msg if name in msg else f'{name}: {msg}'}", file=sys.stderr)
        return 2
