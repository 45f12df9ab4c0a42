"""jobs.latest: the last epoch row's figures, kept on the job (filled in from the epoch
rows stored so far); an index on (owner_id, updated_at) for the jobs stream

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('latest', sa.JSON))
_epochs = sa.table('epochs', sa.column('job_id', sa.String), sa.column('epoch', sa.Integer),
                   sa.column('train_loss', sa.Float), sa.column('val_loss', sa.Float),
                   sa.column('metrics', sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('latest', sa.JSON(), nullable=True))
        batch_op.create_index('ix_jobs_owner_id_updated_at', ['owner_id', 'updated_at'],
                              unique=False)
    last = (sa.select(_epochs.c.job_id, sa.func.max(_epochs.c.epoch).label('epoch'))
            .group_by(_epochs.c.job_id).subquery())
    bind = op.get_bind()
    rows = bind.execute(sa.select(_epochs).join(last, sa.and_(
        _epochs.c.job_id == last.c.job_id, _epochs.c.epoch == last.c.epoch))).all()
    if rows:
        bind.execute(_jobs.update().where(_jobs.c.id == sa.bindparam('job'))
                     .values(latest=sa.bindparam('figures')),
                     [{'job': r.job_id, 'figures': {'epoch': r.epoch, 'train_loss': r.train_loss,
                                                    'val_loss': r.val_loss,
                                                    'metrics': r.metrics}} for r in rows])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_owner_id_updated_at')
        batch_op.drop_column('latest')
