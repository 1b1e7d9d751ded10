"""The core of one principal's filesystem: what every operation shares.

`Core` holds the principal's key domains (providers/domains.py) and its
resolver (providers/resolve.py), opens metadata transactions, and is the
policy gate (providers/policy.py): every call that changes something
resolves its targets and checks them here, once. It also answers what
streams need (the `Host` of providers/streams.py). Operations live in their
own modules (publish.py, tree_ops.py, purging.py) and take a `Core`; `Vfs`
(vfs.py) is the API the front-ends call. `Entry` is the contract between
the core and the front-ends.
"""
from __future__ import annotations

import contextlib
import fnmatch
import threading
from dataclasses import dataclass

from . import crypto, guard, paths, policy, retention
from .domains import Domain, Keyring
from .errors import NotADirectory, QuotaExceeded
from .meta import tree as t
from .meta import users as uq
from .policy import Op
from .resolve import LIVE_KINDS, Kind, Resolver, Target


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    is_dir: bool
    size: int
    mtime: float
    ctime: float
    etag: str
    mode: int | None = None
    writable: bool = True          # the principal may change it (and, for a folder, its contents)
    virtual: bool = False          # under /.coffer or /Shared's listings: read-only
    removable: bool = True         # the principal may delete or rename it


@dataclass(frozen=True)
class VersionInfo:
    id: int
    size: int
    created: float
    mtime: float
    author: str | None
    current: bool
    name: str


UNLIMITED_SPACE = 1 << 50       # the free space shown without a limit: 0 would make clients refuse to write


@dataclass(frozen=True)
class Quota:
    used: int
    limit: int | None
    available: int | None

    def space(self, disk=None) -> tuple[int, int]:
        """(total, free) bytes, as clients are told them (WebDAV quota
        properties, SFTP statvfs, `df`): the quota's; without a limit the
        disk's when `disk()` gives them as (total, free), else UNLIMITED_SPACE."""
        if self.limit is not None:
            return self.limit, max(0, self.limit - self.used if self.available is None else self.available)
        if disk is not None:
            return disk()
        return UNLIMITED_SPACE, UNLIMITED_SPACE


def settings_policy(cfg, settings) -> tuple:
    """(retention policy, exclusion patterns) of an account's settings."""
    settings = settings or {}
    return (retention.Policy.from_config(cfg.retention, settings.get("retention")),
            tuple(settings.get("exclude", cfg.retention.exclude)))


def excluded(name: str, patterns) -> bool:
    """Whether a file name matches one of the exclusion patterns (shell
    style, case-sensitive as names are)."""
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


