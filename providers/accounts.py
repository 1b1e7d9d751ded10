"""Accounts: creation, passwords, key unlocking.

A password is checked twice over, for two different jobs: bcrypt verifies it
(constant-time, tunable cost), and Argon2id turns it into the key that
unwraps a `private` account's user key. A `managed` account's user key is
wrapped by the server master key instead, kept in a file outside the database.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from . import crypto, meta, turn
from .errors import AlreadyExists, AuthenticationFailed, CofferError, Conflict, Locked, NotFound
from .keyfile import write_private
from .meta import tree
from .meta import users as q

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MAX_PASSWORD = 1024


class BadRequest(CofferError):
    """A value given to an account command is not acceptable."""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    mode: str
    status: str
    plan: str
    quota_bytes: int | None
    first_name: str
    last_name: str
    email: str
    created_us: int
    last_login_us: int | None
    consent_news: bool
    consent_changed_us: int | None
    erase_after_us: int | None
    settings: dict
    sealing: int = crypto.SEALING_BOUND   # below: some of its values are not bound to their rows yet
    consent_how: str | None = None      # how consent was last given or withdrawn (providers/consent.py)

    @classmethod
    def from_row(cls, row) -> "User":
        return cls(row["id"], row["name"], row["mode"], row["status"], row["plan"], row["quota_bytes"],
                   row["first_name"], row["last_name"], row["email"], row["created_us"],
                   row["last_login_us"], bool(row["consent_news"]), row["consent_changed_us"],
                   row["erase_after_us"], dict(row["settings"] or {}), row["sealing"], row["consent_how"])


def normalize_name(name: str) -> str:
    name = (name or "").strip().lower()
    if "\\" in name:                 # Windows sends DOMAIN\user
        name = name.rsplit("\\", 1)[1]
    return name


def check_name(name: str) -> str:
    name = normalize_name(name)
    if not NAME_RE.match(name):
        raise BadRequest("account names are 1-64 characters: lowercase letters, digits and . _ @ -, "
                         "starting with a letter or digit")
    return name


PASSWORD_GROUPS = 5                      # of 5 base32 characters
PASSWORD_BITS = PASSWORD_GROUPS * 5 * 5  # 125


def generate_password() -> str:
    """A password safe to paste anywhere: lowercase base32 in dash-separated
    groups (`k3vq7-...`), PASSWORD_BITS bits; never a leading `-` (which rclone and other
    tools read as an option) and nothing a shell would interpret."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(PASSWORD_GROUPS))


def check_password(password: str) -> None:
    if not password or len(password) < 8:
        raise BadRequest("the password must have at least 8 characters")
    if len(password) > MAX_PASSWORD or "\x00" in password:
        raise BadRequest("the password is too long or holds a NUL character")


def bcrypt_input(password: str) -> bytes:
    # bcrypt reads at most 72 bytes; pre-hash so every character counts.
    return hashlib.sha256(password.encode("utf-8")).hexdigest().encode()


