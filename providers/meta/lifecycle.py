"""Queries for the account lifecycle: erasure, grants, retention of records,
and choosing whom to notify. Called only from providers/lifecycle.py."""
from __future__ import annotations

from sqlalchemy import and_, delete, func, or_, select, update

from .schema import (app_passwords, audit_events, chunks, dead_props, domain_members, domains, locks, node_history, nodes,
                     receipts, session_records, ssh_keys, totp, totp_recovery, users, version_chunks, versions)
from .users import SEEN_EVERY_US, throttle_delete


# -- erasure -----------------------------------------------------------------------------

def owned_domains(c, user_id: int) -> list[int]:
    return [r[0] for r in c.execute(select(domains.c.id).where(domains.c.owner_id == user_id)
                                    .order_by(domains.c.id))]


def shred_keys(c, user_id: int, throttle_key: str, dead_hash: bytes) -> dict:
    """Destroy every wrapped copy of the account's keys and of the keys of the
    domains it owns, with its SSH keys, locks and login guard records (its
    own and its pairs with addresses), app passwords and TOTP secret. After this nothing on the server can
    decrypt the account's chunks."""
    owned = select(domains.c.id).where(domains.c.owner_id == user_id)
    n_members = c.execute(delete(domain_members).where(or_(domain_members.c.domain_id.in_(owned),
                                                           domain_members.c.user_id == user_id))).rowcount
    c.execute(update(users).where(users.c.id == user_id).values(
        wrapped_user_key=b"", recovery_wrapped_key=None, wrapped_private_key=b"", public_key=b"",
        password_hash=dead_hash, kdf_salt=b""))
    n_ssh = c.execute(delete(ssh_keys).where(ssh_keys.c.user_id == user_id)).rowcount
    n_apps = c.execute(delete(app_passwords).where(app_passwords.c.user_id == user_id)).rowcount
    c.execute(delete(totp_recovery).where(totp_recovery.c.user_id == user_id))
    c.execute(delete(totp).where(totp.c.user_id == user_id))
    n_locks = c.execute(delete(locks).where(or_(locks.c.domain_id.in_(owned), locks.c.user_id == user_id))
                        ).rowcount
    throttle_delete(c, [throttle_key], account=throttle_key)
    return {"key_memberships": n_members, "ssh_keys": n_ssh, "app_passwords": n_apps, "locks": n_locks}


def domain_tree_counts(c, domain_id: int) -> dict:
    in_dom = select(nodes.c.id).where(nodes.c.domain_id == domain_id)
    kinds = dict(c.execute(select(nodes.c.kind, func.count()).where(nodes.c.domain_id == domain_id)
                           .group_by(nodes.c.kind)).all())
    return {"files": kinds.get("f", 0), "folders": max(0, kinds.get("d", 0) - 1),   # the root is no folder
            "versions": c.execute(select(func.count()).select_from(versions)
                                  .where(versions.c.domain_id == domain_id)).scalar_one(),
            "dead_properties": c.execute(select(func.count()).select_from(dead_props)
                                         .where(dead_props.c.node_id.in_(in_dom))).scalar_one()}


def delete_domain_tree(c, domain_id: int) -> None:
    """Remove a domain's nodes, versions, history and dead properties (its
    chunks go separately, in batches, with their blobs)."""
    in_dom = select(nodes.c.id).where(nodes.c.domain_id == domain_id)
    vers = select(versions.c.id).where(or_(versions.c.domain_id == domain_id, versions.c.node_id.in_(in_dom)))
    c.execute(update(nodes).where(nodes.c.domain_id == domain_id).values(version_id=None))
    c.execute(delete(version_chunks).where(version_chunks.c.version_id.in_(vers)))
    c.execute(delete(versions).where(or_(versions.c.domain_id == domain_id, versions.c.node_id.in_(in_dom))))
    c.execute(delete(dead_props).where(dead_props.c.node_id.in_(in_dom)))
    c.execute(delete(node_history).where(node_history.c.node_id.in_(in_dom)))
    c.execute(delete(locks).where(locks.c.domain_id == domain_id))
    c.execute(delete(nodes).where(nodes.c.domain_id == domain_id))


def chunk_batch(c, domain_id: int, limit: int):
    return c.execute(select(chunks.c.id, chunks.c.blob_name, chunks.c.stored_size)
                     .where(chunks.c.domain_id == domain_id).order_by(chunks.c.id).limit(limit)).all()


def blobs_used_elsewhere(c, names: list[str], chunk_ids: list[int]) -> set[str]:
    """Of these blob names, those a chunk outside `chunk_ids` also stores: a
    chunk of another domain, or one of a later batch in the same pack."""
    if not names:
        return set()
    return {r[0] for r in c.execute(select(chunks.c.blob_name).distinct()
                                    .where(chunks.c.blob_name.in_(names), chunks.c.id.not_in(chunk_ids)))}


def delete_chunks(c, ids: list[int]) -> None:
    if ids:
        c.execute(delete(version_chunks).where(version_chunks.c.chunk_id.in_(ids)))
        c.execute(delete(chunks).where(chunks.c.id.in_(ids)))


