"""Queries for WebDAV locks (table `locks`), shared by every server node.

Rows hold only a keyed hash of the locked path and the lock itself sealed
under their key domain's metadata key; see providers/locks.py.
"""
from __future__ import annotations

from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.engine import Connection

from .db import HotQuery
from .schema import domain_members as dm, domains, locks


def insert(conn: Connection, *, token: str, domain_id: int, user_id: int | None, root_lookup: str,
           expires_us: int, data_enc: bytes) -> None:
    conn.execute(locks.insert().values(token=token, domain_id=domain_id, user_id=user_id,
                                       root_lookup=root_lookup, expires_us=expires_us, data_enc=data_enc))


def get(conn: Connection, domain_id: int, token: str, now_us: int):
    return conn.execute(select(locks).where(and_(locks.c.token == token, locks.c.domain_id == domain_id,
                                                 locks.c.expires_us >= now_us))).first()


def domain_of(conn: Connection, token: str, now_us: int) -> int | None:
    return conn.execute(select(locks.c.domain_id).where(and_(locks.c.token == token,
                                                             locks.c.expires_us >= now_us))).scalar()


def by_root(conn: Connection, domain_id: int, root_lookup: str, now_us: int) -> list:
    return list(conn.execute(select(locks).where(and_(locks.c.domain_id == domain_id,
                                                      locks.c.root_lookup == root_lookup,
                                                      locks.c.expires_us >= now_us))))


def by_domain(conn: Connection, domain_id: int, now_us: int) -> list:
    return list(conn.execute(select(locks).where(and_(locks.c.domain_id == domain_id,
                                                      locks.c.expires_us >= now_us))))


def set_expiry(conn: Connection, domain_id: int, token: str, expires_us: int, data_enc: bytes) -> bool:
    res = conn.execute(update(locks).where(and_(locks.c.token == token, locks.c.domain_id == domain_id))
                       .values(expires_us=expires_us, data_enc=data_enc))
    return res.rowcount > 0


def remove(conn: Connection, domain_id: int, token: str) -> bool:
    res = conn.execute(delete(locks).where(and_(locks.c.token == token, locks.c.domain_id == domain_id)))
    return res.rowcount > 0


def remove_of_user(conn: Connection, domain_id: int, user_id: int) -> int:
    return conn.execute(delete(locks).where(and_(locks.c.domain_id == domain_id, locks.c.user_id == user_id))).rowcount


def purge_expired(conn: Connection, now_us: int) -> int:
    return conn.execute(delete(locks).where(locks.c.expires_us < now_us)).rowcount


def any_live(conn: Connection, domain_id: int, now_us: int) -> bool:
    return conn.execute(select(locks.c.token).where(and_(locks.c.domain_id == domain_id,
                                                         locks.c.expires_us >= now_us)).limit(1)).first() is not None


# A live lock in any key domain the user is a member of (owner included):
# asked on every WebDAV request, so it is a HotQuery run by Database.lookup
# (one statement, no transaction around it on SQLite; the first row is enough)
ANY_LIVE_FOR_USER = HotQuery(select(locks.c.token).select_from(locks.join(dm, dm.c.domain_id == locks.c.domain_id))
                             .where(dm.c.user_id == bindparam("u"), locks.c.expires_us >= bindparam("t")))


def of_domain(conn: Connection, domain_id: int) -> list:
    """Every row of a key domain, expired or not (to re-seal them under a new key)."""
    return list(conn.execute(select(locks).where(locks.c.domain_id == domain_id)))


def reseal(conn: Connection, token: str, domain_id: int, root_lookup: str, data_enc: bytes) -> None:
    conn.execute(update(locks).where(locks.c.token == token).values(domain_id=domain_id, root_lookup=root_lookup,
                                                                    data_enc=data_enc))


def key_gen(conn: Connection, domain_id: int) -> int | None:
    """The domain's key generation, its row locked until the transaction ends
    (PostgreSQL; SQLite writers are serialized anyway): a lock sealed in this
    transaction and a key rotation cannot interleave."""
    return conn.execute(select(domains.c.key_gen).where(domains.c.id == domain_id).with_for_update()).scalar()
