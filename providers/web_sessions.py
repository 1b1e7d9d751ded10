"""Signed-in browsers of the web pages (server/web.py), kept in the database
so that every worker process and node sees the same sessions.

The browser holds a random cookie value; the database holds only its
SHA-256 (a copy of the database signs no one in). A session ends when it
is signed out, after IDLE_SECONDS without a request, at most MAX_SECONDS
after sign-in, and as soon as the account's password changes or the
account is disabled (its credential generation moves on). No key is kept
here: the account's opened filesystem lives in the memory of the worker
that signed it in (see server/web.py).

A sign-in of an account with TOTP on waits for its code between two
requests, which may reach different workers: `wait_for_code` keeps the user
key its password opened, wrapped under a key derived from a second random
cookie value (which the database does not hold), for SIGNIN_SECONDS; the
code's request opens the account with that value (Storage.open_account,
`how="signin"`), and the row is deleted once the code checks out.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from . import crypto, meta
from .meta import websessions as wq

IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 3600
TOUCH_EVERY_US = 60 * 1_000_000          # the last-use time is written at most this often
SIGNIN_SECONDS = 5 * 60                  # a right password waits this long for its code


def lookup_of(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def csrf_of(token: str) -> str:
    """The session's form token: derived from the cookie's value, which the
    page's HTML never shows, so a copy of a page does not give the cookie."""
    return hmac.new(token.encode("ascii", "replace"), b"coffer-web-form", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebSession:
    id: int
    lookup: str
    user_id: int
    name: str
    mode: str
    expires_us: int


class WebSessions:
    def __init__(self, db):
        self.db = db

    def create(self, user_id: int, credential_gen: int) -> str:
        """A new session's cookie value (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = meta.now_us()
        with self.db.write() as c:
            wq.add(c, lookup=lookup_of(token), user_id=user_id, credential_gen=credential_gen,
                   created_us=now, used_us=now, expires_us=now + MAX_SECONDS * 1_000_000)
        return token

    def find(self, token: str | None) -> WebSession | None:
        """The live session of a cookie value, or None (unknown, signed out,
        idle too long, too old). Its last-use time moves on."""
        if not token or len(token) > 128:
            return None
        now = meta.now_us()
        with self.db.read() as c:
            row = wq.by_lookup(c, lookup_of(token))
        if (row is None or row["expires_us"] <= now or row["used_us"] + IDLE_SECONDS * 1_000_000 <= now
                or row["status"] != "active" or row["current_gen"] != row["credential_gen"]):
            return None
        if now - row["used_us"] >= TOUCH_EVERY_US:
            with self.db.write() as c:
                wq.touch(c, row["id"], now)
        return WebSession(row["id"], row["lookup"], row["user_id"], row["name"], row["mode"], row["expires_us"])

    def end(self, token: str | None) -> bool:
        """Sign out: delete the session. False when there was none."""
        if not token:
            return False
        with self.db.write() as c:
            return wq.remove(c, lookup_of(token)) > 0

    def of_user(self, user_id: int) -> list[dict]:
        """The account's live sessions (id, lookup, created_us, used_us, expires_us), newest first."""
        now = meta.now_us()
        with self.db.read() as c:
            return [dict(r) for r in wq.of_user(c, user_id, now, now - IDLE_SECONDS * 1_000_000)]

    def end_of_user(self, user_id: int, session_id: int) -> bool:
        """End one of the account's sessions by its id (another account's
        id ends nothing). Every worker refuses its cookie from the next
        request on, and closes its filesystem within a minute."""
        with self.db.write() as c:
            return wq.remove_of_user(c, user_id, session_id) > 0

    def live(self, lookups) -> set[str]:
        """Which of these sessions (by the hashes of their cookies) still
        live: a worker closes the filesystems of the others, so keys opened
        for a session signed out elsewhere leave its memory within a minute."""
        if not lookups:
            return set()
        now = meta.now_us()
        with self.db.read() as c:
            return wq.live_of(c, lookups, now, now - IDLE_SECONDS * 1_000_000)

    def purge_expired(self) -> int:
        now = meta.now_us()
        with self.db.write() as c:
            wq.purge_signins(c, now)
            return wq.purge_expired(c, now, now - IDLE_SECONDS * 1_000_000)

    # -- sign-ins waiting for their second factor ---------------------------------------------
    def wait_for_code(self, user_id: int, credential_gen: int, user_key: bytes) -> str:
        """Keep a sign-in whose password checked out until its code comes:
        returns the cookie value that names it and unwraps its user key."""
        token = secrets.token_urlsafe(32)
        lookup = lookup_of(token)
        wrapped = crypto.wrap_bound(_signin_kek(token), user_key, _signin_aad(lookup, user_id))
        with self.db.write() as c:
            wq.add_signin(c, lookup=lookup, user_id=user_id, credential_gen=credential_gen, wrapped_key=wrapped,
                          expires_us=meta.now_us() + SIGNIN_SECONDS * 1_000_000)
        return token

    def waiting(self, token: str | None):
        """(the account's row as `wq.signin_by_lookup` gives it, its user key)
        for a live waiting sign-in, or None (unknown, too old, the account
        disabled or its password changed meanwhile)."""
        if not token or len(token) > 128:
            return None
        lookup = lookup_of(token)
        with self.db.read() as c:
            row = wq.signin_by_lookup(c, lookup)
        if (row is None or row["expires_us"] <= meta.now_us() or row["status"] != "active"
                or row["current_gen"] != row["credential_gen"]):
            return None
        key = crypto.unwrap_bound(_signin_kek(token), row["wrapped_key"], _signin_aad(lookup, row["user_id"]), None,
                                  "waiting sign-in's key")
        return row, key

    def code_given(self, token: str) -> None:
        """The sign-in is done: its wrapped key goes."""
        with self.db.write() as c:
            wq.remove_signin(c, lookup_of(token))


def _signin_kek(token: str) -> bytes:
    return crypto.subkey(token.encode("ascii", "replace"), "web-signin")


def _signin_aad(lookup: str, user_id: int) -> bytes:
    return crypto.bind("web-signin", lookup, user_id)
