"""login guard records: per address, per account and per account-and-address,
with reservations, growing bans and trusted pairs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """The old counters are dropped: they only ever held minutes of state."""
    op.drop_table('throttle')
    op.create_table('throttle',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('pending', sa.Integer(), nullable=False),
    sa.Column('window_start_us', sa.BigInteger(), nullable=False),
    sa.Column('blocked_until_us', sa.BigInteger(), nullable=True),
    sa.Column('bans', sa.Integer(), nullable=False),
    sa.Column('trusted_until_us', sa.BigInteger(), nullable=True),
    sa.Column('updated_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_throttle'))
    )
    with op.batch_alter_table('throttle', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_throttle_account'), ['account'], unique=False)


def downgrade() -> None:
    op.drop_table('throttle')
    op.create_table('throttle',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_start_us', sa.BigInteger(), nullable=False),
    sa.Column('blocked_until_us', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_throttle'))
    )
