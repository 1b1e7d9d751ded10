"""the stored chunk hash is BLAKE3 from now on (older rows keep SHA-256)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 17:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Values are "blake3:<hex>"; a bare hex value is the SHA-256 of a chunk
    written before."""
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.alter_column('stored_sha256', new_column_name='stored_hash',
                              existing_type=sa.String(length=64), type_=sa.String(length=80),
                              existing_nullable=False)


def downgrade() -> None:
    """The column keeps its width: values written since are longer than 64."""
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.alter_column('stored_hash', new_column_name='stored_sha256',
                              existing_type=sa.String(length=80), existing_nullable=False)
