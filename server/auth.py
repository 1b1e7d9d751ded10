"""Login for the front-ends: Basic credentials, the verified-credential cache.

`st.login` verifies a password with bcrypt (about a third of a second) and
unlocks the account's keys. Clients such as the Windows WebClient send the
same credentials on every request, so a verified login is kept in memory for
a short time under a keyed hash of name and password (never the password
itself). Every use re-reads the account's credential generation, so a
changed password or a disabled account is refused at once.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from providers.errors import AuthenticationFailed
from providers.storage import WRONG_LOGIN

log = logging.getLogger(__name__)


def strip_domain(name: str) -> str:
    """Windows sends `DOMAIN\\user` (and sometimes `user@host` is meant as
    is): only the part after the last backslash is the account name."""
    return name.rsplit("\\", 1)[-1]


def parse_basic(header: str | None) -> tuple[str, str]:
    """(name, password) from an `Authorization: Basic …` header.

    Raises AuthenticationFailed for a missing, non-Basic or malformed header.
    """
    if not header:
        raise AuthenticationFailed("credentials required")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise AuthenticationFailed("only Basic authentication is supported (over TLS)")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthenticationFailed("malformed Basic credentials") from None
    name, sep, password = text.partition(":")
    if not sep or not name or "\x00" in text or len(text) > 4096:
        raise AuthenticationFailed("malformed Basic credentials")
    return strip_domain(name), password


@dataclass
class Login:
    """One verified login: the account's open filesystem and what keeps it valid."""
    name: str
    vfs: object
    generation: int
    expires: float
    users: int = 0                     # requests using it right now
    closed: bool = field(default=False)


class CredentialCache:
    """Verified logins, keyed by HMAC(random process key, name + password)."""

    def __init__(self, storage, ttl: float, clock=time.monotonic):
        self.st = storage
        self.ttl = ttl
        self.clock = clock
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._entries: dict[bytes, Login] = {}
        self._retired: list[Login] = []

    def _digest(self, name: str, password: str) -> bytes:
        msg = name.encode("utf-8") + b"\x00" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def acquire(self, name: str, password: str, client_addr: str | None, protocol: str = "webdav") -> Login:
        """The account's Login, verifying the password only when no valid
        cache entry exists. Pair with `release`. Raises AuthenticationFailed."""
        key = self._digest(name, password)
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > now:
                entry.users += 1
            else:
                entry = None
        if entry is not None:
            gen = self.st.account_generation(name)
            if gen is not None and gen == entry.generation:
                return entry
            self.release(entry)
            self.forget(name)
            if gen is None:
                raise AuthenticationFailed(WRONG_LOGIN)
        vfs = self.st.open_account(name, password, client_addr=client_addr, protocol=protocol)
        gen = self.st.account_generation(name)
        fresh = Login(name=name, vfs=vfs, generation=gen if gen is not None else -1,
                      expires=now + self.ttl, users=1)
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._retire(old)
            self._entries[key] = fresh
        return fresh

    def release(self, entry: Login) -> None:
        with self._lock:
            entry.users -= 1
            self._close_idle()

    def forget(self, name: str) -> None:
        """Drop every cached login of one account."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.name == name]:
                self._retire(self._entries.pop(key))
            self._close_idle()

    def sweep(self) -> None:
        """Close logins whose time is up (called periodically)."""
        now = self.clock()
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.expires <= now]:
                self._retire(self._entries.pop(key))
            self._close_idle()

    def close_all(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                self._retire(entry)
            self._entries.clear()
            for entry in self._retired:
                entry.users = 0
            self._close_idle()

    # -- internals (lock held) -------------------------------------------------
    def _retire(self, entry: Login) -> None:
        if entry not in self._retired:
            self._retired.append(entry)

    def _close_idle(self) -> None:
        keep = []
        for entry in self._retired:
            if entry.users <= 0 and not entry.closed and entry not in self._entries.values():
                entry.closed = True
                try:
                    entry.vfs.close()
                except Exception:            # closing must never fail a request
                    log.exception("closing a cached login failed")
            elif not entry.closed:
                keep.append(entry)
        self._retired = keep
