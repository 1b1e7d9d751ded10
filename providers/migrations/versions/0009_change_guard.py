"""the mass-change guard: recent changes of existing files per account,
and a hold that keeps everything

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 20:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'change_guard',
        sa.Column('user_id', ID, nullable=False),
        sa.Column('window_start_us', sa.BigInteger(), nullable=False),
        sa.Column('changes', sa.Integer(), nullable=False),
        sa.Column('checked_at', sa.Integer(), nullable=False),
        sa.Column('hold_until_us', sa.BigInteger(), nullable=True),
        sa.Column('hold_from_us', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_change_guard_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', name=op.f('pk_change_guard')),
    )


def downgrade() -> None:
    op.drop_table('change_guard')
