"""The life of an account and the data-protection duties: profile changes,
cancel and reinstate, erasure (right to be forgotten), exclusion patterns,
notices by email, and the periodic job that erases what is due and applies
retention. Export (right of access and portability) is providers/export.py;
the record of what administrators do is providers/access.py.

Erasure destroys keys first. In one transaction it marks the account
`erasing`, deletes every wrapped copy of its user key and of the keys of the
domains it owns (their `domain_members` rows, including the grants it made),
its memberships of others' domains (grants received), SSH keys, locks and
login counters, and blanks its profile (and the recipients and reasons of
disclosures recorded for it). From then on no key left on the
server opens its chunks, so a copy of its blobs in any backup is noise. Then,
in batches, it removes its files, versions, history, dead properties and
chunks (blobs before their rows, so an interrupted run leaves nothing
unreferenced), and finally anonymises its session records and audit events,
deletes the account row and stores a receipt, all in one transaction. The
progress counters live in the account row, so a run killed at any point
(SIGKILL included) resumes where it stopped when run again.
"""
from __future__ import annotations

import logging
import os
import re
import time

import bcrypt

from . import access, consent, crypto, meta, paths, purging
from .accounts import BadRequest, User, check_password, normalize_name
from .errors import AlreadyExists, AuthenticationFailed, Conflict, CofferError, NotFound
from .mail import Mailer
from .meta import lifecycle as lq
from .meta import locks as lockq
from .meta import users as uq
from .retention import DAY
from .purging import expire_account

log = logging.getLogger(__name__)
CHUNK_BATCH = 200
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STALE_ERASURE_US = 600 * 1_000_000     # the periodic job resumes erasures idle this long
ABANDONED_SESSION_US = 600 * 1_000_000  # an open session record nobody wrote this long lost its process
                                        # (open ones are written every minute or two)


def iso(us: int | None) -> str | None:
    if not us:
        return None
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def _row(c, name: str):
    row = uq.user_by_name(c, normalize_name(name))
    if row is None:
        raise NotFound(f"no account named {normalize_name(name)!r}; see `coffer-admin user list`")
    return row


def _not_erasing(user: User) -> None:
    if user.status == "erasing":
        raise Conflict(f"account {user.name!r} is being erased; run `coffer-admin user erase {user.name}` "
                       "to finish")


# -- profile, cancel, reinstate ---------------------------------------------------------------

def set_profile(st, name: str, *, first_name=None, last_name=None, email=None, consent=None, plan=None,
                quota=None, now_us: int | None = None, by: str = "admin") -> tuple[User, list[str]]:
    """Change profile fields, email consent, plan or quota. Returns the
    account and warnings (a quota below current usage blocks new writes).
    `by` is "admin", or "web" when the holder changes their own profile on
    its page (recorded as how consent was given, and as the user's act)."""
    user = st.accounts.get(name)
    _not_erasing(user)
    values: dict = {}
    for field, value, limit in (("first_name", first_name, 200), ("last_name", last_name, 200)):
        if value is not None:
            if len(value) > limit or any(ch in value for ch in "\r\n\x00"):
                raise BadRequest(f"{field.replace('_', ' ')}: at most {limit} characters on one line")
            values[field] = value.strip()
    if email is not None:
        email = email.strip()
        if email and (len(email) > 320 or not EMAIL_RE.match(email)):
            raise BadRequest(f"{email!r} is not an email address")
        values["email"] = email
    if consent is not None and bool(consent) != user.consent_news:
        values["consent_news"] = bool(consent)
        values["consent_changed_us"] = now_us or meta.now_us()
        values["consent_how"] = by
    if plan is not None:
        if plan not in st.cfg.accounts.plans:
            raise BadRequest(f"unknown plan {plan!r}; plans: {', '.join(st.cfg.accounts.plans)}")
        values["plan"] = plan
        values["quota_bytes"] = None
    if quota is not None:
        if quota < 0:
            raise BadRequest("quota must be zero (no limit) or a positive number of bytes")
        values["quota_bytes"] = quota
    if not values:
        return user, []
    user = st.accounts.update(user.name, actor="admin" if by == "admin" else "user", **values)
    warnings = []
    limit, used = st.accounts.quota_limit(user), st.accounts.usage(user.id)
    if limit is not None and used > limit:
        warnings.append(f"usage ({used} bytes) is above the new quota ({limit} bytes): the account keeps its "
                        "files, but new writes are refused until it is below")
    return user, warnings


