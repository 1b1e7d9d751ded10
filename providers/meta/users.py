"""Queries on accounts, key-domain membership, the login guard, sessions, audit."""
from __future__ import annotations

import importlib

from sqlalchemy import BigInteger, bindparam, cast, delete, func, insert, literal_column, or_, select, update

from .db import HotQuery, now_us
from .schema import audit_events, domain_members, domains, nodes, receipts, session_records, throttle, users


def user_by_name(c, name: str):
    return c.execute(select(users).where(users.c.name == name)).mappings().first()


_USER_BY_ID = HotQuery(select(users).where(users.c.id == bindparam("i")))
# PostgreSQL sums integers to NUMERIC (Decimal in Python): cast back so every
# backend gives an int, which SFTP statvfs and JSON output need.
_OWNER_USAGE = HotQuery(select(cast(func.coalesce(func.sum(domains.c.used_bytes), literal_column("0")),
                                    BigInteger).label("used"))
                        .where(domains.c.owner_id == bindparam("o")))
_MEMBERSHIP = select(domain_members).where(domain_members.c.domain_id == bindparam("d"),
                                           domain_members.c.user_id == bindparam("u")).order_by(
    domain_members.c.key_gen.desc())


_GENERATION = HotQuery(select(users.c.status, users.c.credential_gen).where(users.c.name == bindparam("n")))


def generation(db, name: str):
    """{status, credential_gen} of an account, or None (checked on every
    request that a cached login serves: a lookup of its own)."""
    return db.lookup(_GENERATION, {"n": name})


def user_by_id(c, user_id: int):
    return _USER_BY_ID.first(c, {"i": user_id})


def all_users(c):
    return c.execute(select(users).order_by(users.c.name)).mappings().all()


def insert_user(c, **values) -> int:
    return c.execute(insert(users).values(**values)).inserted_primary_key[0]


def update_user(c, user_id: int, **values) -> None:
    c.execute(update(users).where(users.c.id == user_id).values(**values))


def insert_domain(c, owner_id: int, kind: str) -> int:
    return c.execute(insert(domains).values(owner_id=owner_id, kind=kind, used_bytes=0,
                                            created_us=now_us(), key_gen=1)).inserted_primary_key[0]


def set_domain_root(c, domain_id: int, root_id: int) -> None:
    c.execute(update(domains).where(domains.c.id == domain_id).values(root_node_id=root_id))


def domain(c, domain_id: int):
    return c.execute(select(domains).where(domains.c.id == domain_id)).mappings().first()


def home_domain(c, user_id: int):
    return c.execute(select(domains).where(domains.c.owner_id == user_id, domains.c.kind == "home")
                     ).mappings().first()


def add_member(c, domain_id: int, user_id: int, permission: str, wrapped_key=None, sealed_key=None,
               key_gen: int = 1, mount_enc=None) -> None:
    c.execute(insert(domain_members).values(domain_id=domain_id, user_id=user_id, permission=permission,
                                            wrapped_key=wrapped_key, sealed_key=sealed_key, key_gen=key_gen,
                                            mount_enc=mount_enc, created_us=now_us()))


def membership(c, domain_id: int, user_id: int):
    return c.execute(_MEMBERSHIP, {"d": domain_id, "u": user_id}).mappings().first()


def owner_usage(c, owner_id: int) -> int:
    return _OWNER_USAGE.first(c, {"o": owner_id})["used"]


def make_root(c, domain_id: int, name_enc: bytes) -> int:
    t = now_us()
    return c.execute(insert(nodes).values(domain_id=domain_id, parent_id=None, name_enc=name_enc,
                                          name_lookup="root", kind="d", created_us=t, mtime_us=t,
                                          changed_us=t, size=0)).inserted_primary_key[0]


# -- login guard ----------------------------------------------------------------------

def throttle_lock(c, rows: dict, now: int) -> dict[str, dict]:
    """The guard records of these keys ({key: account key or None}), made
    empty where missing and locked until the transaction ends (in key order,
    so two logins cannot deadlock)."""
    for key in sorted(rows):
        values = dict(key=key, account=rows[key], failures=0, pending=0, window_start_us=now, bans=0,
                      updated_us=now)
        if c.dialect.name in ("sqlite", "postgresql"):
            dialect = importlib.import_module(f"sqlalchemy.dialects.{c.dialect.name}")
            c.execute(dialect.insert(throttle).values(**values).on_conflict_do_nothing(index_elements=["key"]))
        elif c.execute(select(throttle.c.key).where(throttle.c.key == key)).first() is None:
            c.execute(insert(throttle).values(**values))
    found = c.execute(select(throttle).where(throttle.c.key.in_(list(rows))).order_by(throttle.c.key)
                      .with_for_update()).mappings()
    return {r["key"]: dict(r) for r in found}


