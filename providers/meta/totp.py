"""Queries on TOTP second factors (providers/totp.py)."""
from __future__ import annotations

from sqlalchemy import delete, func, insert, or_, select, update

from .schema import totp, totp_recovery


def row(c, user_id: int):
    return c.execute(select(totp).where(totp.c.user_id == user_id)).mappings().first()


def enabled(c, user_id: int) -> bool:
    return c.execute(select(totp.c.user_id).where(totp.c.user_id == user_id, totp.c.confirmed_us.is_not(None))
                     ).first() is not None


def put_pending(c, user_id: int, secret_enc: bytes, now_us: int) -> None:
    """A new, unconfirmed enrolment (replacing an unconfirmed one)."""
    c.execute(delete(totp).where(totp.c.user_id == user_id))
    c.execute(insert(totp).values(user_id=user_id, secret_enc=secret_enc, created_us=now_us))


def confirm(c, user_id: int, now_us: int, lookups: list[str]) -> None:
    c.execute(update(totp).where(totp.c.user_id == user_id).values(confirmed_us=now_us))
    c.execute(delete(totp_recovery).where(totp_recovery.c.user_id == user_id))
    for lookup in lookups:
        c.execute(insert(totp_recovery).values(user_id=user_id, lookup=lookup))


def take_step(c, user_id: int, step: int) -> bool:
    """Record `step` as used unless it or a later one already was: True once."""
    return c.execute(update(totp).where(totp.c.user_id == user_id,
                                        or_(totp.c.last_step.is_(None), totp.c.last_step < step))
                     .values(last_step=step)).rowcount == 1


def use_recovery(c, user_id: int, lookup: str) -> bool:
    """Spend a recovery code: True once for each."""
    return c.execute(delete(totp_recovery).where(totp_recovery.c.user_id == user_id,
                                                 totp_recovery.c.lookup == lookup)).rowcount == 1


def recovery_left(c, user_id: int) -> int:
    return c.execute(select(func.count()).select_from(totp_recovery)
                     .where(totp_recovery.c.user_id == user_id)).scalar_one()


def remove(c, user_id: int) -> bool:
    c.execute(delete(totp_recovery).where(totp_recovery.c.user_id == user_id))
    return c.execute(delete(totp).where(totp.c.user_id == user_id)).rowcount > 0