def confirm_holder(st, name: str, password: str, client_addr=None, protocol: str = "web",
                   status: str = "active") -> User:
    """Check that the holder of an account in `status` gave its password, as a
    sign-in does (under the login guard, failures audited): before a
    cancellation or an erasure request, and for a cancelled account's holder
    who signs in to reinstate it. One message for an unknown name, a wrong
    password and an account in another status."""
    name = normalize_name(name)
    attempt = st.throttle.reserve(name, client_addr)
    try:
        with st.db.read() as c:
            row = uq.user_by_name(c, name)
        ok = st.accounts.verify(row, password)
    except BaseException:
        st.throttle.failed(attempt)
        raise
    if not ok or row["status"] != status:
        st.throttle.failed(attempt)
        reason = "unknown" if row is None else "password" if not ok else row["status"]
        st.audit("login_failed", user_id=row["id"] if row else None, actor="user", client_addr=client_addr,
                 protocol=protocol, reason=reason)
        raise AuthenticationFailed("wrong user name or password")
    st.throttle.succeeded(attempt)
    return User.from_row(row)


class PlanTooSmall(BadRequest):
    """A plan smaller than what the account stores: `size` and `used`, in bytes."""

    def __init__(self, text: str, size: int, used: int):
        super().__init__(text)
        self.size, self.used = size, used


def change_plan(st, name: str, plan: str, by: str = "admin") -> User:
    """Move the account to another plan the config offers. Unlike `set_profile`
    (the administrator's, which may set a quota below usage and warns), a
    plan too small for what the account stores is refused."""
    user = st.accounts.get(name)
    if plan not in st.cfg.accounts.plans:
        raise BadRequest(f"there is no plan {plan!r}; the plans are {', '.join(st.cfg.accounts.plans)}")
    size, used = st.cfg.accounts.plans[plan], st.accounts.usage(user.id)
    if size and used > size:
        raise PlanTooSmall(f"the plan {plan!r} holds {size} bytes but the account stores {used}: remove "
                           "files, old versions or trash first", size, used)
    return set_profile(st, user.name, plan=plan, by=by)[0]


def _request(user: User) -> dict | None:
    """The erasure its holder asked for and may still withdraw: {requested_us, due_us}."""
    return user.settings.get("erasure_request")


def cancel(st, name: str, now_us: int | None = None, actor: str = "admin") -> User:
    """Disable the account now and schedule its erasure after the grace period
    (or at the date its holder asked for, when that comes first)."""
    user = st.accounts.get(name)
    _not_erasing(user)
    if user.status == "cancelled":
        raise Conflict(f"account {user.name!r} is already cancelled; erasure is due at {iso(user.erase_after_us)}")
    due = (now_us or meta.now_us()) + st.cfg.accounts.cancel_grace_days * DAY
    asked = _request(user)
    if asked:
        due = min(due, asked["due_us"])
    return st.accounts.set_status(user.name, "cancelled", actor=actor, erase_after_us=due)


def reinstate(st, name: str, now_us: int | None = None, actor: str = "admin") -> User:
    """Undo a cancellation within its grace period; nothing was removed (an
    erasure its holder asked for stays scheduled)."""
    user = st.accounts.get(name)
    _not_erasing(user)
    if user.status != "cancelled":
        raise Conflict(f"account {user.name!r} is {user.status}, not cancelled: nothing to reinstate")
    if user.erase_after_us is not None and (now_us or meta.now_us()) >= user.erase_after_us:
        raise Conflict(f"the grace period of {user.name!r} ended at {iso(user.erase_after_us)}: it is due for "
                       "erasure and can no longer be reinstated")
    asked = _request(user)
    return st.accounts.set_status(user.name, "active", actor=actor,
                                  erase_after_us=asked["due_us"] if asked else None)