class MasterKey:
    """The server master key for `managed` accounts: 32 random bytes in a file
    readable only by the server's user, created on first use."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            if not self.path.exists():
                try:
                    write_private(self.path, (crypto.random_key().hex() + "\n").encode(), exclusive=True)
                except FileExistsError:
                    pass                # another process made it first: that one is the key
            try:
                self._key = bytes.fromhex(self.path.read_text().strip())
            except ValueError:
                raise CofferError(f"master key file {self.path} is damaged (expected 64 hex digits)") from None
            if len(self._key) != crypto.KEY_BYTES:
                raise CofferError(f"master key file {self.path} is damaged (expected 64 hex digits)")
        return self._key

    def subkey(self, purpose: str) -> bytes:
        return crypto.subkey(self.key, purpose)


_decoys: dict[int, bytes] = {}          # bcrypt cost -> a hash of a password nobody knows


def decoy_hash(rounds: int) -> bytes:
    """What a login to an unknown name is checked against (see
    `Accounts.verify`), made once per process at this cost. `coffer serve`
    makes it before serving (and before forking its workers): made on the
    first unknown name instead, that one answer took two hashes, and told
    the name does not exist."""
    if rounds not in _decoys:
        _decoys[rounds] = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds))
    return _decoys[rounds]


class Accounts:
    def __init__(self, db: meta.Database, cfg, master: MasterKey):
        self.db, self.cfg, self.master = db, cfg, master
        self.kdf = crypto.KdfParams(cfg.security.argon2_memory_kib, cfg.security.argon2_iterations,
                                    cfg.security.argon2_lanes)

    # -- lookups ------------------------------------------------------------------
    def get(self, name: str) -> User:
        with self.db.read() as c:
            row = q.user_by_name(c, normalize_name(name))
        if row is None:
            raise NotFound(f"no account named {normalize_name(name)!r}; see `coffer-admin user list`")
        return User.from_row(row)

    def list(self) -> list[User]:
        with self.db.read() as c:
            return [User.from_row(r) for r in q.all_users(c)]

    def quota_limit(self, user: User) -> int | None:
        """Bytes the account may store, or None for no limit."""
        if user.quota_bytes is not None:
            return user.quota_bytes or None
        return self.cfg.accounts.plans.get(user.plan, 0) or None

    def usage(self, user_id: int) -> int:
        with self.db.read() as c:
            return q.owner_usage(c, user_id)

    def usage_parts(self, user_id: int) -> dict[str, int]:
        """What old versions and the trash take of `usage` (see meta.users.usage_parts)."""
        with self.db.read() as c:
            return tree.usage_parts(c, user_id)

    # -- creation ---------------------------------------------------------------------
    def create(self, name: str, password: str, mode: str | None = None, plan: str | None = None,
               quota: int | None = None, first_name: str = "", last_name: str = "",
               email: str = "", consent: bool = False) -> tuple[User, str | None]:
        """Create an account with an empty home. `consent` is the answer to
        news by email given at sign-up, recorded with its time either way.
        Returns the user and, for a `private` account, a one-time recovery
        code (shown once, never stored)."""
        name = check_name(name)
        check_password(password)
        mode = mode or self.cfg.security.default_mode
        if mode not in ("private", "managed"):
            raise BadRequest("mode must be 'private' or 'managed'")
        plan = plan or self.cfg.accounts.default_plan
        if plan not in self.cfg.accounts.plans:
            raise BadRequest(f"unknown plan {plan!r}; plans: {', '.join(self.cfg.accounts.plans)}")
        if quota is not None and quota < 0:
            raise BadRequest("quota must be zero (no limit) or a positive number of bytes")
        values, recovery, finish = self._new_keys(password, mode)
        with self.db.write() as c:
            if q.user_by_name(c, name) is not None:
                raise AlreadyExists(f"an account named {name!r} already exists")
            now = meta.now_us()
            uid = q.insert_user(
                c, name=name, first_name=first_name, last_name=last_name, email=email, status="active",
                plan=plan, quota_bytes=quota, mode=mode, created_us=now, consent_news=bool(consent),
                consent_changed_us=now, consent_how="signup", settings={}, credential_gen=0,
                wrapped_user_key=b"", wrapped_private_key=b"", **values)
            finish(c, uid)
            q.audit(c, "account_created", user_id=uid, actor="admin",
                    detail={"mode": mode, "plan": plan, "news_consent": bool(consent)})
            row = q.user_by_id(c, uid)
        return User.from_row(row), recovery

    def _new_keys(self, password: str, mode: str):
        """Fresh keys for an account: the user row's key columns that need
        no row id, a recovery code (private accounts), and a function that,
        given the row's id, stores the wrapped keys (bound to that id) and
        makes the empty home."""
        user_key = crypto.random_key()
        salt = os.urandom(16)
        recovery = None
        if mode == "private":
            kek = crypto.password_kek(password, salt, self.kdf)
            recovery = "-".join(secrets.token_hex(3).upper() for _ in range(6))
            recovery_kek = crypto.password_kek(recovery.replace("-", ""), salt, self.kdf)
        else:
            kek, recovery_kek = self.master.key, None
        priv, pub = crypto.new_keypair()
        domain_key = crypto.random_key()
        keys = crypto.DomainKeys.derive(domain_key)
        values = dict(password_hash=bcrypt.hashpw(bcrypt_input(password),
                                                  bcrypt.gensalt(self.cfg.security.bcrypt_rounds)),
                      kdf_salt=salt, kdf_params=self.kdf.as_dict(), public_key=pub, sealing=crypto.SEALING_BOUND)

        def finish(c, uid: int) -> None:
            q.update_user(c, uid, wrapped_user_key=crypto.wrap_bound(kek, user_key, crypto.user_key_aad(uid)),
                          recovery_wrapped_key=None if recovery_kek is None else crypto.wrap_bound(
                              recovery_kek, user_key, crypto.recovery_aad(uid)),
                          wrapped_private_key=crypto.wrap_bound(user_key, priv, crypto.private_key_aad(uid)))
            did = q.insert_domain(c, uid, "home")
            q.set_domain_root(c, did, q.make_root(c, did, crypto.encrypt_name(keys, "", "root")))
            q.add_member(c, did, uid, "owner",
                         wrapped_key=crypto.wrap_bound(user_key, domain_key, crypto.domain_key_aad(did, uid, 1)))
        return values, recovery, finish

    def replace_keys(self, name: str, new_password: str) -> str | None:
        """Give an account new keys and an empty home (its old files must be
        gone already: see lifecycle.reset_password). Returns the new recovery
        code of a private account."""
        check_password(new_password)
        with self.db.read() as c:
            row = self._row(c, name)
        values, recovery, finish = self._new_keys(new_password, row["mode"])
        with self.db.write() as c:
            q.update_user(c, row["id"], credential_gen=row["credential_gen"] + 1, **values)
            finish(c, row["id"])
            q.audit(c, "keys_replaced", user_id=row["id"], actor="admin")
        return recovery

    # -- passwords and keys -----------------------------------------------------------------
    def _row(self, c, name: str):
        row = q.user_by_name(c, normalize_name(name))
        if row is None:
            raise NotFound(f"no account named {normalize_name(name)!r}; see `coffer-admin user list`")
        if row["status"] == "erasing":
            raise Conflict(f"account {row['name']!r} is being erased; run `coffer-admin user erase {row['name']}` "
                           "to finish")
        return row

    def verify(self, row, password: str) -> bool:
        """Whether the password is the account's. Without an account (row
        None), or with one being erased, a hash of the configured cost is
        checked all the same, so the answer takes as long as for a wrong
        password and does not tell which names exist."""
        if not password or len(password) > MAX_PASSWORD:
            return False
        if row is None or row["status"] == "erasing":
            turn.leave()
            bcrypt.checkpw(bcrypt_input(password), decoy_hash(self.cfg.security.bcrypt_rounds))
            return False
        turn.leave()
        return bcrypt.checkpw(bcrypt_input(password), bytes(row["password_hash"]))

    def user_key(self, row, password: str | None = None) -> bytes:
        """Unwrap the account's user key: with the password (private), or the
        master key (managed)."""
        if row["mode"] == "managed":
            kek = self.master.key
        elif password is None:
            raise Locked(f"account {row['name']!r} is private: its files open only with the account "
                         "password; give it on stdin or log in with it")
        else:
            kek = crypto.password_kek(password, bytes(row["kdf_salt"]), crypto.KdfParams.from_dict(row["kdf_params"]))
        wrapped, aad = bytes(row["wrapped_user_key"]), crypto.user_key_aad(row["id"])
        try:
            key = crypto.unwrap_bound(kek, wrapped, aad, b"user" if row["sealing"] < crypto.SEALING_BOUND else None,
                                      "user key")
        except CofferError:
            if row["mode"] == "managed":
                raise
            raise AuthenticationFailed("wrong password") from None
        if not crypto.is_bound(wrapped):        # bound to its row now, while its key-encryption key is here
            with self.db.write() as c:
                q.update_user(c, row["id"], wrapped_user_key=crypto.wrap_bound(kek, key, aad))
        return key

    def set_password(self, name: str, new_password: str, old_password: str | None = None,
                     recovery_code: str | None = None, discard_data: bool = False,
                     actor: str = "admin") -> str | None:
        """Change the password, re-wrapping the user key (nothing re-encrypted).

        Private accounts need the old password or the recovery code; with
        neither, only `discard_data=True` goes on, and the files become
        unreadable for good (a new empty home replaces the old one)."""
        check_password(new_password)
        with self.db.read() as c:
            row = self._row(c, name)
        salt = os.urandom(16)
        values = {}
        new_recovery = None
        if row["mode"] == "private":
            if old_password is not None:
                if not self.verify(row, old_password):
                    raise AuthenticationFailed("the current password is wrong")
                user_key = self.user_key(row, old_password)
            elif recovery_code is not None:
                code = recovery_code.replace("-", "").replace(" ", "").upper()
                params = crypto.KdfParams.from_dict(row["kdf_params"])
                if row["recovery_wrapped_key"] is None:
                    raise AuthenticationFailed("this account has no recovery code")
                try:       # a recovery code made before binding is read as it is: its key-encryption key
                    # comes from the code and this row's salt, so moved elsewhere it opens nothing
                    user_key = crypto.unwrap_bound(crypto.password_kek(code, bytes(row["kdf_salt"]), params),
                                                   bytes(row["recovery_wrapped_key"]),
                                                   crypto.recovery_aad(row["id"]), b"recovery", "recovery key")
                except CofferError:
                    raise AuthenticationFailed("the recovery code is wrong") from None
            elif discard_data:
                raise Locked("resetting a private account's password without its old password or recovery "
                             "code is done by `coffer-admin user erase` and re-creating the account")
            else:
                raise Locked(f"account {row['name']!r} is private: give the current password or the "
                             "recovery code, or the files become unreadable")
            values["wrapped_user_key"] = crypto.wrap_bound(
                crypto.password_kek(new_password, salt, self.kdf), user_key, crypto.user_key_aad(row["id"]))
            new_recovery = "-".join(secrets.token_hex(3).upper() for _ in range(6))
            values["recovery_wrapped_key"] = crypto.wrap_bound(
                crypto.password_kek(new_recovery.replace("-", ""), salt, self.kdf), user_key,
                crypto.recovery_aad(row["id"]))
        values["kdf_salt"] = salt
        values["kdf_params"] = self.kdf.as_dict()
        values["password_hash"] = bcrypt.hashpw(bcrypt_input(new_password),
                                                bcrypt.gensalt(self.cfg.security.bcrypt_rounds))
        values["credential_gen"] = row["credential_gen"] + 1
        with self.db.write() as c:
            q.update_user(c, row["id"], **values)
            q.audit(c, "password_changed", user_id=row["id"], actor=actor)
        return new_recovery

    def set_status(self, name: str, status: str, actor: str = "admin", **extra) -> User:
        if status not in ("active", "disabled", "cancelled"):
            raise BadRequest("status is active, disabled or cancelled")
        with self.db.write() as c:
            row = self._row(c, name)
            q.update_user(c, row["id"], status=status, credential_gen=row["credential_gen"] + 1, **extra)
            q.audit(c, f"account_{status}", user_id=row["id"], actor=actor)
            return User.from_row(q.user_by_id(c, row["id"]))

    def update(self, name: str, actor: str = "admin", **values) -> User:
        """Change profile fields, plan, quota or settings (already validated)."""
        if "plan" in values and values["plan"] not in self.cfg.accounts.plans:
            raise BadRequest(f"unknown plan {values['plan']!r}; plans: {', '.join(self.cfg.accounts.plans)}")
        with self.db.write() as c:
            row = self._row(c, name)
            q.update_user(c, row["id"], **values)
            q.audit(c, "account_updated", user_id=row["id"], actor=actor, detail={"fields": sorted(values)})
            return User.from_row(q.user_by_id(c, row["id"]))

    def generation(self, name: str) -> int | None:
        """Changes whenever the password changes or the account is disabled:
        credential caches compare it. None: no such account, or not active."""
        row = q.generation(self.db, normalize_name(name))
        if row is None or row["status"] != "active":
            return None
        return row["credential_gen"]
