"""Queries on the SSH public keys accounts log in with."""
from __future__ import annotations

from sqlalchemy import delete, insert, select

from .db import now_us
from .schema import ssh_keys


def insert_key(c, user_id: int, fingerprint: str, public_key: str, comment: str) -> int:
    return c.execute(insert(ssh_keys).values(user_id=user_id, fingerprint=fingerprint, public_key=public_key,
                                             comment=comment, created_us=now_us())).inserted_primary_key[0]


def keys_of(c, user_id: int):
    return c.execute(select(ssh_keys).where(ssh_keys.c.user_id == user_id)
                     .order_by(ssh_keys.c.created_us, ssh_keys.c.id)).mappings().all()


def key_by_fingerprint(c, user_id: int, fingerprint: str):
    return c.execute(select(ssh_keys).where(ssh_keys.c.user_id == user_id,
                                            ssh_keys.c.fingerprint == fingerprint)).mappings().first()


def delete_key(c, key_id: int) -> None:
    c.execute(delete(ssh_keys).where(ssh_keys.c.id == key_id))
