"""The queue's index: the queued jobs in claim order (a partial index, on queued_at and
id, of the rows whose status is queued), so a claim's pick reads the head of the queue
instead of sorting every queued job (SQLite) or walking the finished ones (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index('ix_jobs_queue', 'jobs', ['queued_at', 'id'], unique=False,
                    postgresql_where=_QUEUED, sqlite_where=_QUEUED)


def downgrade() -> None:
    op.drop_index('ix_jobs_queue', table_name='jobs')
