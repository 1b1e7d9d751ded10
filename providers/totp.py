"""A second factor for signing in on the web pages: TOTP (RFC 6238, the
six-digit codes of authenticator apps), with single-use recovery codes.

Enrolment has two steps: `begin` makes a secret (shown to the person as a
QR code and as text), `confirm` turns it on once a code from it checks
out and returns RECOVERY_CODES recovery codes, shown once. The secret is
sealed with the account's user key, bound to its row (see "Row binding"
in crypto.py), so the database alone holds no usable secret, and a private
account's code can only be checked once its password opened that key: the
web sign-in has the password, so it asks for the code after it.

A code is accepted once: the time step it belongs to is recorded, and a
code of that step or an earlier one is refused afterwards (no replay, on
any worker: the record is one conditional UPDATE). Recovery codes are
kept as keyed hashes (the server's master key), each deleted when used.

With TOTP on, the account's own password alone opens nothing over WebDAV
or SFTP (Storage.open_account refuses it): those clients cannot ask for a
code, so they use app passwords or SSH keys, as Nextcloud's do. Turning it
on moves the account's credential generation on, ending the sessions its
password alone had opened. `reset` (the administrator's, for a lost phone
and lost codes) turns it off.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

import pyotp

from . import crypto, meta
from .errors import CofferError
from .meta import totp as q
from .meta import users as uq

ISSUER = "Coffer"
STEP_SECONDS = 30
DRIFT_STEPS = 1              # codes of the step before and after are accepted too (clocks drift)
RECOVERY_CODES = 10


class SecondFactorError(CofferError):
    """A TOTP request that cannot be carried out as asked (the message is for the person)."""


class SecondFactorNeeded(CofferError):
    """The password was right and the account has TOTP on: the sign-in
    needs a code. `vfs` is the account opened by the password, for the
    caller to keep until the code is checked (Storage.second_factor), or
    to close."""

    def __init__(self, vfs):
        super().__init__("a code from the authenticator app (or a recovery code) is needed")
        self.vfs = vfs


def _aead(user_key: bytes):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(crypto.subkey(user_key, "totp"))


def _aad(user_id: int) -> bytes:
    return crypto.bind("totp", user_id)


def _recovery_code() -> str:
    raw = base64.b32encode(os.urandom(7)).decode().lower()[:10]
    return f"{raw[:5]}-{raw[5:]}"


def normalize(code: str) -> str:
    return "".join(ch for ch in (code or "").lower() if ch.isalnum())


class SecondFactors:
    def __init__(self, db, pepper: bytes, clock=time.time):
        self.db = db
        self._pepper = pepper
        self.clock = clock

    def _lookup(self, code: str) -> str:
        return hmac.new(self._pepper, normalize(code).encode(), hashlib.sha256).hexdigest()

    def enabled(self, user_id: int) -> bool:
        with self.db.read() as c:
            return q.enabled(c, user_id)

    def state(self, user_id: int) -> dict:
        """{'on': bool, 'pending': bool, 'recovery_left': int, 'since_us': int | None}."""
        with self.db.read() as c:
            r = q.row(c, user_id)
            left = q.recovery_left(c, user_id) if r is not None else 0
        on = r is not None and r["confirmed_us"] is not None
        return {"on": on, "pending": r is not None and not on, "recovery_left": left,
                "since_us": r["confirmed_us"] if on else None}

    def begin(self, user_id: int, user_key: bytes) -> str:
        """A new secret (base32), kept unconfirmed until `confirm`."""
        with self.db.read() as c:
            if q.enabled(c, user_id):
                raise SecondFactorError("two-step sign-in is already on; turn it off first to enrol a new phone")
        secret = pyotp.random_base32()
        sealed = crypto.seal_bound(_aead(user_key), secret.encode(), _aad(user_id))
        with self.db.write() as c:
            q.put_pending(c, user_id, sealed, meta.now_us())
        return secret

    def pending_secret(self, user_id: int, user_key: bytes) -> str | None:
        """The secret of an enrolment not yet confirmed (to show its QR code again)."""
        with self.db.read() as c:
            r = q.row(c, user_id)
        if r is None or r["confirmed_us"] is not None:
            return None
        return self._secret(r, user_key)

    @staticmethod
    def uri(name: str, secret: str) -> str:
        return pyotp.TOTP(secret, interval=STEP_SECONDS).provisioning_uri(name=name, issuer_name=ISSUER)

    def confirm(self, user_id: int, user_key: bytes, code: str) -> list[str]:
        """Turn TOTP on when `code` comes from the pending secret; returns
        the recovery codes (shown once, kept only as keyed hashes)."""
        with self.db.read() as c:
            r = q.row(c, user_id)
        if r is None or r["confirmed_us"] is not None:
            raise SecondFactorError("there is no enrolment waiting to be confirmed; start again")
        step = self._step_of(self._secret(r, user_key), code)
        if step is None:
            raise SecondFactorError("that code does not match: check the phone's clock and type the code "
                                    "the app shows now")
        codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
        with self.db.write() as c:
            q.confirm(c, user_id, meta.now_us(), [self._lookup(x) for x in codes])
            q.take_step(c, user_id, step)
            user = uq.user_by_id(c, user_id)
            uq.update_user(c, user_id, credential_gen=user["credential_gen"] + 1)
            uq.audit(c, "second_factor_enabled", user_id=user_id, actor="user", detail={})
        return codes

    def check(self, user_id: int, user_key: bytes, code: str) -> str | None:
        """'code' or 'recovery' when `code` is a fresh TOTP code or an unused
        recovery code (now spent), else None."""
        with self.db.read() as c:
            r = q.row(c, user_id)
        if r is None or r["confirmed_us"] is None:
            return None
        plain = normalize(code)
        if len(plain) == 6 and plain.isdigit():
            step = self._step_of(self._secret(r, user_key), plain)
            if step is None:
                return None
            with self.db.write() as c:
                return "code" if q.take_step(c, user_id, step) else None
        with self.db.write() as c:
            return "recovery" if q.use_recovery(c, user_id, self._lookup(plain)) else None

    def recovery_left(self, user_id: int) -> int:
        with self.db.read() as c:
            return q.recovery_left(c, user_id)

    def turn_off(self, user_id: int, actor: str = "user") -> bool:
        """Remove the account's TOTP (the caller checked password and code,
        or is the administrator); audited. False when it had none."""
        with self.db.write() as c:
            had = q.remove(c, user_id)
            if had:
                uq.audit(c, "second_factor_reset" if actor == "admin" else "second_factor_disabled",
                         user_id=user_id, actor=actor, detail={})
        return had

    def _secret(self, r, user_key: bytes) -> str:
        return crypto.open_bound(_aead(user_key), r["secret_enc"], _aad(r["user_id"]), None,
                                 "TOTP secret").decode()

    def _step_of(self, secret: str, code: str) -> int | None:
        """The time step whose code `code` is (within the allowed drift), or None."""
        plain = normalize(code)
        if len(plain) != 6 or not plain.isdigit():
            return None
        totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
        now = self.clock()
        for drift in range(-DRIFT_STEPS, DRIFT_STEPS + 1):
            at = now + drift * STEP_SECONDS
            if hmac.compare_digest(totp.at(at), plain):
                return int(at // STEP_SECONDS)
        return None
