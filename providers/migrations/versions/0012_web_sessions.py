"""web sessions: signed-in browsers of the web pages, each kept as a hash of
its cookie, the account and its credential generation at sign-in

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'web_sessions',
        sa.Column('id', ID, nullable=False),
        sa.Column('lookup', sa.String(length=64), nullable=False),
        sa.Column('user_id', ID, nullable=False),
        sa.Column('credential_gen', sa.Integer(), nullable=False),
        sa.Column('created_us', sa.BigInteger(), nullable=False),
        sa.Column('used_us', sa.BigInteger(), nullable=False),
        sa.Column('expires_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_web_sessions_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
        sa.UniqueConstraint('lookup', name=op.f('uq_web_sessions_lookup')),
    )
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_sessions_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_sessions_expires_us'), ['expires_us'], unique=False)


def downgrade() -> None:
    op.drop_table('web_sessions')
