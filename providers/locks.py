"""WebDAV-style write locks kept in the metadata database.

Every server node sees the same locks. A lock belongs to one key domain (an
account's home, or a shared folder): its row holds a keyed hash of the
locked path relative to the domain's top (for lookups) and the lock itself
— path, owner text, scope, depth — sealed with the domain's metadata key, so
the database holds no plaintext names here either. A lock is visible to
everyone who reaches its domain, so in a shared folder the owner and the
collaborators hold each other off; a token is invisible to everyone else.

Paths are normalized by providers.paths like every other path (NFC names),
so a lock taken on one spelling of a name holds off writes to any other.
When a shared folder's key is rotated (a collaborator revoked), its lock
rows are re-sealed under the new key in the same transaction
(`reseal_domain`), so they stay readable and enforced; a lock is sealed only
under the key generation its domain still has.

`LockScope` carries what the caller's session already has unlocked; the
store itself keeps no keys. `PrincipalLocks` is one principal's view: its
domains at the paths where they appear in its tree.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass


from . import crypto, paths
from .errors import Conflict, IntegrityError, TooLarge
from .meta import locks as q

log = logging.getLogger(__name__)
MAX_TIMEOUT = 7 * 24 * 3600          # seconds; longer (or infinite) requests are cut to this
MAX_OWNER_BYTES = 4096               # a lock's owner text (XML as the client sent it)


@dataclass(frozen=True)
class LockScope:
    domain_id: int
    user_id: int | None
    keys: crypto.DomainKeys          # `meta` seals the lock body, `lookup` keys the path hash
    key_gen: int = 1                 # the domain key generation `meta` and `lookup` belong to


def normalize_root(path: str) -> str:
    """A lock root as the filesystem names it: `/a/b/` and `/a/b` are one
    root, and so are the NFC and NFD spellings of a name."""
    return paths.join(paths.parse(path))


def _is_below(root: str, path: str) -> bool:
    return root == path or root == "/" or path.startswith(root.rstrip("/") + "/")


class LockStore:
    def __init__(self, db, clock=time.time):
        self.db = db
        self.clock = clock

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def _lookup(scope: LockScope, root: str) -> str:
        return hmac.new(scope.keys.lookup, b"lock\x00" + root.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def _seal(scope: LockScope, lock: dict) -> bytes:
        # the owner is XML as the client sent it: keep its bytes exactly
        body = {k: ({"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v)
                for k, v in lock.items()}
        return crypto.seal_lock(scope.keys, lock["token"], json.dumps(body).encode("utf-8"))

    @staticmethod
    def _open(scope: LockScope, row) -> dict:
        body = json.loads(crypto.open_lock(scope.keys, row.token, row.data_enc))
        return {k: (base64.b64decode(v["b64"]) if isinstance(v, dict) and "b64" in v else v)
                for k, v in body.items()}

    def _open_rows(self, scope: LockScope, rows) -> list[dict]:
        """The locks of these rows. A row its domain's key no longer opens
        (sealed before a key rotation re-sealed locks) names no path anyone
        can check: it is dropped rather than failing every request."""
        out, stale = [], []
        for row in rows:
            try:
                out.append(self._open(scope, row))
            except IntegrityError:
                stale.append(row.token)
        if stale:
            log.warning("dropping %d lock(s) sealed under a key their folder no longer has", len(stale))
            with self.db.write() as conn:
                for token in stale:
                    q.remove(conn, scope.domain_id, token)
        return out

    @staticmethod
    def _check_key(conn, scope: LockScope) -> None:
        if q.key_gen(conn, scope.domain_id) != scope.key_gen:
            raise Conflict("the shared folder's key changed meanwhile (a collaborator was removed); "
                           "send the request again")

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    # -- the store ----------------------------------------------------------------
    def create(self, scope: LockScope, path: str, lock: dict) -> dict:
        """Store a new lock on `path`; returns it with token, root, timeout
        and expire filled in. Conflicts are the caller's to check."""
        owner = lock.get("owner") or b""
        if len(owner) > MAX_OWNER_BYTES:
            raise TooLarge(f"the lock's owner is {len(owner)} bytes long; it may take {MAX_OWNER_BYTES} "
                           "(a name, an address or a URL): the lock was not taken")
        root = normalize_root(path)
        timeout = lock.get("timeout")
        timeout = MAX_TIMEOUT if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT else float(timeout)
        lock = dict(lock, root=root, timeout=timeout, expire=self.clock() + timeout,
                    token="opaquelocktoken:" + secrets.token_hex(16))
        with self.db.write() as conn:
            self._check_key(conn, scope)
            q.insert(conn, token=lock["token"], domain_id=scope.domain_id, user_id=scope.user_id,
                     root_lookup=self._lookup(scope, root), expires_us=int(lock["expire"] * 1_000_000),
                     data_enc=self._seal(scope, lock))
        return lock

    def domain_of(self, token: str) -> int | None:
        """The key domain a live lock token belongs to."""
        with self.db.read() as conn:
            return q.domain_of(conn, token, self._now_us())

    def get(self, scope: LockScope, token: str) -> dict | None:
        with self.db.read() as conn:
            row = q.get(conn, scope.domain_id, token, self._now_us())
        found = self._open_rows(scope, [row] if row is not None else [])
        return found[0] if found else None

    def refresh(self, scope: LockScope, token: str, timeout: float | None) -> dict | None:
        if self.get(scope, token) is None:
            return None
        with self.db.write() as conn:
            self._check_key(conn, scope)
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
                rows = q.by_domain(conn, scope.domain_id, now)
            elif include_root:
                rows = q.by_root(conn, scope.domain_id, self._lookup(scope, root), now)
            else:
                rows = []
        for lock in self._open_rows(scope, rows):
            if include_children and lock["root"] == root and not include_root:
                continue
            if not include_children or _is_below(root, lock["root"]):
                out.append(lock)
        return out

    def user_has_locks(self, user_id: int) -> bool:
        """Whether any key domain the user belongs to (its home, folders it
        shares or was given) holds a live lock: one query."""
        return self.db.lookup(q.ANY_LIVE_FOR_USER, {"u": user_id, "t": self._now_us()}) is not None

    def has_locks(self, scope: LockScope) -> bool:
        """Whether the account holds any live lock at all (a cheap pre-check)."""
        with self.db.read() as conn:
            return q.any_live(conn, scope.domain_id, self._now_us())

    def purge_expired(self) -> int:
        with self.db.write() as conn:
            return q.purge_expired(conn, self._now_us())


