"""Queries of the mass-change guard (providers/guard.py)."""
from __future__ import annotations

from sqlalchemy import and_, bindparam, func, insert, select, update

from .db import HotQuery, HotStatement
from .schema import change_guard as g
from .schema import domains, nodes

# read and written by every overwrite (providers/publish.py): built once
_ROW = HotQuery(select(g).where(g.c.user_id == bindparam("u")))
_HOLD_UNTIL = HotQuery(select(g.c.hold_until_us).where(g.c.user_id == bindparam("u")))
_UPDATE = HotStatement(update(g).where(g.c.user_id == bindparam("w_user")))
_INSERT = HotStatement(insert(g))


def row(c, user_id: int) -> dict | None:
    return _ROW.first(c, {"u": user_id})


def put(c, user_id: int, **values) -> None:
    if _UPDATE.run(c, {**values, "w_user": user_id}) == 0:
        _INSERT.run(c, {"changes": 0, "checked_at": 0, **values, "user_id": user_id})


def hold_until(c, user_id: int) -> int | None:
    r = _HOLD_UNTIL.first(c, {"u": user_id})
    return None if r is None else r["hold_until_us"]


def live_files(c, owner_id: int) -> int:
    """The files an account owns, in its home and its shared folders."""
    return c.execute(select(func.count()).select_from(nodes.join(domains, domains.c.id == nodes.c.domain_id))
                     .where(and_(domains.c.owner_id == owner_id, nodes.c.kind == "f",
                                 nodes.c.trashed_us.is_(None)))).scalar_one()
