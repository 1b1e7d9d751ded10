"""Queries on leases (providers/leases.py). Each runs inside a write
transaction, which is one writer at a time on both databases."""
from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from .schema import leases


def row(conn: Connection, name: str) -> dict | None:
    r = conn.execute(select(leases).where(leases.c.name == name)).mappings().first()
    return None if r is None else dict(r)


def take(conn: Connection, name: str, holder: str, now: float, ttl: float) -> tuple[bool, str | None]:
    """Take or renew `name` for `holder` when free, expired or already its
    own; (taken, the holder it stays with otherwise)."""
    r = row(conn, name)
    if r is None:
        conn.execute(insert(leases).values(name=name, holder=holder, expires=int(now + ttl), state=None))
        return True, holder
    if r["holder"] == holder or r["holder"] is None or r["expires"] <= now:
        conn.execute(update(leases).where(leases.c.name == name).values(holder=holder, expires=int(now + ttl)))
        return True, holder
    return False, r["holder"]


def give_up(conn: Connection, name: str, holder: str) -> None:
    conn.execute(update(leases).where(leases.c.name == name, leases.c.holder == holder)
                 .values(holder=None, expires=0))


def save_state(conn: Connection, name: str, state: dict) -> None:
    if row(conn, name) is None:
        conn.execute(insert(leases).values(name=name, holder=None, expires=0, state=state))
    else:
        conn.execute(update(leases).where(leases.c.name == name).values(state=state))