def throttle_save(c, row: dict) -> None:
    c.execute(update(throttle).where(throttle.c.key == row["key"]).values(
        {k: v for k, v in row.items() if k != "key"}))


def throttle_rows(c, keys: list[str]) -> dict[str, dict]:
    return {r["key"]: dict(r) for r in c.execute(select(throttle).where(throttle.c.key.in_(keys))).mappings()}


def throttle_delete(c, keys: list[str] = (), account: str | None = None) -> int:
    """Delete these records, and with `account` every record of that account
    (its own and its pairs with addresses)."""
    cond = throttle.c.key.in_(list(keys))
    if account is not None:
        cond = or_(cond, throttle.c.account == account)
    return c.execute(delete(throttle).where(cond)).rowcount


def throttle_prune(c, before_us: int, now: int) -> int:
    """Delete records untouched since `before_us` with no ban or trust left."""
    return c.execute(delete(throttle).where(
        throttle.c.updated_us < before_us,
        or_(throttle.c.blocked_until_us.is_(None), throttle.c.blocked_until_us < now),
        or_(throttle.c.trusted_until_us.is_(None), throttle.c.trusted_until_us < now))).rowcount


# -- session records and audit ---------------------------------------------------------

SEEN_EVERY_US = 60_000_000      # an account's last_seen_us is written at most this often


def session_start(c, user_id, protocol: str, addr, node: str | None = None, pid: int | None = None) -> int:
    now = now_us()
    sid = c.execute(insert(session_records).values(user_id=user_id, protocol=protocol, client_addr=addr,
                                                   started_us=now, seen_us=now, bytes_in=0, bytes_out=0,
                                                   requests=0, node=node, pid=pid)).inserted_primary_key[0]
    _seen(c, users.c.id == user_id, now, now - SEEN_EVERY_US)
    return sid


def session_end(c, sid: int, bytes_in: int, bytes_out: int, requests: int, ended: bool = True) -> None:
    now = now_us()
    values = dict(bytes_in=bytes_in, bytes_out=bytes_out, requests=requests, seen_us=now)
    if ended:
        values["ended_us"] = now
    c.execute(update(session_records).where(session_records.c.id == sid).values(**values))
    owner = select(session_records.c.user_id).where(session_records.c.id == sid).scalar_subquery()
    _seen(c, users.c.id == owner, now, now - SEEN_EVERY_US)


def _seen(c, which, now: int, older_than: int) -> None:
    """Stamp the account's last activity, unless it was stamped at or after
    `older_than`: once a minute at most, however many connections come and
    go (so it may lag the last activity by up to SEEN_EVERY_US)."""
    c.execute(update(users).where(which, or_(users.c.last_seen_us.is_(None), users.c.last_seen_us < older_than))
              .values(last_seen_us=now))


def open_session_pids(c, node: str) -> set[int]:
    """The processes of `node` that have open session records."""
    return {r[0] for r in c.execute(select(session_records.c.pid).distinct().where(
        session_records.c.ended_us.is_(None), session_records.c.node == node,
        session_records.c.pid.is_not(None)))}


def cut_sessions_short(c, node: str, pids) -> int:
    """End the open records these dead processes of `node` wrote, at their
    last activity, marked as cut short."""
    seen = func.coalesce(session_records.c.seen_us, session_records.c.started_us)
    return c.execute(update(session_records).where(
        session_records.c.ended_us.is_(None), session_records.c.node == node,
        session_records.c.pid.in_(list(pids))).values(ended_us=seen, cut_short=True)).rowcount


def live_sessions(c, user_id: int, protocol: str, seen_since_us: int) -> tuple[int, int]:
    from sqlalchemy import case, func
    seen = func.coalesce(session_records.c.seen_us, session_records.c.started_us)
    row = c.execute(select(func.count(), func.coalesce(func.sum(case((session_records.c.user_id == user_id, 1),
                                                                      else_=0)), 0))
                    .where(session_records.c.protocol == protocol, session_records.c.ended_us.is_(None),
                           seen >= seen_since_us)).first()
    return int(row[1]), int(row[0])


