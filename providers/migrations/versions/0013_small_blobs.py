"""small blobs: the encrypted chunk of a small file kept in the database,
committed with the version that refers to it (one sync instead of a file,
its folder entry and the database's log)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-13 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'small_blobs',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_small_blobs')),
    )


def downgrade() -> None:
    held = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM small_blobs")).scalar()
    if held:
        raise RuntimeError(f"{held} small files' chunks are kept in the database (table small_blobs), which a "
                           "release before revision 0013 cannot read: nothing was changed; keep this release")
    op.drop_table('small_blobs')