def request_erasure(st, name: str, now_us: int | None = None, actor: str = "user") -> User:
    """The holder asks for erasure: the periodic job erases the account after
    the grace period (`run_maintenance`), and until then the account works
    as before (to take an export, say) and the request can be withdrawn."""
    user = st.accounts.get(name)
    _not_erasing(user)
    if _request(user):
        raise Conflict(f"erasure of {user.name!r} is already asked for; it is due at {iso(user.erase_after_us)}")
    now = now_us or meta.now_us()
    due = now + st.cfg.accounts.cancel_grace_days * DAY
    if user.erase_after_us:
        due = min(due, user.erase_after_us)
    settings = dict(user.settings, erasure_request={"requested_us": now, "due_us": due})
    user = st.accounts.update(user.name, actor=actor, settings=settings, erase_after_us=due)
    st.audit("erasure_requested", user_id=user.id, actor=actor, due=iso(due))
    return user


def withdraw_erasure(st, name: str, now_us: int | None = None, actor: str = "user") -> User:
    """Take back an erasure request within its grace period (a cancelled
    account stays cancelled and due for erasure: reinstating it stops that)."""
    user = st.accounts.get(name)
    _not_erasing(user)
    asked = _request(user)
    if not asked:
        raise Conflict(f"no erasure of {user.name!r} was asked for: nothing to withdraw")
    if (now_us or meta.now_us()) >= asked["due_us"]:
        raise Conflict(f"the erasure of {user.name!r} was due at {iso(asked['due_us'])} and can no longer be "
                       "withdrawn")
    settings = {k: v for k, v in user.settings.items() if k != "erasure_request"}
    due = user.erase_after_us if user.status == "cancelled" else None
    user = st.accounts.update(user.name, actor=actor, settings=settings, erase_after_us=due)
    st.audit("erasure_withdrawn", user_id=user.id, actor=actor)
    return user


# -- exclusion patterns ------------------------------------------------------------------------

def exclusions(st, name: str) -> list[str]:
    user = st.accounts.get(name)
    return list(user.settings.get("exclude", st.cfg.retention.exclude))


def change_exclusions(st, name: str, add: str | None = None, remove: str | None = None) -> list[str]:
    """Add or remove one name pattern (shell style: *, ?, [..]) of files that
    keep no history. Sessions read the patterns in each write transaction,
    so it applies at once, in every process: a file written, copied or
    renamed from then on is marked by the patterns as they are (a file that
    came to match keeps no old versions, one that no longer does keeps
    history again)."""
    user = st.accounts.get(name)
    _not_erasing(user)
    pats = list(user.settings.get("exclude", st.cfg.retention.exclude))
    if add is not None:
        if not add or "/" in add or len(add) > 200 or "\x00" in add:
            raise BadRequest("a pattern matches file names (not paths): no '/', at most 200 characters")
        if add in pats:
            raise AlreadyExists(f"pattern {add!r} is already in the list")
        pats.append(add)
    if remove is not None:
        if remove not in pats:
            raise NotFound(f"pattern {remove!r} is not in the list of {user.name}'s patterns (list them to see which are)")
        pats.remove(remove)
    settings = dict(user.settings)
    settings["exclude"] = pats
    st.accounts.update(user.name, settings=settings)
    return pats


def exclude_dropping_history(st, fs, pattern: str) -> tuple[list[str], dict]:
    """Add a pattern (unless it is there: run again after an interruption,
    this finishes the job) and purge the old versions its files already
    kept (providers/purging.py); `fs` is the account's open filesystem."""
    try:
        pats = change_exclusions(st, fs.user.name, add=pattern)
    except AlreadyExists:
        pats = exclusions(st, fs.user.name)
    return pats, purging.drop_excluded_history(fs, pattern)


# -- erasure ----------------------------------------------------------------------------------

def erase(st, name: str, progress=None, reason: str = "request") -> dict:
    """Erase an account for good (see the module docstring); returns the
    receipt. Run again after an interruption, it finishes the job."""
    with st.db.read() as c:
        row = _row(c, name)
    return _erase(st, row["id"], row["name"], progress, reason)


def _bump(c, user_id: int, counts: dict) -> dict:
    row = uq.user_by_id(c, user_id)
    state = dict((row["settings"] or {}).get("erasure") or {})
    total = dict(state.get("counts") or {})
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v
    state["counts"] = total
    state["touched_us"] = meta.now_us()
    uq.update_user(c, user_id, settings={"erasure": state})
    return state


