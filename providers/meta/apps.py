"""Queries on app passwords (providers/app_passwords.py)."""
from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update

from .schema import app_passwords as ap


def add(c, **values) -> int:
    return c.execute(insert(ap).values(**values)).inserted_primary_key[0]


def change(c, app_id: int, **values) -> None:
    c.execute(update(ap).where(ap.c.id == app_id).values(**values))


def by_id(c, app_id: int):
    return c.execute(select(ap).where(ap.c.id == app_id)).mappings().first()


def by_label(c, user_id: int, label: str):
    return c.execute(select(ap).where(ap.c.user_id == user_id, ap.c.label == label)).mappings().first()


def by_lookup(c, lookup: str):
    return c.execute(select(ap).where(ap.c.lookup == lookup)).mappings().first()


def of_user(c, user_id: int):
    return c.execute(select(ap).where(ap.c.user_id == user_id).order_by(ap.c.id)).mappings().all()


def count(c, user_id: int) -> int:
    return c.execute(select(func.count()).select_from(ap).where(ap.c.user_id == user_id)).scalar_one()


def remove(c, app_id: int) -> None:
    c.execute(delete(ap).where(ap.c.id == app_id))


def delete_of_user(c, user_id: int) -> int:
    return c.execute(delete(ap).where(ap.c.user_id == user_id)).rowcount
