"""The filesystem API: one object per authenticated principal.

Every front-end (WebDAV, SFTP, coffer-admin) calls this and nothing below
it. Paths are validated by providers.paths; permissions are checked here,
once. Besides the live tree there is the hidden read-only tree `/.coffer/`:

  /.coffer/versions/<path>/<time>_<name>   every kept version of every file
                                           that has lived at the path
  /.coffer/trash/<deleted time>/<path>     deleted files and folders
  /.coffer/snapshots/<UTC time>/<path>     the whole tree as it was then

Copying out of `/.coffer/` restores (out of the trash, the deleted node
itself comes back with its history); deleting in it purges for good.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass

from . import crypto, history, meta, paths, policy, rekey, retention
from .domains import Domain, Keyring
from .errors import (AlreadyExists, Conflict, DirectoryNotEmpty, IsADirectory, NotADirectory,
                     NotFound, PermissionDenied, QuotaExceeded)
from .meta import tree as t
from .meta import users as uq
from .policy import Op
from .resolve import (LIVE_KINDS, NODE_KINDS, SHARED, Kind, Resolver, Target, is_mount,  # noqa: F401
                      parse_stamp, snapshot_path, stamp, trash_path, version_path)
from .streams import RandomFile, Reader, Writer

log = logging.getLogger(__name__)
PROPS_BATCH = 500           # node ids per dead-property query of a listing
PROP_VALUE_BYTES = 64 * 1024             # a dead property's name and value together
PROPS_PER_NODE = 256                     # dead properties per file or folder
PROP_BYTES_PER_ACCOUNT = 16 * 1024 * 1024   # all of an owner's, as charged (tree.prop_cost)


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


# -- metadata-only work: no keys needed ------------------------------------------------------

def drop_versions(c, domain_id: int, version_ids) -> list[str]:
    """Delete versions and the chunks no other version uses; returns their blob names."""
    refs = Counter()
    for vid in version_ids:
        refs.update(t.delete_version(c, vid))
    freed, blobs = t.drop_refs(c, refs)
    t.add_usage(c, domain_id, -freed)
    return blobs


def purge_nodes(c, root_ids) -> tuple[list[str], int]:
    """Delete subtrees with every version of every file in them, for good.
    Returns the blobs to delete and how many versions went."""
    ids: dict[int, None] = {}
    for rid in root_ids:
        ids.update(dict.fromkeys(t.subtree_ids(c, rid)))
    if t.roots_among(c, [i for i in ids if i not in root_ids]):
        raise Conflict("this holds a shared folder: stop sharing it first, then purge")
    blobs, count = [], 0
    if ids:
        by_domain: dict[int, list[int]] = {}
        for vid, nid in t.versions_for_nodes(c, list(ids)):
            by_domain.setdefault(t.version(c, vid)["domain_id"], []).append(vid)
            count += 1
        for n in ids:
            t.update_node(c, n, version_id=None)
        for did, vids in by_domain.items():
            blobs += drop_versions(c, did, vids)
        t.delete_nodes(c, list(reversed(ids)))
    return blobs, count


def expire_account(storage, user, now_us: int | None = None) -> dict:
    """Apply version retention to every file an account owns and empty its
    trash of what is older than trash_days. Only version times and sizes and
    node ids are involved, never names or content, so this needs no keys:
    the periodic job runs it for `private` accounts too.

    The quota share of old versions is applied to each key domain on its
    own (the home, each shared folder): collaborators filling a shared
    folder with versions can thin only that folder's history."""
    now = now_us or meta.now_us()
    policy = retention.Policy.from_config(storage.cfg.retention, user.settings.get("retention"))
    limit = storage.accounts.quota_limit(user)
    blobs: list[str] = []
    counts = {"versions": 0, "over_quota_share": 0, "trash": 0}
    with storage.db.write() as c:
        domain_ids = [uq.home_domain(c, user.id)["id"]] + [r["id"] for r in uq.owned_share_domains(c, user.id)]
        for did in domain_ids:
            kept_old = []
            by_node: dict[int, list] = {}
            for r in t.version_rows_for_domain(c, did):
                by_node.setdefault(r.node_id, []).append(r)
            for nid, vs in by_node.items():
                node = t.node(c, nid)
                vs = [v for v in vs if v.id == node["version_id"]] + [v for v in vs if v.id != node["version_id"]]
                keep = {0} if node["excluded"] else retention.thin([v.created_us for v in vs], now, policy)
                drop = [v.id for i, v in enumerate(vs) if i not in keep]
                kept_old += [(v.id, v.created_us, v.stored_bytes) for i, v in enumerate(vs) if i in keep and i]
                if drop:
                    counts["versions"] += len(drop)
                    blobs += drop_versions(c, did, drop)
            over = retention.over_share(kept_old, limit, policy)
            if over:
                counts["versions"] += len(over)
                counts["over_quota_share"] += len(over)
                blobs += drop_versions(c, did, over)
        cutoff = now - policy.trash_days * retention.DAY
        old = [n["id"] for did in domain_ids for n in t.trashed(c, did, None) if n["trashed_us"] < cutoff]
        counts["trash"] = len(old)
        gone, counts["trash_versions"] = purge_nodes(c, old)
        blobs += gone
        if any(counts.values()):
            uq.audit(c, "retention_purged", user_id=user.id, actor="system", detail=counts)
    storage.delete_blobs(blobs)
    return counts


