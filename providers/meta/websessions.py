"""Queries on web sessions (providers/web_sessions.py)."""
from __future__ import annotations

from sqlalchemy import delete, insert, or_, select, update

from .schema import users
from .schema import web_sessions as ws
from .schema import web_signins as wsi


def add(c, **values) -> int:
    return c.execute(insert(ws).values(**values)).inserted_primary_key[0]


def by_lookup(c, lookup: str):
    """The session with its account's name, mode, status and current credential generation."""
    return c.execute(select(ws, users.c.name, users.c.mode, users.c.status,
                            users.c.credential_gen.label("current_gen"))
                     .join(users, users.c.id == ws.c.user_id).where(ws.c.lookup == lookup)).mappings().first()


def live_of(c, lookups, now_us: int, idle_before_us: int) -> set[str]:
    """Those of `lookups` whose session is live: not signed out, idle or too
    old, and its account active with the credentials it signed in with."""
    rows = c.execute(select(ws.c.lookup).join(users, users.c.id == ws.c.user_id)
                     .where(ws.c.lookup.in_(list(lookups)), ws.c.expires_us > now_us, ws.c.used_us > idle_before_us,
                            users.c.status == "active", users.c.credential_gen == ws.c.credential_gen))
    return {r[0] for r in rows}


def of_user(c, user_id: int, now_us: int, idle_before_us: int):
    """The account's live sessions, newest first."""
    return c.execute(select(ws).where(ws.c.user_id == user_id, ws.c.expires_us > now_us,
                                      ws.c.used_us > idle_before_us).order_by(ws.c.id.desc())).mappings().all()


def remove_of_user(c, user_id: int, session_id: int) -> int:
    """Delete a session by id, only if it is the account's."""
    return c.execute(delete(ws).where(ws.c.id == session_id, ws.c.user_id == user_id)).rowcount


def touch(c, session_id: int, used_us: int) -> None:
    c.execute(update(ws).where(ws.c.id == session_id).values(used_us=used_us))


def remove(c, lookup: str) -> int:
    return c.execute(delete(ws).where(ws.c.lookup == lookup)).rowcount


def purge_expired(c, now_us: int, idle_before_us: int) -> int:
    return c.execute(delete(ws).where(or_(ws.c.expires_us <= now_us, ws.c.used_us <= idle_before_us))).rowcount


def add_signin(c, **values) -> None:
    c.execute(insert(wsi).values(**values))


def signin_by_lookup(c, lookup: str):
    """A waiting sign-in with its account's name, status and current credential generation."""
    return c.execute(select(wsi, users.c.name, users.c.status, users.c.credential_gen.label("current_gen"))
                     .join(users, users.c.id == wsi.c.user_id).where(wsi.c.lookup == lookup)).mappings().first()


def remove_signin(c, lookup: str) -> int:
    return c.execute(delete(wsi).where(wsi.c.lookup == lookup)).rowcount


def purge_signins(c, now_us: int) -> int:
    return c.execute(delete(wsi).where(wsi.c.expires_us <= now_us)).rowcount
