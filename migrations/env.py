"""Alembic environment for Kiln's database.

The server runs migrations itself (``kiln-server migrate``, and ``serve`` on start) by
handing a live connection in ``config.attributes["connection"]``; the ``alembic`` command
line works too, given ``-x url=...`` or KILN_DATABASE_URL.
"""

from __future__ import annotations

from alembic import context
from kiln_server.db import make_engine
from kiln_server.models import Base
from kiln_server.settings import Settings

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or Settings().url
    with make_engine(url).connect() as conn:
        _run(conn)


if context.is_offline_mode():
    context.configure(url=Settings().url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
