"""Queries of the mass-change guard (providers/guard.py)."""
from __future__ import annotations

from sqlalchemy import and_, func, insert, select, update

from .schema import change_guard as g
from .schema import domains, nodes


def row(c, user_id: int):
    return c.execute(select(g).where(g.c.user_id == user_id)).mappings().first()


def put(c, user_id: int, **values) -> None:
    if c.execute(update(g).where(g.c.user_id == user_id).values(**values)).rowcount == 0:
        c.execute(insert(g).values(user_id=user_id, **{"changes": 0, "checked_at": 0, **values}))


def hold_until(c, user_id: int) -> int | None:
    return c.execute(select(g.c.hold_until_us).where(g.c.user_id == user_id)).scalar()


def live_files(c, owner_id: int) -> int:
    """The files an account owns, in its home and its shared folders."""
    return c.execute(select(func.count()).select_from(nodes.join(domains, domains.c.id == nodes.c.domain_id))
                     .where(and_(domains.c.owner_id == owner_id, nodes.c.kind == "f",
                                 nodes.c.trashed_us.is_(None)))).scalar_one()