def rehome(conn, src_id: int, old: crypto.DomainKeys, dst_id: int, new: crypto.DomainKeys,
           below: tuple = ()) -> None:
    """Put lock rows under another key, inside the transaction that changes
    the keys: a shared folder's rotation (same domain, every lock), or a
    folder becoming a domain of its own (the locks at and below `below`, the
    folder's path in the old domain, move into the new one, their roots made
    relative to it). The domain row is locked first, so a lock being sealed
    under the old key meanwhile either lands before (and is re-sealed here)
    or finds the new key generation and is refused."""
    q.key_gen(conn, src_id)
    before, after = LockScope(src_id, None, old), LockScope(dst_id, None, new)
    for row in q.of_domain(conn, src_id):
        try:
            lock = LockStore._open(before, row)
        except IntegrityError:               # already unreadable: it protects nothing anyone can name
            q.remove(conn, src_id, row.token)
            continue
        parts = paths.parse(lock["root"])
        if parts[:len(below)] != below:
            continue
        lock["root"] = paths.join(parts[len(below):])
        q.reseal(conn, row.token, dst_id, LockStore._lookup(after, lock["root"]), LockStore._seal(after, lock))


def drop_of_user(conn, domain_id: int, user_id: int) -> int:
    """Remove a user's locks in a domain (a collaborator removed from a
    shared folder holds nobody off any more)."""
    return q.remove_of_user(conn, domain_id, user_id)


def scope_of(user_id: int, dom) -> LockScope:
    """The lock scope of a key domain as an open filesystem holds it."""
    return LockScope(dom.id, user_id, dom.keys, dom.key_gen)