def _of_user(table, user_id):
    """A table's rows with their account's name (None once erased), of one
    account when user_id is given."""
    q = select(table, users.c.name.label("user_name")).select_from(
        table.outerjoin(users, users.c.id == table.c.user_id))
    return q if user_id is None else q.where(table.c.user_id == user_id)


def sessions(c, user_id=None, since_us=None, until_us=None):
    q = _of_user(session_records, user_id)
    if since_us is not None:
        q = q.where(func.coalesce(session_records.c.ended_us, now_us()) >= since_us)
    if until_us is not None:
        q = q.where(session_records.c.started_us <= until_us)
    return c.execute(q.order_by(session_records.c.started_us)).mappings().all()


def audit(c, event: str, user_id=None, actor="system", client_addr=None, detail=None) -> int:
    return c.execute(insert(audit_events).values(at_us=now_us(), user_id=user_id, actor=actor, event=event,
                                                 client_addr=client_addr, detail=detail or {})
                     ).inserted_primary_key[0]


def audit_events_list(c, user_id=None, since_us=None, event=None, actor=None):
    q = _of_user(audit_events, user_id)
    if since_us is not None:
        q = q.where(audit_events.c.at_us >= since_us)
    if event is not None:
        q = q.where(audit_events.c.event == event)
    if actor is not None:
        q = q.where(audit_events.c.actor == actor)
    return c.execute(q.order_by(audit_events.c.at_us, audit_events.c.id)).mappings().all()


def audit_event(c, event_id: int):
    return c.execute(select(audit_events).where(audit_events.c.id == event_id)).mappings().first()


def set_audit_detail(c, event_id: int, detail: dict) -> None:
    c.execute(update(audit_events).where(audit_events.c.id == event_id).values(detail=detail))


def add_receipt(c, kind: str, body: dict) -> int:
    return c.execute(insert(receipts).values(at_us=now_us(), kind=kind, body=body)).inserted_primary_key[0]


def received_shares(c, user_id: int):
    """Share domains this user is a collaborator of, with the owner's name."""
    from .schema import users as u
    q = (select(domain_members.c.domain_id, domain_members.c.permission, domain_members.c.mount_enc,
                domain_members.c.key_gen, domain_members.c.created_us, u.c.name.label("owner_name"),
                domains.c.root_node_id)
         .select_from(domain_members.join(domains, domains.c.id == domain_members.c.domain_id)
                      .join(u, u.c.id == domains.c.owner_id))
         .where(domain_members.c.user_id == user_id, domain_members.c.permission != "owner",
                u.c.status == "active"))
    return c.execute(q).mappings().all()


def owned_domain_ids(c, owner_id: int) -> list[int]:
    """The key domains an account owns: its home and the folders it shares."""
    return [r[0] for r in c.execute(select(domains.c.id).where(domains.c.owner_id == owner_id)
                                    .order_by(domains.c.id))]


def owned_share_domains(c, owner_id: int):
    return c.execute(select(domains).where(domains.c.owner_id == owner_id, domains.c.kind == "share")
                     ).mappings().all()


def domain_by_root(c, node_id: int):
    return c.execute(select(domains).where(domains.c.root_node_id == node_id)).mappings().first()


def members(c, domain_id: int):
    from .schema import users as u
    return c.execute(select(domain_members, u.c.name, u.c.public_key)
                     .select_from(domain_members.join(u, u.c.id == domain_members.c.user_id))
                     .where(domain_members.c.domain_id == domain_id)).mappings().all()


def remove_member(c, domain_id: int, user_id: int) -> int:
    return c.execute(delete(domain_members).where(domain_members.c.domain_id == domain_id,
                                                  domain_members.c.user_id == user_id)).rowcount


def update_member(c, domain_id: int, user_id: int, **values) -> None:
    c.execute(update(domain_members).where(domain_members.c.domain_id == domain_id,
                                           domain_members.c.user_id == user_id).values(**values))


def update_domain(c, domain_id: int, **values) -> None:
    c.execute(update(domains).where(domains.c.id == domain_id).values(**values))


def memberships_of(c, user_id: int):
    """Every membership row of a user (owned and received domains)."""
    return c.execute(select(domain_members).where(domain_members.c.user_id == user_id)).mappings().all()

