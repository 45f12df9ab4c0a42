"""jobs.steps_per_epoch: the steps of one epoch, as the job's worker reports it; and on
SQLite, step_batches ids that are never reused (AUTOINCREMENT): SSE event ids rely on it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('steps_per_epoch', sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == 'sqlite':  # PostgreSQL's sequences never reuse an id
        with op.batch_alter_table('step_batches', recreate='always',
                                  table_kwargs={'sqlite_autoincrement': True}):
            pass


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('steps_per_epoch')