class Vfs:
    def __init__(self, storage, user, user_key: bytes):
        self.st = storage
        self.user = user
        self._refused: list = []
        self.cfg = storage.cfg
        self.keys = Keyring(storage.db, user.id, user_key)
        self.home = self.keys.home
        self.res = Resolver(storage.db, self.keys, user.id)
        self._policies: dict[int, tuple] = {}
        self.policy = retention.Policy.from_config(self.cfg.retention, user.settings.get("retention"))
        self.exclude = tuple(user.settings.get("exclude", self.cfg.retention.exclude))

    def close(self) -> None:
        self.keys.close()
        self.home = None

    # -- key domains and permissions -------------------------------------------------------
    def _recheck(self, dom: Domain) -> None:
        """Raise PermissionDenied if the principal lost a shared folder after
        opening something in it (an open read handle answers the next read)."""
        with self._tx() as c:
            self.keys.domain(c, dom.id)

    @contextlib.contextmanager
    def _tx(self, write: bool = False):
        """A metadata transaction; refusals noted inside it are recorded as
        audit events afterwards, even though the transaction rolls back."""
        try:
            with (self.st.db.write() if write else self.st.db.read()) as c:
                yield c
        finally:
            pending, self._refused = self._refused, []
            for what, dom_id in pending:
                self.st.audit("share_refused", user_id=self.user.id, actor="user", domain=dom_id,
                              operation=what.split(" ", 1)[0])
            self.res.keep_mount_names()

    # -- the policy gate: every call that changes something passes here, once per target ---------
    def _by_layout(self, op: Op, parts) -> Kind:
        """What the layout alone refuses, before anything is read; returns the
        kind of the place (META standing for anything in /.coffer)."""
        kind = self.res.place(parts)
        if not policy.possible(op, kind):
            policy.check(op, kind, policy.OWNER, paths.join(parts))
        return kind

    def _allow(self, c, op: Op, kind: Kind, parts, grant: str | None = None, node=None) -> None:
        """Check the policy table for one operation on one target; a refusal
        to a collaborator is audited once the transaction ends."""
        if grant is None and node is not None and policy.needs_grant(op, kind):
            grant = self.keys.of(c, node).permission
        dom_id = node["domain_id"] if node is not None else self.home.id
        policy.check(op, kind, grant or policy.OWNER, paths.join(parts),
                     lambda o: self._refused.append((o.value, dom_id)))

    def _target(self, c, op: Op, parts) -> Target:
        """Resolve a path for an operation and check the policy."""
        kind = self._by_layout(op, parts)
        if kind is Kind.META:
            it = self.res.resolve(c, parts)
        else:
            it = self.res.node_target(self.res.live(c, parts), parts, kind, c=c)
        self._allow(c, op, it.kind, parts, it.grant, it.node)
        return it

    def _entry(self, it: Target) -> Entry:
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
                     writable=it.kind in LIVE_KINDS and policy.allowed(Op.CREATE, Kind.LIVE, grant),
                     virtual=it.virtual, removable=policy.allowed(Op.REMOVE, it.kind, grant))

    # -- reading ------------------------------------------------------------------------
    def stat(self, path) -> Entry:
        parts = paths.parse(path)
        with self._tx() as c:
            return self._entry(self.res.resolve(c, parts))

    def exists(self, path) -> bool:
        try:
            self.stat(path)
            return True
        except (NotFound, NotADirectory):
            return False

    def list(self, path) -> list[Entry]:
        parts = paths.parse(path)
        with self._tx() as c:
            it = self.res.resolve(c, parts)
            if not it.is_dir:
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            return [self._entry(ch) for ch in self.res.children(c, it)]

    def list_page(self, path, cursor=None, limit: int = 100) -> tuple[list[Entry], object]:
        """A folder's members a page at a time: `cursor` is None for the
        first page, then what the previous page returned; the last page
        returns None. A live folder is read by node id from where the last
        page ended, so a holder keeps a cursor, not the listing, and members
        added meanwhile appear once; other (virtual) folders are small and
        are sliced. The path is resolved, and access checked, on every page."""
        parts = paths.parse(path)
        with self._tx() as c:
            it = self.res.resolve(c, parts)
            if not it.is_dir:
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            paged = self.res.page(c, it, cursor or 0, limit)
            if paged is not None:
                return [self._entry(i) for i in paged[0]], paged[1]
            start = -(cursor or 0)            # a slice's cursor is a negative index
            page = self.res.children(c, it)[start:start + limit]
            more = len(page) == limit
            return [self._entry(i) for i in page], -(start + limit) if more else None

    def walk(self, path="/"):
        """Every entry below a folder, each folder followed by its contents,
        names in order (folders shared with the principal are not entered).
        One query per folder, from the folder's node rather than its path, and
        a stack of its own: any depth of tree walks, in time linear in its size."""
        def members(it):
            with self._tx() as c:
                return iter(sorted(self.res.children(c, it), key=lambda ch: ch.name))
        with self._tx() as c:
            top = self.res.resolve(c, paths.parse(path))
        stack = [members(top)] if top.is_dir else []
        while stack:
            it = next(stack[-1], None)
            if it is None:
                stack.pop()
                continue
            yield self._entry(it)
            if it.is_dir and it.kind is not Kind.SHARED:
                stack.append(members(it))

    def list_with_props(self, path) -> list[tuple[Entry, dict[str, bytes]]]:
        """A folder's members, each with its dead properties as `get_props`
        gives them: one transaction, and one query per PROPS_BATCH members
        for the properties instead of a path lookup per member."""
        parts = paths.parse(path)
        with self._tx() as c:
            it = self.res.resolve(c, parts)
            if not it.is_dir:
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            children = self.res.children(c, it)
            ids = [ch.node["id"] for ch in children if ch.kind in NODE_KINDS]
            rows: dict[int, list] = {}
            for i in range(0, len(ids), PROPS_BATCH):
                for r in t.props_of_nodes(c, ids[i:i + PROPS_BATCH]):
                    rows.setdefault(r["node_id"], []).append(r)
            out = []
            for ch in children:
                found = rows.get(ch.node["id"]) if ch.kind in NODE_KINDS else None
                out.append((self._entry(ch), self._open_props(self.keys.of(c, ch.node).keys, found) if found else {}))
        return out

    def _reader_for(self, c, it: Target) -> Reader:
        if it.is_dir:
            raise IsADirectory(f"{paths.join(it.parts)} is a folder")
        v = it.version if it.version is not None else (
            t.version(c, it.node["version_id"]) if it.node["version_id"] else None)
        if v is None:
            v = {"id": 0, "size": 0}
            rows = []
            dom = self.home
        else:
            rows = t.version_chunk_rows(c, v["id"])
            dom = self.keys.domain(c, v["domain_id"])
        return Reader(self, dom, v, [dict(r) for r in rows], paths.join(it.parts))

    def open_read(self, path) -> Reader:
        parts = paths.parse(path)
        with self._tx() as c:
            return self._reader_for(c, self.res.resolve(c, parts))

    def read_bytes(self, path) -> bytes:
        with self.open_read(path) as r:
            return r.read()

    def hashes(self, path, compute=()) -> dict:
        """Whole-file checksums of the file's version ({"md5": hex, "sha1": …,
        "sha256": …}) as far as they are known. Those named in `compute` that
        are not known yet are computed by reading the version, and kept."""
        parts = paths.parse(path)
        with self._tx() as c:
            it = self.res.resolve(c, parts)
            if it.is_dir:
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            v = it.version or (t.version(c, it.node["version_id"]) if it.node["version_id"] else None)
            if v is None:
                return {algo: hashlib.new(algo).hexdigest() for algo in ("md5", "sha1", "sha256")}
            keys = self.keys.domain(c, v["domain_id"]).keys
            known = json.loads(crypto.open_sealed(keys.meta, bytes(v["hashes_enc"]), b"hashes", "hashes"))
            missing = [algo for algo in compute if algo not in known]
            if missing:
                reader = self._reader_for(c, it)
        if not missing:
            return known
        hs = {algo: hashlib.new(algo) for algo in missing}
        with reader:
            for data in reader.iter_range(0):
                for h in hs.values():
                    h.update(data)
        computed = {algo: h.hexdigest() for algo, h in hs.items()}
        with self._tx(True) as c:
            row = t.version(c, v["id"])
            if row is not None:     # purged meanwhile: nothing to keep
                known = json.loads(crypto.open_sealed(keys.meta, bytes(row["hashes_enc"]), b"hashes", "hashes"))
                known.update(computed)
                t.update_version(c, v["id"], hashes_enc=crypto.seal(keys.meta, json.dumps(known).encode(), b"hashes"))
        return {**known, **computed}

    def quota(self) -> Quota:
        """The principal's own quota: bytes used (after dedup, versions
        included) in everything it owns, the limit, what is left."""
        with self._tx() as c:
            return self._quota_of(c, self.user.id)

    def _quota_of(self, c, owner_id: int) -> Quota:
        used = uq.owner_usage(c, owner_id)
        from .accounts import User
        limit = self.st.accounts.quota_limit(User.from_row(uq.user_by_id(c, owner_id)))
        return Quota(used, limit, None if limit is None else max(0, limit - used))

    def _quota_room(self, dom=None) -> int | None:
        with self._tx() as c:
            return self._quota_of(c, (dom or self.home).owner_id).available

    def _check_quota(self, c, dom: Domain) -> None:
        q = self._quota_of(c, dom.owner_id)
        if q.limit is not None and q.used > q.limit:
            self._quota_full(dom)

    def _quota_full(self, dom: Domain):
        raise QuotaExceeded("the storage quota is full: delete files or purge old versions, or ask for a "
                            "larger plan; nothing was changed"
                            + ("" if dom.owner_id == self.user.id else " (the shared folder's owner's quota)"))

    def _policy(self, c, dom: Domain):
        """Retention policy and exclusion patterns of the domain's owner."""
        if dom.owner_id == self.user.id:
            return self.policy, self.exclude
        if dom.owner_id not in self._policies:
            settings = dict(uq.user_by_id(c, dom.owner_id)["settings"] or {})
            self._policies[dom.owner_id] = (
                retention.Policy.from_config(self.cfg.retention, settings.get("retention")),
                tuple(settings.get("exclude", self.cfg.retention.exclude)))
        return self._policies[dom.owner_id]

    def versions(self, path) -> list[VersionInfo]:
        parts = paths.parse(path)
        if paths.is_meta(parts):
            raise PermissionDenied("versions are listed for files in the live tree")
        with self._tx() as c:
            rows = self.res.path_versions(c, parts)
            authors = {}
            for v, _, _ in rows:
                if v["author_id"] and v["author_id"] not in authors:
                    u = uq.user_by_id(c, v["author_id"])
                    authors[v["author_id"]] = u["name"] if u else None
        return [VersionInfo(v["id"], v["size"], v["created_us"] / 1e6, v["mtime_us"] / 1e6,
                            authors.get(v["author_id"]), g.live and v["id"] == g.node["version_id"], name)
                for v, g, name in rows]

    # -- writing ---------------------------------------------------------------------------
    def _is_excluded(self, c, dom: Domain, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self._policy(c, dom)[1])

    def _parent_for_write(self, c, parts):
        """The folder a new entry (or a file's new content) goes into, and its
        domain, checked for `create` at that place."""
        kind = self._by_layout(Op.CREATE, parts)
        parent = self.res.live(c, parts[:-1])
        if parent["kind"] != "d":
            raise NotADirectory(f"{paths.join(parts[:-1])} is a file, not a folder")
        dom = self.keys.of(c, parent)
        self._allow(c, Op.CREATE, kind, parts, dom.permission, parent)
        if len(parts) > paths.MAX_DEPTH and t.child(c, parent["id"], crypto.name_lookup(
                dom.keys, parent["id"], parts[-1])) is None:
            paths.check_depth(parts)          # nothing new deeper than the limit
        return parent, dom

    def open_write(self, path, mtime: float | None = None, exclusive: bool = False,
                   checksums: bool = False, expect: dict | None = None) -> Writer:
        """A write stream for `path`, published by its `commit()`.

        Whole-file checksums of a large stream are computed while writing
        only with `checksums`, or `expect` ({"sha1": hex, ...}: what the client
        says it sent; a mismatch refuses the upload); otherwise on first request."""
        parts = paths.parse(path)
        with self._tx() as c:
            parent, dom = self._parent_for_write(c, parts)
            cur = t.child(c, parent["id"], crypto.name_lookup(dom.keys, parent["id"], parts[-1]))
            if cur is not None and cur["kind"] == "d":
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            if cur is not None and exclusive:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
        return Writer(self, dom, parts, None if mtime is None else int(mtime * 1e6),
                      self.cfg.storage.chunk_size, exclusive, checksums, expect)

    def write_bytes(self, path, data: bytes, mtime: float | None = None) -> Entry:
        w = self.open_write(path, mtime)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit()

    def open_random(self, path, truncate: bool = False, create: bool = True,
                    exclusive: bool = False) -> RandomFile:
        parts = paths.parse(path)
        base = e = None
        with self._tx() as c:
            _, dom = self._parent_for_write(c, parts)
            # A write far past the end leaves a hole that reads as zeros and
            # dedups to nothing, but publishing walks every chunk of it: one
            # byte at 1 TiB cost 400 s of CPU. No file may outgrow its
            # owner's whole quota.
            limit = self._quota_of(c, dom.owner_id).limit
        try:
            e = self.stat(path)
            if e.is_dir:
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            if exclusive:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
        except (NotFound,):
            if not create:
                raise
        if not truncate and e is not None and e.size:
            base = self.open_read(path)
        return RandomFile(self, lambda: self.open_write(path), base, self.cfg.spool_dir, max_size=limit,
                          owner_id=dom.owner_id, quota_room=lambda: self._quota_room(dom))

    def _find_chunk(self, domain, dedup_id):
        return t.chunk_id_by_dedup(self.st.db, domain.id, dedup_id)

    def _chunk_plaintext(self, domain, pc) -> bytes:
        if pc.key is not None:
            stored = self.st.blobs.get(pc.blob_name, pc.blob_offset, pc.stored_size)
            return crypto.decrypt_chunk(pc.key, stored, pc.plain_size)
        with self._tx() as c:
            row = t.chunk_by_dedup(c, domain.id, pc.dedup_id)
        key = crypto.open_sealed(domain.keys.wrap, bytes(row["wrapped_key"]), pc.dedup_id.encode())
        stored = self.st.blobs.get(row["blob_name"], row["blob_offset"], row["stored_size"])
        return crypto.decrypt_chunk(key, stored, row["plain_size"])

    def _chunk_location(self, chunk_id: int) -> tuple[str, int] | None:
        with self._tx() as c:
            return t.chunk_location(c, chunk_id)

    def _publish(self, w: Writer) -> Entry:
        """Make a finished stream the file's current version, in one transaction."""
        parts = w.parts
        now = meta.now_us()
        drop_blobs: list[str] = []
        with self._tx(True) as c:
            parent, dom = self._parent_for_write(c, parts)
            if dom.id != w.domain.id:
                raise Conflict(f"{paths.join(parts[:-1])} moved while the upload ran; upload again")
            lookup = crypto.name_lookup(dom.keys, parent["id"], parts[-1])
            cur = t.child(c, parent["id"], lookup)
            if cur is not None and cur["kind"] == "d":
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            if cur is not None and w.exclusive:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
            ids: dict[str, int] = {}
            used_blobs: set[str] = set()
            existing = t.chunks_by_dedup(c, dom.id, {pc.dedup_id for pc in w.chunks})
            new_rows = []
            for pc in w.chunks:
                if pc.dedup_id in ids:
                    continue
                row = existing.get(pc.dedup_id)
                if row is not None:          # also when a concurrent upload stored it first
                    ids[pc.dedup_id] = row["id"]
                    continue
                if pc.blob_name is None:
                    raise Conflict("a chunk this upload relied on was purged meanwhile; retry the upload")
                used_blobs.add(pc.blob_name)
                ids[pc.dedup_id] = 0
                new_rows.append(dict(domain_id=dom.id, dedup_id=pc.dedup_id, blob_name=pc.blob_name,
                                     blob_offset=pc.blob_offset, plain_size=pc.plain_size,
                                     stored_size=pc.stored_size,
                                     wrapped_key=pc.wrapped_key, stored_hash=pc.stored_hash,
                                     refcount=0, created_us=now))
            ids.update(t.insert_chunks(c, new_rows))
            # blobs this upload wrote that hold none of its new chunks (a
            # concurrent upload stored the same content first)
            drop_blobs += [name for name in w.stored_blobs() if name not in used_blobs]
            refs = Counter(ids[pc.dedup_id] for pc in w.chunks)
            gained = t.add_refs(c, refs)
            t.add_usage(c, dom.id, gained)
            if gained:
                self._check_quota(c, dom)
            mtime = w.mtime_us or now
            hashes = crypto.seal(dom.keys.meta, json.dumps(w.hashes()).encode(), b"hashes")
            if cur is None:
                nid = t.insert_node(c, domain_id=dom.id, parent_id=parent["id"],
                                    name_enc=crypto.encrypt_name(dom.keys, parts[-1]), name_lookup=lookup,
                                    kind="f", mode=None, created_us=now, mtime_us=mtime, changed_us=now,
                                    size=w.size, excluded=self._is_excluded(c, dom, parts[-1]))
            else:
                nid = cur["id"]
            vid = t.insert_version(c, node_id=nid, domain_id=dom.id, size=w.size, stored_bytes=gained,
                                   created_us=now, mtime_us=mtime, author_id=self.user.id, hashes_enc=hashes)
            t.add_version_chunks(c, vid, [ids[pc.dedup_id] for pc in w.chunks])
            t.update_node(c, nid, version_id=vid, size=w.size, mtime_us=mtime, changed_us=now)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            drop_blobs += self._apply_retention(c, dom, nid, now)
            node = t.node(c, nid)
            item = self.res.node_target(node, parts, c=c)
        self.st.delete_blobs(drop_blobs)
        return self._entry(item)

    def _apply_retention(self, c, dom, node_id, now) -> list[str]:
        node = t.node(c, node_id)
        rows = t.versions_of(c, node_id)
        rows = [r for r in rows if r["id"] == node["version_id"]] + \
               [r for r in rows if r["id"] != node["version_id"]]
        if node["excluded"]:
            keep = {0}
        else:
            # a collaborator's write never drops what the owner's age tiers keep
            keep = retention.thin([r["created_us"] for r in rows], now, self._policy(c, dom)[0],
                                  cap=dom.owner_id == self.user.id)
        drop = [r["id"] for i, r in enumerate(rows) if i not in keep]
        return drop_versions(c, dom.id, drop) if drop else []

    def mkdir(self, path) -> Entry:
        parts = paths.parse(path)
        now = meta.now_us()
        with self._tx(True) as c:
            parent, dom = self._parent_for_write(c, parts)
            lookup = crypto.name_lookup(dom.keys, parent["id"], parts[-1])
            if t.child(c, parent["id"], lookup) is not None:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
            nid = t.insert_node(c, domain_id=dom.id, parent_id=parent["id"],
                                name_enc=crypto.encrypt_name(dom.keys, parts[-1]), name_lookup=lookup,
                                kind="d", created_us=now, mtime_us=now, changed_us=now, size=0)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            item = self.res.node_target(t.node(c, nid), parts, c=c)
        return self._entry(item)

    def makedirs(self, path) -> None:
        parts = paths.parse(path)
        for i in range(1, len(parts) + 1):
            try:
                self.mkdir(paths.join(parts[:i]))
            except AlreadyExists:
                pass

    def _trash(self, c, node, now) -> None:
        """Move a subtree to the trash, remembering its path in its domain."""
        dom = self.keys.of(c, node)
        rel = self.res.domain_path(c, node)
        t.update_node(c, node["id"], trashed_us=now, changed_us=now,
                      trash_path_enc=crypto.seal(dom.keys.names, paths.join(rel).encode(), b"trash"))

    def delete(self, path) -> None:
        """Move a file or folder (with everything in it) to the trash; in
        /.coffer, purge for good."""
        parts = paths.parse(path)
        if paths.is_meta(parts):
            return self._purge_meta(parts)
        now = meta.now_us()
        with self._tx(True) as c:
            node = self._target(c, Op.REMOVE, parts).node
            self._trash(c, node, now)
            t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)

    def rmdir(self, path) -> None:
        """Delete an empty folder (SFTP semantics)."""
        parts = paths.parse(path)
        self._by_layout(Op.REMOVE, parts)
        with self._tx() as c:
            node = self.res.live(c, parts)
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            if t.has_children(c, node["id"]):
                raise DirectoryNotEmpty(f"{paths.join(parts)} is not empty")
        self.delete(path)

    def move(self, src, dst, overwrite: bool = True) -> Entry:
        """Rename or move a file or folder; its history goes along. Out of
        /.coffer/trash it restores, as `copy` does. A collaborator moving
        something out of a shared folder into another owner's tree gets a
        copy of it as it is now: the original, with every version, goes to
        the folder owner's trash (only the owner may destroy their history)."""
        sp, dp = paths.parse(src), paths.parse(dst)
        if paths.is_meta(sp) and sp[1:2] == ("trash",) and len(sp) > 2:
            return self.copy(src, dst, overwrite)
        self._by_layout(Op.REMOVE, sp)
        self._by_layout(Op.CREATE, dp)
        if dp[:len(sp)] == sp:
            if dp == sp:
                return self.stat(dst)
            raise Conflict(f"cannot move {paths.join(sp)} into itself")
        if sp[:len(dp)] == dp:
            raise Conflict(f"cannot replace {paths.join(dp)}: it holds {paths.join(sp)}")
        now = meta.now_us()
        drop: list[str] = []
        with self._tx(True) as c:
            node = self._target(c, Op.REMOVE, sp).node
            if len(dp) > len(sp):             # deeper: would its deepest entry pass the limit?
                paths.check_depth(dp, t.subtree_height(c, node["id"]) if node["kind"] == "d" else 1)
            src_parent = t.node(c, node["parent_id"])
            src_dom = self.keys.of(c, src_parent)
            parent, dst_dom = self._parent_for_write(c, dp)
            lookup = crypto.name_lookup(dst_dom.keys, parent["id"], dp[-1])
            target = t.child(c, parent["id"], lookup)
            if target is not None:
                if not overwrite:
                    raise AlreadyExists(f"{paths.join(dp)} already exists")
                self._allow(c, Op.REMOVE, self.res.place(dp), dp, node=target)
                self._trash(c, target, now)
            if src_dom.owner_id != self.user.id and dst_dom.owner_id != src_dom.owner_id:
                drop += self._copy_out(c, node, sp, src_dom, parent["id"], dst_dom, dp, now)
            else:
                drop += self._relocate(c, node, src_dom, parent["id"], dst_dom, dp, now, sp)
                t.add_history(c, node["id"], node["parent_id"], bytes(node["name_enc"]), now)
            item = self.res.node_target(t.child(c, parent["id"], lookup), dp,
                                        Kind.MOUNT if is_mount(dp) else Kind.LIVE, c=c)
        self.st.delete_blobs(drop)
        return self._entry(item)

    def _relocate(self, c, node, src_dom: Domain, parent_id: int, dst_dom: Domain, dp, now, sp) -> list[str]:
        """Give a node (with what it holds) a new parent and name. Into another
        key domain its keys and names are re-wrapped; content is not touched."""
        drop: list[str] = []
        is_root = node["domain_id"] != src_dom.id          # a shared folder's top
        if is_root and dst_dom.id != self.home.id:
            raise Conflict("a shared folder cannot be moved into another shared folder")
        if src_dom.id != dst_dom.id and not is_root:
            ids = t.subtree_ids(c, node["id"])
            if t.roots_among(c, ids[1:]):
                raise Conflict(f"{paths.join(sp)} holds a shared folder; it cannot move into or out of "
                               "another shared folder")
            drop += rekey.move_subtree(c, ids, node["id"], src_dom.id, src_dom.keys, dst_dom.id,
                                       dst_dom.keys, now, keep_top_name=True)
        excluded = self._is_excluded(c, dst_dom, dp[-1]) if node["kind"] == "f" else False
        t.update_node(c, node["id"], parent_id=parent_id, changed_us=now, excluded=excluded,
                      name_lookup=crypto.name_lookup(dst_dom.keys, parent_id, dp[-1]),
                      name_enc=crypto.encrypt_name(dst_dom.keys, dp[-1]))
        t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)
        t.update_node(c, parent_id, changed_us=now, mtime_us=now)
        if src_dom.owner_id != dst_dom.owner_id:
            self._check_quota(c, dst_dom)
        return drop

    def _copy_out(self, c, node, sp, src_dom: Domain, parent_id: int, dst_dom: Domain, dp, now) -> list[str]:
        """A collaborator's move out of a shared folder into another owner's
        tree: a copy of what is there now, and the original to the trash."""
        drop = self._copy_item(c, self.res.node_target(node, sp, c=c), parent_id, dst_dom, dp, None, now, True)
        self._trash(c, node, now)
        t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)
        t.update_node(c, parent_id, changed_us=now, mtime_us=now)
        self._check_quota(c, dst_dom)
        uq.audit(c, "share_moved_out", user_id=self.user.id, actor="user",
                 detail={"domain": src_dom.id, "owner": src_dom.owner_id})
        return drop

    def _untrash(self, c, node, parent_id: int, dom: Domain, dp, now) -> list[str]:
        """Restore from the trash: the same node comes back at `dp`, so every
        version of every file in it comes along."""
        node = t.node(c, node["id"])
        src_dom = self.keys.of(c, t.node(c, node["parent_id"]))
        drop = self._relocate(c, node, src_dom, parent_id, dom, dp, now, dp)
        name = bytes(node["name_enc"])
        if node["trashed_us"] is not None:     # where it was until deleted, then nowhere until now
            t.add_history(c, node["id"], node["parent_id"], name, node["trashed_us"])
            t.add_history(c, node["id"], None, name, now)
            t.update_node(c, node["id"], trashed_us=None, trash_path_enc=None)
        else:                                  # out of a deleted folder
            t.add_history(c, node["id"], node["parent_id"], name, now)
        return drop

    def copy(self, src, dst, overwrite: bool = True, recursive: bool = True) -> Entry:
        """Copy a file or folder; content is shared, not re-encrypted. A
        source in /.coffer restores: a version or a snapshot as a copy (a new
        version), a trash entry by bringing back the deleted file or folder
        itself, with its whole history (it leaves the trash)."""
        sp, dp = paths.parse(src), paths.parse(dst)
        self._by_layout(Op.CREATE, dp)
        if dp[:len(sp)] == sp:
            raise Conflict(f"cannot copy {paths.join(sp)} into itself")
        if sp[:len(dp)] == dp:
            raise Conflict(f"cannot replace {paths.join(dp)}: it holds {paths.join(sp)}")
        now = meta.now_us()
        drop: list[str] = []
        with self._tx(True) as c:
            item = self.res.resolve(c, sp)
            if item.is_dir and recursive and item.node is not None:
                paths.check_depth(dp, t.subtree_height(c, item.node["id"]))
            parent, dom = self._parent_for_write(c, dp)
            target = t.child(c, parent["id"], crypto.name_lookup(dom.keys, parent["id"], dp[-1]))
            if target is not None:
                if not overwrite:
                    raise AlreadyExists(f"{paths.join(dp)} already exists")
                if target["kind"] == "d" or item.is_dir or self._untrashes(item, recursive):
                    self._allow(c, Op.REMOVE, self.res.place(dp), dp, node=target)
                    self._trash(c, target, now)
                    target = None
            drop += self._copy_item(c, item, parent["id"], dom, dp, target, now, recursive)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            node = t.child(c, parent["id"], crypto.name_lookup(dom.keys, parent["id"], dp[-1]))
            self._check_quota(c, dom)
            out = self.res.node_target(node, dp, c=c)
        self.st.delete_blobs(drop)
        return self._entry(out)

    def _copy_item(self, c, item: Target, parent_id, dom: Domain, dparts, target, now, recursive) -> list[str]:
        """Copy an item, and with `recursive` everything below it: a walk with
        its own stack, so no depth of tree runs into the interpreter's
        recursion limit."""
        drop: list[str] = []
        todo = [(item, parent_id, dparts, target)]
        while todo:
            it, pid, dp, tgt = todo.pop()
            if self._untrashes(it, recursive):
                drop += self._untrash(c, it.node, pid, dom, dp, now)
            elif it.is_dir:
                nid = self._copy_folder(c, it, pid, dom, dp[-1], now)
                if recursive:
                    todo += [(ch, nid, dp + (ch.name,), None) for ch in self.res.children(c, it)]
            else:
                drop += self._copy_file(c, it, pid, dom, dp[-1], tgt, now)
        return drop

    def _copy_folder(self, c, item: Target, parent_id, dom: Domain, name: str, now) -> int:
        nid = t.insert_node(c, domain_id=dom.id, parent_id=parent_id,
                            name_enc=crypto.encrypt_name(dom.keys, name),
                            name_lookup=crypto.name_lookup(dom.keys, parent_id, name), kind="d",
                            created_us=now, mtime_us=item.mtime_us or now, changed_us=now, size=0)
        if item.kind in NODE_KINDS:
            self._copy_props(c, item.node, nid, dom)
        return nid

    def _copy_file(self, c, item: Target, parent_id, dom: Domain, name: str, target, now) -> list[str]:
        lookup = crypto.name_lookup(dom.keys, parent_id, name)
        src_node = item.node if item.kind in NODE_KINDS else None
        v = item.version if item.version is not None else (
            t.version(c, item.node["version_id"]) if item.node["version_id"] else None)
        if target is None:
            nid = t.insert_node(c, domain_id=dom.id, parent_id=parent_id,
                                name_enc=crypto.encrypt_name(dom.keys, name), name_lookup=lookup, kind="f",
                                created_us=now, mtime_us=item.mtime_us or now, changed_us=now,
                                size=item.size, excluded=self._is_excluded(c, dom, name),
                                mode=item.node["mode"] if item.node is not None else None)
        else:
            nid = target["id"]
        if src_node is not None:
            self._copy_props(c, src_node, nid, dom)
        if v is None:
            t.update_node(c, nid, size=0, mtime_us=item.mtime_us or now, changed_us=now)
            return []
        src_dom = self.keys.domain(c, v["domain_id"])
        rows = t.version_chunk_rows(c, v["id"])
        if src_dom.id == dom.id:
            chunk_ids = [r["id"] for r in rows]
            hashes = v["hashes_enc"]
        else:             # into another key domain: re-wrap chunk keys, content untouched
            mapping: dict[int, int] = {}
            for r in rows:
                if r["id"] not in mapping:
                    mapping[r["id"]] = rekey.import_chunk(c, t.chunk(c, r["id"], lock=True), src_dom.keys, dom.id,
                                                          dom.keys, now)
            chunk_ids = [mapping[r["id"]] for r in rows]
            hashes = crypto.seal(dom.keys.meta, crypto.open_sealed(src_dom.keys.meta, bytes(v["hashes_enc"]),
                                                                   b"hashes", "hashes"), b"hashes")
        gained = t.add_refs(c, Counter(chunk_ids))
        t.add_usage(c, dom.id, gained)
        vid = t.insert_version(c, node_id=nid, domain_id=dom.id, size=v["size"], stored_bytes=gained,
                               created_us=now, mtime_us=v["mtime_us"], author_id=self.user.id,
                               hashes_enc=hashes)
        t.add_version_chunks(c, vid, chunk_ids)
        t.update_node(c, nid, version_id=vid, size=v["size"], mtime_us=v["mtime_us"], changed_us=now)
        return self._apply_retention(c, dom, nid, now)

    @staticmethod
    def _untrashes(item: Target, recursive: bool) -> bool:
        """Is copying this a restore from the trash (of the item itself, not a copy)?"""
        return item.kind is Kind.TRASHED and (recursive or not item.is_dir)

    def _copy_props(self, c, src_node, dst_id: int, dom: Domain) -> None:
        src_dom = self.keys.of(c, src_node)
        if src_dom.id == dom.id:
            t.copy_props(c, src_node["id"], dst_id)
            return
        for r in t.props(c, src_node["id"]):
            name = crypto.open_sealed(src_dom.keys.meta, bytes(r["name_enc"]), b"prop-name", "property").decode()
            value = crypto.open_sealed(src_dom.keys.meta, bytes(r["value_enc"]), b"prop-value", "property")
            t.set_prop_charged(c, dom.id, dst_id, crypto.name_lookup(dom.keys, dst_id, "prop:" + name),
                               crypto.seal(dom.keys.meta, name.encode(), b"prop-name"),
                               crypto.seal(dom.keys.meta, value, b"prop-value"))

    def set_mtime(self, path, mtime: float) -> None:
        parts = paths.parse(path)
        with self._tx(True) as c:
            node = self._target(c, Op.CHANGE, parts).node
            t.update_node(c, node["id"], mtime_us=int(mtime * 1e6), changed_us=meta.now_us())

    def set_mode(self, path, mode: int) -> None:
        parts = paths.parse(path)
        with self._tx(True) as c:
            node = self._target(c, Op.CHANGE, parts).node
            t.update_node(c, node["id"], mode=mode & 0o7777, changed_us=meta.now_us())

    # -- dead properties ------------------------------------------------------------------------
    def get_props(self, path) -> dict[str, bytes]:
        parts = paths.parse(path)
        with self._tx() as c:
            it = self.res.resolve(c, parts)
            if it.kind not in NODE_KINDS:
                return {}
            rows = t.props(c, it.node["id"])
            keys = self.keys.of(c, it.node).keys
        return self._open_props(keys, rows)

    @staticmethod
    def _open_props(keys, rows) -> dict[str, bytes]:
        return {crypto.open_sealed(keys.meta, bytes(r["name_enc"]), b"prop-name", "property").decode():
                crypto.open_sealed(keys.meta, bytes(r["value_enc"]), b"prop-value", "property") for r in rows}

    def set_props(self, path, changes: dict, dry_run: bool = False) -> None:
        """Set (or, with None, remove) dead properties, all or none. They are
        charged to the quota as stored (tree.prop_cost) and limited: a name
        and value of PROP_VALUE_BYTES together, PROPS_PER_NODE properties
        per file or folder, PROP_BYTES_PER_ACCOUNT for all of the owner's.
        `dry_run` checks without writing."""
        parts = paths.parse(path)
        with self._tx(not dry_run) as c:
            node = self._target(c, Op.CHANGE, parts).node
            dom = self.keys.of(c, node)
            keys = dom.keys
            have = {r["name_lookup"]: t.prop_cost(bytes(r["name_enc"]), bytes(r["value_enc"]))
                    for r in t.props(c, node["id"])}
            sealed, delta = {}, 0
            for name, value in changes.items():
                if value is not None and len(name.encode()) + len(value) > PROP_VALUE_BYTES:
                    raise QuotaExceeded(f"the property {name} is {len(value)} bytes long: a property's name and "
                                        f"value may take {PROP_VALUE_BYTES} bytes; nothing was changed")
                lookup = crypto.name_lookup(keys, node["id"], "prop:" + name)
                name_enc = crypto.seal(keys.meta, name.encode(), b"prop-name")
                value_enc = None if value is None else crypto.seal(keys.meta, bytes(value), b"prop-value")
                delta += (0 if value_enc is None else t.prop_cost(name_enc, value_enc)) - have.pop(lookup, 0)
                if value_enc is not None:
                    have[lookup] = 0            # counted in delta; kept for the count below
                sealed[lookup] = (name_enc, value_enc)
            if len(have) > PROPS_PER_NODE:
                raise QuotaExceeded(f"{paths.join(parts)} would have {len(have)} properties; a file or folder "
                                    f"may have {PROPS_PER_NODE}; nothing was changed")
            if delta > 0:
                doms = [uq.home_domain(c, dom.owner_id)["id"]] + [
                    r["id"] for r in uq.owned_share_domains(c, dom.owner_id)]
                total = t.prop_bytes(c, doms) + delta
                if total > PROP_BYTES_PER_ACCOUNT:
                    raise QuotaExceeded(f"properties would take {total} bytes; an account's may take "
                                        f"{PROP_BYTES_PER_ACCOUNT}: remove some; nothing was changed")
                q = self._quota_of(c, dom.owner_id)
                if q.limit is not None and q.used + delta > q.limit:
                    self._quota_full(dom)
            if dry_run:
                return
            for lookup, (name_enc, value_enc) in sealed.items():
                t.set_prop_charged(c, dom.id, node["id"], lookup, name_enc, value_enc)

    # -- purging ----------------------------------------------------------------------------------
    def _purge_meta(self, parts) -> None:
        with self._tx(True) as c:
            it = self._target(c, Op.PURGE, parts)
            if it.kind is Kind.VERSION:
                blobs, count = self._purge_version(c, it, parts), 1
            elif it.kind is Kind.HISTORY:
                blobs, count = self._purge_path(c, parts[2:], it.ref)
            elif it.kind is Kind.TRASHED:
                blobs, count = purge_nodes(c, [it.node["id"]])
            else:
                st, sub = it.ref
                blobs, count = purge_nodes(c, [n["id"] for n, tp in self.res.trash_entries(c, st)
                                                     if tp[:len(sub)] == sub])
            self._audit_purge(c, it.node, parts[1], count)
        self.st.delete_blobs(blobs)

    def _audit_purge(self, c, node, what: str, versions: int) -> None:
        uq.audit(c, "history_purged", user_id=self.user.id, actor="user",
                 detail={"domain": node["domain_id"] if node else self.home.id, "from": what, "versions": versions})

    def _purge_version(self, c, it: Target, parts) -> list[str]:
        """Purge exactly one version. A deleted file's newest version may go
        too: the one before it becomes what its trash entry holds, and a
        deleted file left without versions leaves the trash."""
        gen, vid = it.ref, it.version["id"]
        node = t.node(c, gen.id)
        if node["version_id"] != vid:
            return drop_versions(c, it.version["domain_id"], [vid])
        if gen.live:
            raise Conflict("this is the file's current version: delete the file itself to move it to "
                           f"the trash, or delete {paths.join(parts[:-1])} to purge it with its history")
        older = [v for v in t.versions_of(c, node["id"]) if v["id"] != vid]
        if not older:
            return purge_nodes(c, [node["id"]])[0]
        t.update_node(c, node["id"], version_id=older[0]["id"], size=older[0]["size"], mtime_us=older[0]["mtime_us"])
        return drop_versions(c, it.version["domain_id"], [vid])

    def _purge_path(self, c, parts, gens=None) -> tuple[list[str], int]:
        """Purge every file or folder that has lived at a path, with its versions and trash entries."""
        if gens is None:
            try:
                gens = history.Walker(self.res, c).walk(parts)
            except (NotFound, NotADirectory):
                gens = []
        roots, kind = [], self.res.place(parts)
        for g in gens:
            self._allow(c, Op.PURGE, kind, parts, node=g.node)
            roots.append(g.id)
        roots += [n["id"] for n, tp in self.res.trash_entries(c) if tp[:len(parts)] == parts]
        if not roots:
            raise NotFound(f"{paths.join(parts)} is neither in the tree nor in the trash")
        return purge_nodes(c, list(dict.fromkeys(roots)))

    def purge(self, path) -> None:
        """Delete a file or folder with all its versions and trash entries, for good."""
        parts = paths.parse(path)
        if paths.is_meta(parts):
            return self._purge_meta(parts)
        self._by_layout(Op.PURGE, parts)
        with self._tx(True) as c:
            blobs, count = self._purge_path(c, parts)
            self._audit_purge(c, None, "tree", count)
        self.st.delete_blobs(blobs)

    def expire(self, now_us: int | None = None) -> dict:
        """Apply retention to every file the principal owns and empty the trash
        of what is older than trash_days (see `expire_account`)."""
        return expire_account(self.st, self.user, now_us)

    def restore(self, path, version_id: int | None = None, at: float | None = None, to=None) -> Entry:
        """Bring a file or folder back as it was: a version by id, the state at
        a time (snapshot), or the newest trash entry for the path."""
        parts = paths.parse(path)
        dest = to or path
        if version_id is not None:
            with self._tx() as c:
                for v, _, name in self.res.path_versions(c, parts):
                    if v["id"] == version_id:
                        src = paths.join(version_path(parts, name))
                        break
                else:
                    raise NotFound(f"{paths.join(parts)} has no version {version_id}")
            return self.copy(src, dest)
        if at is not None:
            return self.copy(paths.join(snapshot_path(parts, int(at * 1e6))), dest)
        with self._tx() as c:
            found = [(n, tp) for n, tp in self.res.trash_entries(c) if tp == parts]
        if not found:
            raise NotFound(f"{paths.join(parts)} is not in the trash; give a version or a time")
        n, tp = max(found, key=lambda e: e[0]["trashed_us"])
        return self.copy(paths.join(trash_path(tp, n["trashed_us"])), dest)

    # -- sharing ------------------------------------------------------------------------------------
    def share_grant(self, path, grantee: str, permission: str, actor: str = "user", disclose: bool = True) -> dict:
        """Open one of the principal's folders to another account, read-only
        or read/write. The first grant makes the folder a key domain of its
        own (its keys and names are re-wrapped, content is untouched); the
        folder key is sealed to the grantee's public key, so nothing secret
        of the grantee is needed. `actor` names who acted for the audit
        record: the owner ("user") or an administrator ("admin"). With
        `disclose` false, a name that is no active account gets the same
        answer as one that is (see `shares.grant`)."""
        from . import shares
        parts = paths.parse(path)
        with self._tx(True) as c:
            out, blobs = shares.grant(self, c, self._target(c, Op.SHARE, parts).node, parts, grantee, permission,
                                      actor, disclose)
        self.st.delete_blobs(blobs)
        return out

    def share_revoke(self, path, grantee: str, actor: str = "user", disclose: bool = True) -> dict:
        """Take a folder back from one collaborator: their copy of the key goes
        at once, and the folder key is rotated for everything afterwards."""
        from . import shares
        parts = paths.parse(path)
        with self._tx(True) as c:
            return shares.revoke(self, c, self._target(c, Op.SHARE, parts).node, parts, grantee, actor, disclose)

    def share_list(self) -> dict:
        """Folders this principal shares (with whom, how) and receives."""
        from . import shares
        return shares.listing(self)

    def key_domains(self) -> list[tuple[tuple, Domain]]:
        """Every key domain this principal reaches, with the path where its
        top appears in the principal's tree: the home at `()`, folders it
        shares at their paths, folders shared with it under /Shared."""
        with self._tx() as c:
            return self.res.key_domains(c)
