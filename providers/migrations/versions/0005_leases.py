"""leases: one process among all workers and nodes runs each periodic job

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 11:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('leases',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leases'))
    )


def downgrade() -> None:
    op.drop_table('leases')
