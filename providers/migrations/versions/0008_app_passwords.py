"""app passwords: one per device or backup job, each wrapping the user key
under its own secret, with a scope

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'app_passwords',
        sa.Column('id', ID, nullable=False),
        sa.Column('user_id', ID, nullable=False),
        sa.Column('label', sa.String(length=64), nullable=False),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('lookup', sa.String(length=64), nullable=False),
        sa.Column('kdf_salt', sa.LargeBinary(), nullable=False),
        sa.Column('kdf_params', sa.JSON(), nullable=False),
        sa.Column('wrapped_user_key', sa.LargeBinary(), nullable=False),
        sa.Column('created_us', sa.BigInteger(), nullable=False),
        sa.Column('last_used_us', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_app_passwords_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_app_passwords')),
        sa.UniqueConstraint('lookup', name=op.f('uq_app_passwords_lookup')),
        sa.UniqueConstraint('user_id', 'label', name='uq_app_passwords_user_label'),
    )
    with op.batch_alter_table('app_passwords', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_app_passwords_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_table('app_passwords')