def _erase_domain(st, user_id: int, did: int, progress, removed: int) -> int:
    """Remove one domain's tree, chunks and blobs, then the domain itself.
    A session that was already open may still publish into it meanwhile:
    the tree is removed again with the domain, whose row goes only once no
    chunk is left (a later write then fails on the missing domain)."""
    while True:
        with st.db.write() as c:
            counts = lq.domain_tree_counts(c, did)
            lq.delete_domain_tree(c, did)
            _bump(c, user_id, counts)
        while True:
            with st.db.read() as c:
                batch = lq.chunk_batch(c, did, CHUNK_BATCH)
                shared = lq.blobs_used_elsewhere(c, [b.blob_name for b in batch], [b.id for b in batch])
            if not batch:
                break
            doomed = sorted({b.blob_name for b in batch} - shared)
            for blob in doomed:        # blobs first: a rerun finds the rows and deletes again (idempotent)
                st.blobs.delete(blob)
            with st.db.write() as c:
                lq.delete_chunks(c, [b.id for b in batch])
                _bump(c, user_id, {"chunks": len(batch), "blobs": len(doomed),
                                   "bytes": sum(b.stored_size for b in batch)})
            removed += len(batch)
            if progress:
                progress(removed)
        with st.db.write() as c:
            if lq.chunk_batch(c, did, 1):
                continue                        # written to meanwhile: once more
            lq.delete_domain_tree(c, did)
            lq.delete_domain(c, did)
            _bump(c, user_id, {"domains": 1})
            return removed


def _erase(st, user_id: int, name: str, progress, reason: str) -> dict | None:
    dead_hash = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(4))    # matches no password
    throttle_key = st.throttle.account_key(name)
    with st.db.write() as c:
        row = uq.user_by_id(c, user_id)
        if row is None:
            return None
        resumed = row["status"] == "erasing"
        state = dict((row["settings"] or {}).get("erasure") or {}) if resumed else {}
        state.setdefault("started_us", meta.now_us())
        state.setdefault("reason", reason)
        state.setdefault("mode", row["mode"])
        state["runs"] = state.get("runs", 0) + 1
        uq.update_user(c, user_id, status="erasing", credential_gen=row["credential_gen"] + 1,
                       settings={"erasure": state}, first_name="", last_name="", email="",
                       consent_news=False, consent_how=None, erase_after_us=None)
        _bump(c, user_id, lq.shred_keys(c, user_id, throttle_key, dead_hash))
        access.forget_free_text(c, user_id)
        if not resumed:
            uq.audit(c, "erasure_started", user_id=user_id, actor="admin" if reason == "request" else "system")
        domains = lq.owned_domains(c, user_id)
    log.info("erasing account #%d: keys destroyed, removing data of %d domain(s)", user_id, len(domains))
    removed = 0
    for did in domains:
        removed = _erase_domain(st, user_id, did, progress, removed)
    with st.db.write() as c:
        row = uq.user_by_id(c, user_id)
        if row is None or row["status"] != "erasing":
            return None                      # another run finished it meanwhile
        access.forget_free_text(c, user_id)          # again: a disclosure recorded while it ran
        state = _bump(c, user_id, lq.anonymise_records(c, user_id))
        lq.delete_user(c, user_id)
        finished = meta.now_us()
        counts = state["counts"]
        body = {"reason": state["reason"], "mode": state["mode"],
                "started": iso(state["started_us"]), "finished": iso(finished),
                "seconds": round((finished - state["started_us"]) / 1e6, 3), "runs": state["runs"],
                "keys_destroyed_first": True}
        for k in ("domains", "files", "folders", "versions", "chunks", "blobs", "bytes", "dead_properties",
                  "key_memberships", "ssh_keys", "locks", "session_records_anonymised",
                  "audit_events_anonymised"):
            body[k] = counts.get(k, 0)
        rid = uq.add_receipt(c, "erasure", body)
        uq.audit(c, "account_erased", actor="admin" if reason == "request" else "system",
                 detail={"receipt": rid})
    body["database_log_cleared"] = lq.checkpoint(st.db)
    log.info("account erased, receipt #%d", rid)
    return {"id": rid, **body}


