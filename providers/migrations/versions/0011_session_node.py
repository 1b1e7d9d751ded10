"""session records: the node and process that write them, and whether they
were cut short by that process's death; accounts: when they were last seen,
kept beyond the records' retention

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OPEN = sa.text('ended_us IS NULL')


def upgrade() -> None:
    with op.batch_alter_table('session_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('pid', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cut_short', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index('ix_session_records_open', ['node', 'pid'], unique=False,
                              sqlite_where=OPEN, postgresql_where=OPEN)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_us', sa.BigInteger(), nullable=True))
    # What the records and logins still show of each account's last activity.
    op.execute("UPDATE users SET last_seen_us = (SELECT MAX(COALESCE(s.ended_us, s.seen_us, s.started_us)) "
               "FROM session_records s WHERE s.user_id = users.id)")
    op.execute("UPDATE users SET last_seen_us = last_login_us WHERE last_login_us IS NOT NULL "
               "AND (last_seen_us IS NULL OR last_seen_us < last_login_us)")


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('last_seen_us')
    with op.batch_alter_table('session_records', schema=None) as batch_op:
        batch_op.drop_index('ix_session_records_open', sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.drop_column('cut_short')
        batch_op.drop_column('pid')
        batch_op.drop_column('node')
