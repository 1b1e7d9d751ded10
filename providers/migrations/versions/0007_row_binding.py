"""sealed values bound to their rows: which accounts and domains still hold
values sealed before binding, and the lookup a recorded name was bound to

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 20:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # existing rows: 1 (values sealed before binding may remain; they are
    # re-sealed, bound, the first time their keys are at hand)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealing', sa.Integer(), nullable=False, server_default='1'))
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealing', sa.Integer(), nullable=False, server_default='1'))
    with op.batch_alter_table('node_history', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_lookup', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('node_history', schema=None) as batch_op:
        batch_op.drop_column('name_lookup')
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_column('sealing')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('sealing')
