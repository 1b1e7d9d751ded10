"""App passwords: a way into one account for one device or backup job.

Each is a random secret shown once (`app-` and 125 bits in base32
groups), named by its owner, and limited to a scope:

  full       everything the account's own password allows
  read-only  reading only: listing, downloading, checksums, history
  backup     adding and overwriting files, and deleting them to the trash
             (where they stay restorable); never purging anything under
             /.coffer, sharing, or changing what history is kept — a backup
             client on a compromised machine cannot destroy the past

It wraps the account's user key under its own key (Argon2id of the secret,
bound to its row), so it keeps working when the main password changes and
a `private` account's backups run without that password anywhere. It is
found by a keyed hash of the secret (no hash to guess offline without the
server's master key). Revoking one ends its live sessions at their next
request (the account's credential generation moves on); erasing the
account destroys them with its other keys.
"""
from __future__ import annotations

import hmac
import hashlib
import os
import re
from dataclasses import dataclass

from . import crypto, meta
from .errors import AlreadyExists, CofferError, NotFound, PermissionDenied
from .meta import apps as q
from .meta import users as uq

PREFIX = "app-"
SCOPES = ("full", "read-only", "backup")
MAX_PER_ACCOUNT = 50
LABEL_RE = re.compile(r"^[\w .@()+-]{1,64}$")
USED_EVERY_US = 60 * 1_000_000          # last use is recorded at most once a minute


class BadAppPassword(CofferError):
    """An app-password request that cannot be carried out as asked."""


@dataclass(frozen=True)
class AppPassword:
    id: int
    label: str
    scope: str
    created_us: int
    last_used_us: int | None

    @classmethod
    def from_row(cls, row) -> "AppPassword":
        return cls(row["id"], row["label"], row["scope"], row["created_us"], row["last_used_us"])


def generate() -> str:
    from .accounts import generate_password
    return PREFIX + generate_password()


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise BadAppPassword(f"unknown scope {scope!r}: an app password is {', '.join(SCOPES)}")
    return scope


class AppPasswords:
    def __init__(self, db, pepper: bytes, kdf: crypto.KdfParams):
        self.db = db
        self.kdf = kdf
        self._pepper = pepper            # from the master key: lookups cannot be tested without it

    def lookup(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def create(self, user_id: int, user_key: bytes, label: str, scope: str,
               actor: str = "user") -> tuple[AppPassword, str]:
        """A new app password for an account whose user key is open; returns
        it with its secret (shown once, never stored)."""
        label = (label or "").strip()
        if not LABEL_RE.match(label):
            raise BadAppPassword("name the app password after its device or job: 1 to 64 letters, digits, "
                                 "spaces and . @ ( ) + - _")
        check_scope(scope)
        secret = generate()
        salt = os.urandom(16)
        kek = crypto.password_kek(secret, salt, self.kdf)
        with self.db.write() as c:
            if q.by_label(c, user_id, label) is not None:
                raise AlreadyExists(f"an app password named {label!r} exists; revoke it first or pick another name")
            if q.count(c, user_id) >= MAX_PER_ACCOUNT:
                raise BadAppPassword(f"an account may have {MAX_PER_ACCOUNT} app passwords; revoke unused ones")
            app_id = q.add(c, user_id=user_id, label=label, scope=scope, lookup=self.lookup(secret),
                              kdf_salt=salt, kdf_params=self.kdf.as_dict(), wrapped_user_key=b"",
                              created_us=meta.now_us())
            q.change(c, app_id, wrapped_user_key=crypto.wrap_bound(kek, user_key, _aad(user_id, app_id)))
            uq.audit(c, "app_password_created", user_id=user_id, actor=actor,
                     detail={"app_password": app_id, "scope": scope})
            return AppPassword.from_row(q.by_id(c, app_id)), secret

    def list(self, user_id: int) -> list[AppPassword]:
        with self.db.read() as c:
            return [AppPassword.from_row(r) for r in q.of_user(c, user_id)]

    def revoke(self, user_id: int, ref: str, actor: str = "user") -> AppPassword:
        """Revoke by name or number; its live sessions end at their next request."""
        with self.db.write() as c:
            row = q.by_label(c, user_id, ref)
            if row is None and ref.isdigit():
                row = q.by_id(c, int(ref))
                row = row if row is not None and row["user_id"] == user_id else None
            if row is None:
                raise NotFound(f"no app password {ref!r}; `app-password list` shows them")
            q.remove(c, row["id"])
            user = uq.user_by_id(c, user_id)
            uq.update_user(c, user_id, credential_gen=user["credential_gen"] + 1)
            uq.audit(c, "app_password_revoked", user_id=user_id, actor=actor, detail={"app_password": row["id"]})
            return AppPassword.from_row(row)

    def find(self, user_row, secret: str):
        """The app password row of this account whose secret this is, or None."""
        if user_row is None or not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        with self.db.read() as c:
            row = q.by_lookup(c, self.lookup(secret))
        if row is None or row["user_id"] != user_row["id"]:
            return None
        return row

    def open(self, row, secret: str) -> bytes:
        """The user key an app password's secret unwraps (and its use noted)."""
        kek = crypto.password_kek(secret, bytes(row["kdf_salt"]), crypto.KdfParams.from_dict(row["kdf_params"]))
        key = crypto.unwrap_bound(kek, row["wrapped_user_key"], _aad(row["user_id"], row["id"]), None,
                                  "app password's key")
        now = meta.now_us()
        if row["last_used_us"] is None or now - row["last_used_us"] > USED_EVERY_US:
            with self.db.write() as c:
                q.change(c, row["id"], last_used_us=now)
        return key


def _aad(user_id: int, app_id: int) -> bytes:
    return crypto.bind("app-password", user_id, app_id)


def require_full(scope: str | None, what: str) -> None:
    """Refuse `what` to a session opened with a limited app password."""
    if scope not in (None, "full"):
        raise PermissionDenied(f"{what}: this session's app password is {scope}; use the account's own "
                               "password or a full app password")