def reset_password(st, name: str, new_password: str, progress=None) -> dict:
    """Reset a forgotten password of a `private` account with neither the old
    password nor the recovery code: its files cannot be decrypted by anyone,
    so they are deleted for good and the account starts again with an empty
    home and new keys (the profile, plan and settings stay). Returns the new
    recovery code and what was removed."""
    check_password(new_password)
    with st.db.write() as c:
        row = _row(c, name)
        if row["mode"] != "private":
            raise Conflict(f"account {row['name']!r} is managed: `user passwd` changes its password and keeps "
                           "its files")
        settings = dict(row["settings"] or {})
        settings.pop("erasure", None)
        uq.update_user(c, row["id"], credential_gen=row["credential_gen"] + 1)   # logins stop now
        lq.drop_memberships(c, row["id"])
        doms = lq.owned_domains(c, row["id"])
    removed = 0
    for did in doms:
        removed = _erase_domain(st, row["id"], did, progress, removed)
    with st.db.write() as c:
        counts = dict(((uq.user_by_id(c, row["id"])["settings"] or {}).get("erasure") or {}).get("counts") or {})
        uq.update_user(c, row["id"], settings=settings)
        uq.audit(c, "password_reset_files_discarded", user_id=row["id"], actor="admin",
                 detail={k: counts.get(k, 0) for k in ("files", "versions", "chunks", "bytes")})
    recovery = st.accounts.replace_keys(row["name"], new_password)
    return {"name": row["name"], "recovery_code": recovery,
            **{k: counts.get(k, 0) for k in ("files", "folders", "versions", "chunks", "bytes")}}


def receipts(st, receipt_id: int | None = None, kind: str | None = None) -> list[dict]:
    with st.db.read() as c:
        rows = lq.receipts_list(c, kind, receipt_id)
    if receipt_id is not None and not rows:
        raise NotFound(f"no receipt #{receipt_id}")
    return [{"id": r["id"], "at": iso(r["at_us"]), "kind": r["kind"], **dict(r["body"])} for r in rows]


# -- session records and audit ---------------------------------------------------------------------

def sessions(st, name: str | None = None, since_us: int | None = None, until_us: int | None = None) -> list[dict]:
    user_id = st.accounts.get(name).id if name else None
    return [{"id": s["id"], "user": s["user_name"], "protocol": s["protocol"], "address": s["client_addr"],
             "started": iso(s["started_us"]), "ended": iso(s["ended_us"]), "cut_short": bool(s["cut_short"]),
             "bytes_in": s["bytes_in"], "bytes_out": s["bytes_out"], "requests": s["requests"],
             "node": s["node"]}
            for s in st.sessions.list(user_id, since_us, until_us)]


def audit_events(st, name: str | None = None, since_us: int | None = None, event: str | None = None) -> list[dict]:
    user_id = st.accounts.get(name).id if name else None
    with st.db.read() as c:
        rows = uq.audit_events_list(c, user_id, since_us, event)
    return [{"id": e["id"], "at": iso(e["at_us"]), "event": e["event"], "user": e["user_name"],
             "actor": e["actor"], "address": e["client_addr"], "detail": e["detail"]} for e in rows]


# -- notices -----------------------------------------------------------------------------------------

def _send(st, rows, subject: str, body: str, event: str, personal=None) -> dict:
    """Mail each account; `personal(row)` gives what one message adds:
    (text after the body, headers)."""
    mailer = Mailer(st.cfg)
    notified, failed, todo = [], [], []
    for r in rows:
        if not r["email"]:
            failed.append({"name": r["name"], "reason": "no email address on file"})
        else:
            todo.append(r)
    messages = []
    for r in todo:
        tail, headers = personal(r) if personal else ("", {})
        messages.append((r["email"], subject, body + tail, headers))
    results = mailer.send_each(messages)
    for r, err in zip(todo, results):
        if err is None:
            notified.append(r["name"])
            st.audit(event, user_id=r["id"], actor="admin")
        else:
            failed.append({"name": r["name"], "reason": err})
    return {"notified": notified, "failed": failed}


def notify_breach(st, subject: str, body: str, since_us: int | None = None, until_us: int | None = None,
                  names=(), everyone: bool = False) -> dict:
    """Email a security notice to the named accounts, to every account
    (`everyone`: active, disabled and cancelled alike), or to every account
    that may have been active in [since, until]: last seen at or after
    `since` and created at or before `until` (the last-seen time outlives
    the session records), or with a session record in the window. Security
    notices need no consent. The result names who was notified and who
    could not be, and why."""
    if sum((bool(names), everyone, since_us is not None)) != 1:
        raise BadRequest("give one of --since (with --until if the window has ended), --all, or --user NAME")
    if names:
        with st.db.read() as c:
            rows = [_row(c, n) for n in names]
    elif everyone:
        with st.db.read() as c:
            rows = lq.every_account(c)
    else:
        until_us = until_us or meta.now_us()
        if until_us < since_us:
            raise BadRequest("--until is before --since")
        with st.db.read() as c:
            rows = lq.active_in_window(c, since_us, until_us)
    return _send(st, rows, subject, body, "breach_notified")