def delete_domain(c, domain_id: int) -> None:
    c.execute(delete(domain_members).where(domain_members.c.domain_id == domain_id))
    c.execute(delete(domains).where(domains.c.id == domain_id))


def anonymise_records(c, user_id: int) -> dict:
    """Keep session records and audit events (counts, times, bytes) but
    drop who and from where; forget the account as author of versions it
    wrote in folders others own."""
    n_sessions = c.execute(update(session_records).where(session_records.c.user_id == user_id)
                           .values(user_id=None, client_addr=None)).rowcount
    n_audit = c.execute(update(audit_events).where(audit_events.c.user_id == user_id)
                        .values(user_id=None, client_addr=None)).rowcount
    c.execute(update(versions).where(versions.c.author_id == user_id).values(author_id=None))
    c.execute(update(locks).where(locks.c.user_id == user_id).values(user_id=None))
    return {"session_records_anonymised": n_sessions, "audit_events_anonymised": n_audit}


def delete_user(c, user_id: int) -> None:
    c.execute(delete(users).where(users.c.id == user_id))


def users_with_status(c, status: str):
    return c.execute(select(users).where(users.c.status == status).order_by(users.c.id)).mappings().all()


def cancelled_due(c, now_us: int):
    """Accounts whose erasure is due: cancelled, or asked for by their holder."""
    return c.execute(select(users).where(users.c.status != "erasing", users.c.erase_after_us.is_not(None),
                                         users.c.erase_after_us <= now_us).order_by(users.c.id)
                     ).mappings().all()


# -- records retention ---------------------------------------------------------------------------

def purge_sessions_before(c, cutoff_us: int) -> int:
    return c.execute(delete(session_records).where(
        func.coalesce(session_records.c.ended_us, session_records.c.started_us) < cutoff_us,
        session_records.c.ended_us.is_not(None))).rowcount


def end_abandoned_sessions(c, seen_before_us: int) -> int:
    """End the open records no process has written since `seen_before_us`
    (their process died, on a node that has not started again): at the last
    time they were seen, marked as cut short."""
    seen = func.coalesce(session_records.c.seen_us, session_records.c.started_us)
    return c.execute(update(session_records).where(session_records.c.ended_us.is_(None), seen < seen_before_us)
                     .values(ended_us=seen, cut_short=True)).rowcount


def purge_audit_before(c, cutoff_us: int) -> int:
    return c.execute(delete(audit_events).where(audit_events.c.at_us < cutoff_us)).rowcount


# -- whom to notify ----------------------------------------------------------------------------

def active_in_window(c, since_us: int, until_us: int):
    """Accounts that may have been active in [since, until]: last seen at or
    after `since` (less the stamp's lag) and created at or before `until`,
    or with a session record overlapping the window."""
    ids = select(session_records.c.user_id).where(
        session_records.c.user_id.is_not(None), session_records.c.started_us <= until_us,
        or_(session_records.c.ended_us.is_(None), session_records.c.ended_us >= since_us))
    seen = func.coalesce(users.c.last_seen_us, users.c.last_login_us)
    return c.execute(select(users).where(or_(users.c.id.in_(ids), and_(seen >= since_us - SEEN_EVERY_US,
                                                                          users.c.created_us <= until_us)),
                                         users.c.status != "erasing")
                     .order_by(users.c.name)).mappings().all()


def every_account(c):
    """Every account that has not begun its erasure: active, disabled and
    cancelled (within its grace period) alike."""
    return c.execute(select(users).where(users.c.status != "erasing").order_by(users.c.name)).mappings().all()


def news_recipients(c):
    return c.execute(select(users).where(users.c.consent_news.is_(True), users.c.status == "active")
                     .order_by(users.c.name)).mappings().all()


# -- receipts --------------------------------------------------------------------------------------

def receipts_list(c, kind: str | None = None, receipt_id: int | None = None):
    q = select(receipts)
    if kind is not None:
        q = q.where(receipts.c.kind == kind)
    if receipt_id is not None:
        q = q.where(receipts.c.id == receipt_id)
    return c.execute(q.order_by(receipts.c.id)).mappings().all()



def checkpoint(db) -> bool | None:
    """SQLite: move the write-ahead log into the database file and truncate
    it, so the pages of erased rows do not linger there. True if complete
    (a long-running reader elsewhere can hold it back); None on other
    databases, where VACUUM is the operator's job."""
    if not db.is_sqlite:
        return None
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        busy = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        cur.close()
        return busy == 0
    finally:
        raw.close()


def drop_memberships(c, user_id: int) -> int:
    """Remove every key-domain membership of an account and of the domains it
    owns (their wrapped keys go with them)."""
    owned = select(domains.c.id).where(domains.c.owner_id == user_id)
    return c.execute(delete(domain_members).where(or_(domain_members.c.domain_id.in_(owned),
                                                      domain_members.c.user_id == user_id))).rowcount
