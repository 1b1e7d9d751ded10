"""WebDAV-style write locks kept in the metadata database.

Every server node sees the same locks. A lock belongs to one account's key
domain: its row holds a keyed hash of the locked path (for lookups) and the
lock itself — path, owner text, scope, depth — sealed with the domain's
metadata key, so the database holds no plaintext names here either. A token
of one account is invisible to every other account.

`LockScope` carries what the caller's session already has unlocked; the
store itself keeps no keys.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import crypto
from .meta import locks as q

MAX_TIMEOUT = 7 * 24 * 3600          # seconds; longer (or infinite) requests are cut to this


@dataclass(frozen=True)
class LockScope:
    domain_id: int
    user_id: int | None
    meta: AESGCM                     # seals the lock body
    lookup: bytes                    # keys the path hash


def normalize_root(path: str) -> str:
    """`/a/b/` and `/a/b` name the same lock root."""
    path = "/" + path.strip("/")
    return path


def _is_below(root: str, path: str) -> bool:
    return root == path or root == "/" or path.startswith(root.rstrip("/") + "/")


class LockStore:
    def __init__(self, db, clock=time.time):
        self.db = db
        self.clock = clock

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def _lookup(scope: LockScope, root: str) -> str:
        return hmac.new(scope.lookup, b"lock\x00" + root.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def _seal(scope: LockScope, lock: dict) -> bytes:
        # the owner is XML as the client sent it: keep its bytes exactly
        body = {k: ({"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v)
                for k, v in lock.items()}
        return crypto.seal(scope.meta, json.dumps(body).encode("utf-8"), b"lock")

    @staticmethod
    def _open(scope: LockScope, row) -> dict:
        body = json.loads(crypto.open_sealed(scope.meta, bytes(row.data_enc), b"lock", "lock"))
        return {k: (base64.b64decode(v["b64"]) if isinstance(v, dict) and "b64" in v else v)
                for k, v in body.items()}

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    # -- the store ----------------------------------------------------------------
    def create(self, scope: LockScope, path: str, lock: dict) -> dict:
        """Store a new lock on `path`; returns it with token, root, timeout
        and expire filled in. Conflicts are the caller's to check."""
        root = normalize_root(path)
        timeout = lock.get("timeout")
        timeout = MAX_TIMEOUT if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT else float(timeout)
        lock = dict(lock, root=root, timeout=timeout, expire=self.clock() + timeout,
                    token="opaquelocktoken:" + secrets.token_hex(16))
        with self.db.write() as conn:
            q.insert(conn, token=lock["token"], domain_id=scope.domain_id, user_id=scope.user_id,
                     root_lookup=self._lookup(scope, root), expires_us=int(lock["expire"] * 1_000_000),
                     data_enc=self._seal(scope, lock))
        return lock

    def get(self, scope: LockScope, token: str) -> dict | None:
        with self.db.read() as conn:
            row = q.get(conn, scope.domain_id, token, self._now_us())
        return self._open(scope, row) if row is not None else None

    def refresh(self, scope: LockScope, token: str, timeout: float | None) -> dict | None:
        with self.db.write() as conn:
            row = q.get(conn, scope.domain_id, token, self._now_us())
            if row is None:
                return None
            lock = self._open(scope, row)
            timeout = MAX_TIMEOUT if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT else float(timeout)
            lock["timeout"] = timeout
            lock["expire"] = self.clock() + timeout
            q.set_expiry(conn, scope.domain_id, token, int(lock["expire"] * 1_000_000), self._seal(scope, lock))
        return lock

    def delete(self, scope: LockScope, token: str) -> bool:
        with self.db.write() as conn:
            return q.remove(conn, scope.domain_id, token)

    def locks_on(self, scope: LockScope, path: str, *, include_root: bool = True,
                 include_children: bool = False) -> list[dict]:
        """Live locks whose root is `path` and/or lies below it."""
        root = normalize_root(path)
        now = self._now_us()
        out = []
        with self.db.read() as conn:
            if include_children:
                for row in q.by_domain(conn, scope.domain_id, now):
                    lock = self._open(scope, row)
                    if lock["root"] == root and not include_root:
                        continue
                    if _is_below(root, lock["root"]):
                        out.append(lock)
            elif include_root:
                out = [self._open(scope, row) for row in q.by_root(conn, scope.domain_id,
                                                                    self._lookup(scope, root), now)]
        return out

    def has_locks(self, scope: LockScope) -> bool:
        """Whether the account holds any live lock at all (a cheap pre-check)."""
        with self.db.read() as conn:
            return q.any_live(conn, scope.domain_id, self._now_us())

    def purge_expired(self) -> int:
        with self.db.write() as conn:
            return q.purge_expired(conn, self._now_us())


def lock_scope_for(storage, vfs) -> LockScope:
    """The scope of an open account filesystem: its home domain and keys."""
    home = vfs.home
    return LockScope(home.id, vfs.user.id, home.keys.meta, home.keys.lookup)