def notify_news(st, subject: str, body: str) -> dict:
    """Email news to the active accounts that opted in, and to no one else;
    each message says when and how its reader agreed, and carries an
    unsubscribe link (see providers/consent.py)."""
    Mailer(st.cfg)                       # a mail server, and an address for the link (no link, no news):
    consent.public_base(st.cfg)          # each refused before anything is sent
    with st.db.read() as c:
        rows = lq.news_recipients(c)
    return _send(st, rows, subject, body.rstrip("\n"), "news_sent",
                 lambda r: (consent.footer(st, r), consent.headers(st, r)))


# -- the periodic job -----------------------------------------------------------------------------------

def _bind_managed(st, errors: list) -> int:
    """Bind the sealed values of `managed` accounts from before binding
    (providers/reseal.py) without waiting for their next login: the master
    key opens them. Private accounts are bound at their owner's login."""
    done = 0
    for user in st.accounts.list():
        if user.mode != "managed" or user.status == "erasing" or user.sealing >= crypto.SEALING_BOUND:
            continue
        try:
            st.open_account(user.name, how="admin", purpose="seal").close()
            done += 1
        except CofferError as e:
            log.warning("binding the sealed values of account #%d failed: %s", user.id, e)
            errors.append(f"binding the sealed values of {user.name}: {e}")
    return done


def run_maintenance(st, now_us: int | None = None, retention: bool = True, progress=None) -> dict:
    """Erase cancelled accounts whose grace period is over, and those whose
    holder asked for erasure once its date came, and resume
    interrupted erasures; apply version and trash retention; drop session
    records, audit events and locks older than the config allows, and login
    guard records that no longer matter."""
    now = now_us or meta.now_us()
    report = {"accounts_erased": 0, "receipts": [], "retention_accounts": 0, "versions_expired": 0,
              "trash_expired": 0, "session_records_ended": 0, "session_records_purged": 0,
              "audit_events_purged": 0, "locks_purged": 0, "errors": []}
    with st.db.read() as c:
        stalled = [r for r in lq.users_with_status(c, "erasing")
                   if now - ((r["settings"] or {}).get("erasure") or {}).get("touched_us", 0) > STALE_ERASURE_US]
        due = lq.cancelled_due(c, now)
    for r, why in [(r, "request") for r in stalled] + [(r, "cancellation" if r["status"] == "cancelled"
                                                          else "holder's request") for r in due]:
        try:
            receipt = _erase(st, r["id"], r["name"], None, why)
        except Exception as e:           # one account's failure must not stop the others
            log.exception("erasing account #%d failed", r["id"])
            report["errors"].append(f"erasing account #{r['id']}: {e}")
            continue
        if receipt:
            report["accounts_erased"] += 1
            report["receipts"].append(receipt["id"])
    if retention:
        for user in st.accounts.list():
            if user.status == "erasing":
                continue
            try:
                counts = expire_account(st, user, now)       # metadata only: private accounts too
            except CofferError as e:
                log.warning("retention for account #%d failed: %s", user.id, e)
                report["errors"].append(f"retention for {user.name}: {e}")
                continue
            report["retention_accounts"] += 1
            report["versions_expired"] += counts.get("versions", 0)
            report["trash_expired"] += counts.get("trash", 0)
            if progress:
                progress(report["retention_accounts"])
    report["accounts_bound"] = _bind_managed(st, report["errors"])
    with st.db.write() as c:
        report["session_records_ended"] = lq.end_abandoned_sessions(c, now - ABANDONED_SESSION_US)
        report["session_records_purged"] = lq.purge_sessions_before(
            c, now - st.cfg.accounts.session_record_days * DAY)
        report["audit_events_purged"] = lq.purge_audit_before(c, now - st.cfg.accounts.audit_days * DAY)
        report["locks_purged"] = lockq.purge_expired(c, now)
    report["login_records_purged"] = st.throttle.prune()
    return report
