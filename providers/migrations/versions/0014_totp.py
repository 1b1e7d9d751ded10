"""totp: an account's TOTP second factor (its secret sealed with the user
key) and its single-use recovery codes, kept as keyed hashes; web sign-ins
waiting for their code (the user key wrapped under the browser's cookie)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-13 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'totp',
        sa.Column('user_id', ID, nullable=False),
        sa.Column('secret_enc', sa.LargeBinary(), nullable=False),
        sa.Column('created_us', sa.BigInteger(), nullable=False),
        sa.Column('confirmed_us', sa.BigInteger(), nullable=True),
        sa.Column('last_step', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_totp_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', name=op.f('pk_totp')),
    )
    op.create_table(
        'totp_recovery',
        sa.Column('user_id', ID, nullable=False),
        sa.Column('lookup', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_totp_recovery_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'lookup', name=op.f('pk_totp_recovery')),
    )
    op.create_table(
        'web_signins',
        sa.Column('lookup', sa.String(length=64), nullable=False),
        sa.Column('user_id', ID, nullable=False),
        sa.Column('credential_gen', sa.Integer(), nullable=False),
        sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
        sa.Column('expires_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_web_signins_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('lookup', name=op.f('pk_web_signins')),
    )
    with op.batch_alter_table('web_signins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_signins_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_signins_expires_us'), ['expires_us'], unique=False)


def downgrade() -> None:
    op.drop_table('web_signins')
    op.drop_table('totp_recovery')
    op.drop_table('totp')