def lock_scope_for(storage, vfs) -> LockScope:
    """The scope of an open account filesystem: its home domain and keys."""
    return scope_of(vfs.user.id, vfs.home)


_parts = paths.parse


class PrincipalLocks:
    """The locks one principal sees: those of every key domain it reaches,
    each domain at the path where its top appears in the principal's tree
    (the home at `/`, a shared folder at its owner's path for the owner and
    at `/Shared/<owner>/<folder>` for a collaborator). Paths in and roots out
    are paths of the principal's tree."""

    def __init__(self, store: LockStore, places, user_id: int | None = None):
        """`places`: the (prefix, scope) pairs, or a function giving them when
        first needed. With `user_id`, one query first asks whether any domain
        the user belongs to holds a live lock at all; most requests of most
        accounts then need no other lock query (nor the list of places)."""
        self.store = store
        self._places_of = places if callable(places) else (lambda: places)
        self._places = None
        self.user_id = user_id
        self._quiet: bool | None = None          # no live lock anywhere the user reaches (this view)

    @property
    def places(self) -> list[tuple[tuple, LockScope]]:
        if self._places is None:
            places = self._places_of()
            self._places = sorted(places, key=lambda p: -len(p[0]))      # the deepest top first
            self._by_domain = {scope.domain_id: (prefix, scope) for prefix, scope in places}
        return self._places

    @property
    def by_domain(self) -> dict:
        self.places
        return self._by_domain

    def _nothing_live(self) -> bool:
        if self.user_id is None:
            return False
        if self._quiet is None:
            self._quiet = not self.store.user_has_locks(self.user_id)
        return self._quiet

    def _place(self, path: str) -> tuple[LockScope, str, tuple]:
        parts = _parts(path)
        for prefix, scope in self.places:
            if parts[:len(prefix)] == prefix:
                return scope, "/" + "/".join(parts[len(prefix):]), prefix
        raise LookupError(f"no key domain holds {path}")        # the home (prefix ()) holds everything

    @staticmethod
    def _outward(lock: dict | None, prefix: tuple) -> dict | None:
        if lock is None or not prefix:
            return lock
        return dict(lock, root=paths.join(prefix + paths.parse(lock["root"])))

    def _scope_of_token(self, token: str):
        found = self.by_domain.get(self.store.domain_of(token))
        return found if found is not None else (None, None)

    def create(self, path: str, lock: dict) -> dict:
        scope, rel, prefix = self._place(path)
        self._quiet = False
        return self._outward(self.store.create(scope, rel, lock), prefix)

    def get(self, token: str) -> dict | None:
        prefix, scope = self._scope_of_token(token)
        return self._outward(self.store.get(scope, token), prefix) if scope else None

    def refresh(self, token: str, timeout: float | None) -> dict | None:
        prefix, scope = self._scope_of_token(token)
        return self._outward(self.store.refresh(scope, token, timeout), prefix) if scope else None

    def delete(self, token: str) -> bool:
        _, scope = self._scope_of_token(token)
        return self.store.delete(scope, token) if scope else False

    def locks_on(self, path: str, *, include_root: bool = True, include_children: bool = False) -> list[dict]:
        if self._nothing_live():
            return []
        scope, rel, prefix = self._place(path)
        out = [self._outward(lk, prefix) for lk in self.store.locks_on(
            scope, rel, include_root=include_root, include_children=include_children)]
        if include_children:            # shared folders further down are domains of their own
            parts = _parts(path)
            for below, other in self.places:
                if len(below) > len(parts) and below[:len(parts)] == parts:
                    out += [self._outward(lk, below) for lk in self.store.locks_on(
                        other, "/", include_root=True, include_children=True)]
        return out

    def has_locks(self) -> bool:
        return not self._nothing_live() and any(self.store.has_locks(scope) for _, scope in self.places)


def principal_locks(store: LockStore, vfs) -> PrincipalLocks:
    """The lock view of an open account filesystem."""
    return PrincipalLocks(store, lambda: [(prefix, scope_of(vfs.user.id, dom)) for prefix, dom in vfs.key_domains()],
                          user_id=vfs.user.id)