class Core:
    """What the operations of one principal share (see the module doc)."""

    def __init__(self, storage, user, user_key: bytes, scope: str | None = None, app_password: int | None = None):
        self.st = storage
        self.user = user
        self.scope = None if scope == "full" else scope     # a limited app password's: read-only | backup
        self.app_password = app_password
        self.actor = "user"            # who acts, for audit events: the holder, or "admin" (Storage.open_account)
        self._refused: list = []
        self.alerts: list = []              # mass changes held in this transaction (providers/guard.py)
        self.cfg = storage.cfg
        self.keys = Keyring(storage.db, user.id, user_key, legacy=user.sealing < crypto.SEALING_BOUND)
        self.home = self.keys.home
        self.res = Resolver(storage.db, self.keys, user.id)
        self._read = threading.local()      # per thread: owners' rows and policies this transaction read

    def close(self) -> None:
        self.keys.close()
        self.home = None

    # -- transactions ------------------------------------------------------------------------
    def recheck(self, dom: Domain) -> None:
        """Raise PermissionDenied if the principal lost a shared folder after
        opening something in it (an open read handle answers the next read)."""
        with self.tx() as c:
            self.keys.domain(c, dom.id)

    @contextlib.contextmanager
    def tx(self, write: bool = False):
        """A metadata transaction; refusals noted inside it are recorded as
        audit events afterwards, even though the transaction rolls back."""
        self._read.owners, self._read.policies = {}, {}
        try:
            with (self.st.db.write() if write else self.st.db.read()) as c:
                yield c
            if self.alerts:                 # committed: tell the people concerned
                guard.send_alerts(self.st, self.alerts)
        finally:
            self.alerts = []
            pending, self._refused = self._refused, []
            for what, dom_id in pending:
                self.st.audit("share_refused", user_id=self.user.id, actor="user", domain=dom_id,
                              operation=what.split(" ", 1)[0])
            self.res.keep_mount_names()

    # -- the policy gate: every call that changes something passes here, once per target -----
    def by_layout(self, op: Op, parts) -> Kind:
        """What the layout alone refuses, before anything is read; returns the
        kind of the place (META standing for anything in /.coffer)."""
        policy.check_scope(op, paths.join(parts), self.scope)
        kind = self.res.place(parts)
        if not policy.possible(op, kind):
            policy.check(op, kind, policy.OWNER, paths.join(parts))
        return kind

    def allow(self, c, op: Op, kind: Kind, parts, grant: str | None = None, node=None) -> None:
        """Check the policy table for one operation on one target; a refusal
        to a collaborator is audited once the transaction ends."""
        if grant is None and node is not None and policy.needs_grant(op, kind):
            grant = self.keys.of(c, node).permission
        dom_id = node["domain_id"] if node is not None else self.home.id
        policy.check(op, kind, grant or policy.OWNER, paths.join(parts),
                     lambda o: self._refused.append((o.value, dom_id)), self.scope)

    def resolve_for(self, c, op: Op, parts) -> Target:
        """Resolve a path for an operation and check the policy."""
        kind = self.by_layout(op, parts)
        if kind is Kind.META:
            it = self.res.resolve(c, parts)
        else:
            it = self.res.node_target(self.res.live(c, parts), parts, kind, c=c)
        self.allow(c, op, it.kind, parts, it.grant, it.node)
        return it

    def parent_for_write(self, c, parts):
        """The folder a new entry (or a file's new content) goes into, and its
        domain, checked for `create` at that place."""
        kind = self.by_layout(Op.CREATE, parts)
        parent = self.res.live(c, parts[:-1])
        if parent["kind"] != "d":
            raise NotADirectory(f"{paths.join(parts[:-1])} is a file, not a folder")
        dom = self.keys.of(c, parent)
        self.allow(c, Op.CREATE, kind, parts, dom.permission, parent)
        if len(parts) > paths.MAX_DEPTH and t.child(c, parent["id"], crypto.name_lookup(
                dom.keys, parent["id"], parts[-1])) is None:
            paths.check_depth(parts)          # nothing new deeper than the limit
        return parent, dom

    def entry(self, it: Target) -> Entry:
        node = it.node
        if it.version is not None:
            etag = f"v{it.version['id']:x}"
        elif node is not None:
            etag = f"{node['id']:x}-{(node['version_id'] or 0):x}-{node['changed_us']:x}"
        else:
            etag = f"m{it.mtime_us:x}"
        grant = it.grant or policy.OWNER
        return Entry(it.name, paths.join(it.parts), it.is_dir, 0 if it.is_dir else it.size,
                     it.mtime_us / 1e6, it.created_us / 1e6, etag,
                     node["mode"] if node is not None and it.kind in LIVE_KINDS else None,
                     writable=it.kind in LIVE_KINDS and policy.allowed(Op.CREATE, Kind.LIVE, grant, self.scope),
                     virtual=it.virtual, removable=policy.allowed(Op.REMOVE, it.kind, grant, self.scope))

    # -- quota, retention, exclusion ------------------------------------------------------------
    def quota_of(self, c, owner_id: int) -> Quota:
        used = uq.owner_usage(c, owner_id)
        from .accounts import User
        limit = self.st.accounts.quota_limit(User.from_row(self.owner_row(c, owner_id)))
        return Quota(used, limit, None if limit is None else max(0, limit - used))

    def quota_room(self, dom=None) -> int | None:
        with self.tx() as c:
            return self.quota_of(c, (dom or self.home).owner_id).available

    def check_quota(self, c, dom: Domain) -> None:
        q = self.quota_of(c, dom.owner_id)
        if q.limit is not None and q.used > q.limit:
            self.quota_full(dom)

    def quota_full(self, dom: Domain):
        raise QuotaExceeded("the storage quota is full: delete files or purge old versions, or ask for a "
                            "larger plan; nothing was changed"
                            + ("" if dom.owner_id == self.user.id else " (the shared folder's owner's quota)"))

    def retention_of(self, c, dom: Domain):
        """Retention policy and exclusion patterns of the domain's owner, as
        the transaction `c` sees them: a change made by `coffer-admin` (in
        another process) applies from the next write of a session already
        open, in every worker. Read once per transaction (copying a folder
        asks for every file)."""
        seen = self._seen("policies")
        if dom.owner_id not in seen:
            seen[dom.owner_id] = settings_policy(self.cfg, self.owner_row(c, dom.owner_id)["settings"])
        return seen[dom.owner_id]

    def owner_row(self, c, owner_id: int):
        """An owner's account row, read once per transaction: a publish asks
        for its quota and its patterns, one query serves both."""
        seen = self._seen("owners")
        if owner_id not in seen:
            seen[owner_id] = uq.user_by_id(c, owner_id)
        return seen[owner_id]

    def _seen(self, what: str) -> dict:
        seen = getattr(self._read, what, None)
        if seen is None:                     # a thread's first use outside `tx`
            seen = {}
            setattr(self._read, what, seen)
        return seen

    def is_excluded(self, c, dom: Domain, name: str) -> bool:
        return excluded(name, self.retention_of(c, dom)[1])

    def excludes(self, c, dom: Domain, name: str, node=None) -> bool:
        """Does a file written, copied or renamed to `name` now keep no
        history (the owner's patterns)? A session of a limited app password
        never turns a file that keeps history into one that does not: that
        would drop its history (rename it to `x.tmp`, then overwrite it),
        which only the account's own password may do."""
        if not self.is_excluded(c, dom, name):
            return False
        return self.scope is None or node is None or bool(node["excluded"])

    # -- what streams need (providers/streams.py, Host) ------------------------------------------
    def find_chunk(self, domain, dedup_id):
        return t.chunk_id_by_dedup(self.st.db, domain.id, dedup_id)

    def chunk_plaintext(self, domain, pc) -> bytes:
        if pc.key is not None:
            stored = pc.small if pc.small is not None else \
                self.st.blobs.get(pc.blob_name, pc.blob_offset, pc.stored_size)
            return crypto.decrypt_chunk(pc.key, stored, pc.plain_size)
        with self.tx() as c:
            row = t.chunk_by_dedup(c, domain.id, pc.dedup_id)
        key = crypto.open_sealed(domain.keys.wrap, bytes(row["wrapped_key"]), pc.dedup_id.encode())
        stored = self.st.blobs.get(row["blob_name"], row["blob_offset"], row["stored_size"])
        return crypto.decrypt_chunk(key, stored, row["plain_size"])

    def chunk_location(self, chunk_id: int) -> tuple[str, int] | None:
        with self.tx() as c:
            return t.chunk_location(c, chunk_id)

    @property
    def blobs(self):
        return self.st.blobs

    def publish(self, w):
        """Make a finished stream the file's current version (providers/publish.py)."""
        from .publish import publish_version
        return publish_version(self, w)
