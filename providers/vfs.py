"""The filesystem API: one object per authenticated principal.

Every front-end (WebDAV, SFTP, coffer-admin) calls this and nothing below
it. Paths are validated by providers.paths; permissions are checked here,
once. Besides the live tree there is the hidden read-only tree `/.coffer/`:

  /.coffer/versions/<path>/<time>_<name>   every kept version of each file
  /.coffer/trash/<deleted time>/<path>     deleted files and folders
  /.coffer/snapshots/<UTC time>/<path>     the whole tree as it was then

Copying out of `/.coffer/` restores; deleting in it purges for good.
"""
from __future__ import annotations

import calendar
import fnmatch
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass

from . import crypto, meta, paths, retention
from .errors import (AlreadyExists, Conflict, DirectoryNotEmpty, IsADirectory, NotADirectory,
                     NotFound, PermissionDenied, QuotaExceeded)
from .meta import tree as t
from .meta import users as uq
from .streams import RandomFile, Reader, Writer

log = logging.getLogger(__name__)
READ_ONLY = "/.coffer is read-only: copy from it to restore, delete in it to purge"


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
    writable: bool = True
    virtual: bool = False


@dataclass(frozen=True)
class VersionInfo:
    id: int
    size: int
    created: float
    mtime: float
    author: str | None
    current: bool
    name: str


@dataclass(frozen=True)
class Quota:
    used: int
    limit: int | None
    available: int | None


@dataclass
class Domain:
    id: int
    keys: crypto.DomainKeys
    root_id: int
    owner_id: int
    permission: str


@dataclass
class Item:
    """A resolved path: a live node, or something in the /.coffer tree."""
    name: str
    parts: tuple
    tag: str                      # live | meta | vdir | vfile | version | trashstamp | trashdir | trashnode | snap
    is_dir: bool
    node: dict | None = None
    version: dict | None = None
    ref: object = None
    size: int = 0
    mtime_us: int = 0
    created_us: int = 0

    @property
    def virtual(self) -> bool:
        return self.tag != "live"


def stamp(us: int, precise: bool = True) -> str:
    secs, frac = divmod(us, 1_000_000)
    base = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(secs))
    return f"{base}.{frac:06d}Z" if precise else base + "Z"


_STAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d)[-:](\d\d)[-:](\d\d)(?:\.(\d{1,6}))?Z?$")


def parse_stamp(text: str) -> int:
    m = _STAMP.match(text)
    if not m:
        raise NotFound(f"{text!r} is not a time like 2026-01-31T13-45-00Z")
    y, mo, d, h, mi, s, frac = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    return secs * 1_000_000 + int((frac or "0").ljust(6, "0"))


class Vfs:
    def __init__(self, storage, user, user_key: bytes):
        self.st = storage
        self.user = user
        self._user_key = user_key
        self.cfg = storage.cfg
        with self.st.db.read() as c:
            dom = uq.home_domain(c, user.id)
            mem = uq.membership(c, dom["id"], user.id)
        dk = crypto.unwrap_key(user_key, bytes(mem["wrapped_key"]), b"domain", "home folder key")
        self.home = Domain(dom["id"], crypto.DomainKeys.derive(dk), dom["root_node_id"], user.id, "owner")
        self.policy = retention.Policy.from_config(self.cfg.retention, user.settings.get("retention"))
        self.exclude = tuple(user.settings.get("exclude", self.cfg.retention.exclude))

    def close(self) -> None:
        self._user_key = b""
        self.home = None

    # -- resolution -------------------------------------------------------------------
    def _name(self, node) -> str:
        return crypto.decrypt_name(self.home.keys, bytes(node["name_enc"]))

    def _live_item(self, node, parts, tag="live") -> Item:
        is_dir = node["kind"] == "d" or tag in ("vdir", "vfile")
        return Item(parts[-1] if parts else "", parts, tag, is_dir, node=dict(node),
                    size=node["size"], mtime_us=node["mtime_us"], created_us=node["created_us"])

    def _walk(self, c, start, parts, prefix=()):
        node = start
        for i, name in enumerate(parts):
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(prefix + parts[:i])} is a file, not a folder")
            nxt = t.child(c, node["id"], crypto.name_lookup(self.home.keys, node["id"], name))
            if nxt is None:
                raise NotFound(f"{paths.join(prefix + parts[:i + 1])} does not exist")
            node = nxt
        return node

    def _root(self, c):
        return t.node(c, self.home.root_id)

    def _resolve(self, c, parts) -> Item:
        if paths.is_meta(parts):
            return self._resolve_meta(c, parts)
        return self._live_item(self._walk(c, self._root(c), parts), parts)

    def _meta_dir(self, parts) -> Item:
        return Item(parts[-1], parts, "meta", True, mtime_us=meta.now_us(), created_us=0)

    def _resolve_meta(self, c, parts) -> Item:
        rest = parts[1:]
        if not rest:
            return self._meta_dir(parts)
        kind, rest = rest[0], rest[1:]
        if kind == "versions":
            return self._resolve_versions(c, parts, rest)
        if kind == "trash":
            return self._resolve_trash(c, parts, rest)
        if kind == "snapshots":
            if not rest:
                return self._meta_dir(parts)
            at = parse_stamp(rest[0])
            return self._resolve_snapshot(c, parts, at, rest[1:])
        raise NotFound(f"{paths.join(parts)} does not exist; /.coffer holds versions, trash and snapshots")

    def _resolve_versions(self, c, parts, rest) -> Item:
        node = self._root(c)
        for i, name in enumerate(rest):
            if node["kind"] == "f":
                if i != len(rest) - 1:
                    raise NotFound(f"{paths.join(parts)} does not exist")
                for v in t.versions_of(c, node["id"]):
                    if self._version_name(v, rest[i - 1]) == name:
                        return self._version_item(v, parts, node)
                raise NotFound(f"{paths.join(parts)}: no such version")
            node = self._walk(c, node, (name,), parts[:2 + i])
        if not rest:
            return self._meta_dir(parts)
        return self._live_item(node, parts, "vdir" if node["kind"] == "d" else "vfile")

    def _version_name(self, v, file_name: str) -> str:
        return f"{stamp(v['created_us'])}_{file_name}"

    def _version_item(self, v, parts, node=None) -> Item:
        return Item(parts[-1], parts, "version", False, node=dict(node) if node else None, version=dict(v),
                    size=v["size"], mtime_us=v["mtime_us"], created_us=v["created_us"])

    def _trash_entries(self, c, stamp_us=None):
        """Trashed subtree roots as (node, original path parts)."""
        out = []
        for n in t.trashed(c, self.home.id, stamp_us):
            path = crypto.open_sealed(self.home.keys.names, bytes(n["trash_path_enc"]), b"trash", "trash path")
            out.append((n, paths.parse(path.decode("utf-8"))))
        return out

    def _resolve_trash(self, c, parts, rest) -> Item:
        if not rest:
            return self._meta_dir(parts)
        st = parse_stamp(rest[0])
        entries = self._trash_entries(c, st)
        if not entries:
            raise NotFound(f"{paths.join(parts[:3])}: nothing was deleted at that time")
        sub = rest[1:]
        if not sub:
            return Item(parts[-1], parts, "trashstamp", True, ref=st, mtime_us=st, created_us=st)
        for node, tp in entries:
            if sub[:len(tp)] == tp:
                found = self._walk(c, node, sub[len(tp):], parts[:3 + len(tp)])
                return self._trash_node_item(c, found, parts)
        for node, tp in entries:
            if tp[:len(sub)] == sub:
                return Item(parts[-1], parts, "trashdir", True, ref=(st, sub), mtime_us=st, created_us=st)
        raise NotFound(f"{paths.join(parts)} is not in the trash")

    def _trash_node_item(self, c, node, parts) -> Item:
        it = self._live_item(node, parts, "trashnode")
        return it

    def _location_at(self, c, node, at_us, hist):
        """(parent id, name_enc) of a node at a past time."""
        for h in hist.get(node["id"], ()):
            if h["until_us"] > at_us:
                return h["parent_id"], h["name_enc"]
        return node["parent_id"], node["name_enc"]

    def _exists_at(self, node, at_us) -> bool:
        return node["created_us"] <= at_us and (node["trashed_us"] is None or node["trashed_us"] > at_us)

    def _snapshot_children(self, c, dir_id, at_us):
        cands = t.candidates_at(c, dir_id)
        hist = {}
        for h in t.history_rows(c, [n["id"] for n in cands]):
            hist.setdefault(h["node_id"], []).append(h)
        out = []
        for n in cands:
            if not self._exists_at(n, at_us):
                continue
            parent, name_enc = self._location_at(c, n, at_us, hist)
            if parent != dir_id:
                continue
            name = crypto.decrypt_name(self.home.keys, bytes(name_enc))
            v = None
            if n["kind"] == "f":
                v = t.version_at(c, n["id"], at_us)
                if v is None:
                    continue
            out.append((name, n, v))
        return out

    def _snap_item(self, parts, at_us, node, v) -> Item:
        if node["kind"] == "d":
            return Item(parts[-1], parts, "snap", True, node=dict(node), ref=at_us,
                        mtime_us=min(node["mtime_us"], at_us), created_us=node["created_us"])
        return Item(parts[-1], parts, "version", False, node=dict(node), version=dict(v), size=v["size"],
                    mtime_us=v["mtime_us"], created_us=node["created_us"])

    def _resolve_snapshot(self, c, parts, at_us, rest) -> Item:
        node, v = self._root(c), None
        for i, name in enumerate(rest):
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts[:3 + i])} is a file, not a folder")
            match = [(n, ver) for nm, n, ver in self._snapshot_children(c, node["id"], at_us) if nm == name]
            if not match:
                raise NotFound(f"{paths.join(parts)} did not exist at that time")
            node, v = match[0]
        return self._snap_item(parts, at_us, node, v)

    def _children(self, c, it: Item) -> list[Item]:
        p = it.parts
        if it.tag == "live":
            return [self._live_item(n, p + (self._name(n),)) for n in t.children(c, it.node["id"])]
        if it.tag == "meta":
            if len(p) == 1:
                return [self._meta_dir(p + (n,)) for n in ("snapshots", "trash", "versions")]
            if p[1] == "versions":
                return [self._live_item(n, p + (self._name(n),), "vdir" if n["kind"] == "d" else "vfile")
                        for n in t.children(c, self.home.root_id)]
            if p[1] == "trash":
                stamps = sorted({n["trashed_us"] for n, _ in self._trash_entries(c)})
                return [Item(stamp(s), p + (stamp(s),), "trashstamp", True, ref=s, mtime_us=s, created_us=s)
                        for s in stamps]
            if p[1] == "snapshots":
                return [Item(stamp(s, False), p + (stamp(s, False),), "snap", True, node=self._root(c),
                             ref=s, mtime_us=s, created_us=s) for s in self._snapshot_times(c)]
        if it.tag == "vdir":
            return [self._live_item(n, p + (self._name(n),), "vdir" if n["kind"] == "d" else "vfile")
                    for n in t.children(c, it.node["id"])]
        if it.tag == "vfile":
            return [self._version_item(v, p + (self._version_name(v, it.name),), it.node)
                    for v in t.versions_of(c, it.node["id"])]
        if it.tag in ("trashstamp", "trashdir"):
            st = it.ref if it.tag == "trashstamp" else it.ref[0]
            sub = () if it.tag == "trashstamp" else it.ref[1]
            out, seen = [], set()
            for node, tp in self._trash_entries(c, st):
                if tp[:len(sub)] != sub or len(tp) <= len(sub) or tp[len(sub)] in seen:
                    continue
                name = tp[len(sub)]
                seen.add(name)
                if len(tp) == len(sub) + 1:
                    out.append(self._live_item(node, p + (name,), "trashnode"))
                else:
                    out.append(Item(name, p + (name,), "trashdir", True, ref=(st, sub + (name,)),
                                    mtime_us=st, created_us=st))
            return out
        if it.tag == "trashnode":
            return [self._live_item(n, p + (self._name(n),), "trashnode") for n in t.children(c, it.node["id"])]
        if it.tag == "snap":
            at = it.ref
            return [self._snap_item(p + (name,), at, n, v)
                    for name, n, v in self._snapshot_children(c, it.node["id"], at)]
        raise NotADirectory(f"{paths.join(p)} is a file, not a folder")

    def _snapshot_times(self, c) -> list[int]:
        """Times worth listing: the last change of each hour with changes."""
        seen, out = set(), []
        for us in t.version_times(c, self.home.id):
            hour = us // 3_600_000_000
            if hour not in seen:
                seen.add(hour)
                out.append((us // 1_000_000 + 1) * 1_000_000)
        return sorted(out)[-500:]

    def _entry(self, it: Item) -> Entry:
        node = it.node
        if it.tag == "version":
            etag = f"v{it.version['id']:x}"
        elif node is not None:
            etag = f"{node['id']:x}-{(node['version_id'] or 0):x}-{node['changed_us']:x}"
        else:
            etag = f"m{it.mtime_us:x}"
        return Entry(it.name, paths.join(it.parts), it.is_dir, 0 if it.is_dir else it.size,
                     it.mtime_us / 1e6, it.created_us / 1e6, etag,
                     node["mode"] if node is not None and it.tag == "live" else None,
                     writable=(it.tag == "live"), virtual=it.virtual)

    # -- reading ------------------------------------------------------------------------
    def stat(self, path) -> Entry:
        parts = paths.parse(path)
        with self.st.db.read() as c:
            return self._entry(self._resolve(c, parts))

    def exists(self, path) -> bool:
        try:
            self.stat(path)
            return True
        except (NotFound, NotADirectory):
            return False

    def list(self, path) -> list[Entry]:
        parts = paths.parse(path)
        with self.st.db.read() as c:
            it = self._resolve(c, parts)
            if not it.is_dir:
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            return [self._entry(ch) for ch in self._children(c, it)]

    def _reader_for(self, c, it: Item) -> Reader:
        if it.is_dir:
            raise IsADirectory(f"{paths.join(it.parts)} is a folder")
        v = it.version if it.version is not None else (
            t.version(c, it.node["version_id"]) if it.node["version_id"] else None)
        if v is None:
            v = {"id": 0, "size": 0}
            rows = []
        else:
            rows = t.version_chunk_rows(c, v["id"])
        return Reader(self, self.home, v, [dict(r) for r in rows], paths.join(it.parts))

    def open_read(self, path) -> Reader:
        parts = paths.parse(path)
        with self.st.db.read() as c:
            return self._reader_for(c, self._resolve(c, parts))

    def read_bytes(self, path) -> bytes:
        with self.open_read(path) as r:
            return r.read()

    def hashes(self, path) -> dict:
        parts = paths.parse(path)
        with self.st.db.read() as c:
            it = self._resolve(c, parts)
            if it.is_dir:
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            v = it.version or (t.version(c, it.node["version_id"]) if it.node["version_id"] else None)
        if v is None:
            return {"md5": "d41d8cd98f00b204e9800998ecf8427e", "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
        return json.loads(crypto.open_sealed(self.home.keys.meta, bytes(v["hashes_enc"]), b"hashes", "hashes"))

    def quota(self) -> Quota:
        with self.st.db.read() as c:
            used = uq.owner_usage(c, self.user.id)
            row = uq.user_by_id(c, self.user.id)
        from .accounts import User
        limit = self.st.accounts.quota_limit(User.from_row(row))
        return Quota(used, limit, None if limit is None else max(0, limit - used))

    def _quota_room(self) -> int | None:
        q = self.quota()
        return q.available

    def versions(self, path) -> list[VersionInfo]:
        parts = paths.parse(path)
        if paths.is_meta(parts):
            raise PermissionDenied("versions are listed for files in the live tree")
        with self.st.db.read() as c:
            node = self._walk(c, self._root(c), parts)
            if node["kind"] != "f":
                raise IsADirectory(f"{paths.join(parts)} is a folder: versions are kept per file")
            rows = t.versions_of(c, node["id"])
            authors = {}
            for v in rows:
                if v["author_id"] and v["author_id"] not in authors:
                    u = uq.user_by_id(c, v["author_id"])
                    authors[v["author_id"]] = u["name"] if u else None
        return [VersionInfo(v["id"], v["size"], v["created_us"] / 1e6, v["mtime_us"] / 1e6,
                            authors.get(v["author_id"]), v["id"] == node["version_id"],
                            self._version_name(v, parts[-1])) for v in rows]

    # -- writing ---------------------------------------------------------------------------
    def _writable(self, parts) -> None:
        if paths.is_meta(parts):
            raise PermissionDenied(READ_ONLY)
        if not parts:
            raise PermissionDenied("the top folder cannot be replaced or removed")

    def _is_excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude)

    def open_write(self, path, mtime: float | None = None, exclusive: bool = False) -> Writer:
        parts = paths.parse(path)
        self._writable(parts)
        with self.st.db.read() as c:
            parent = self._walk(c, self._root(c), parts[:-1])
            if parent["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts[:-1])} is a file, not a folder")
            cur = t.child(c, parent["id"], crypto.name_lookup(self.home.keys, parent["id"], parts[-1]))
            if cur is not None and cur["kind"] == "d":
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            if cur is not None and exclusive:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
        return Writer(self, self.home, parts, None if mtime is None else int(mtime * 1e6),
                      self.cfg.storage.chunk_size, exclusive)

    def write_bytes(self, path, data: bytes, mtime: float | None = None) -> Entry:
        with self.open_write(path, mtime) as w:
            w.write(data)
        return self.stat(path)

    def open_random(self, path, truncate: bool = False, create: bool = True,
                    exclusive: bool = False) -> RandomFile:
        parts = paths.parse(path)
        self._writable(parts)
        base = None
        try:
            e = self.stat(path)
            if e.is_dir:
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            if exclusive:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
            if not truncate and e.size:
                base = self.open_read(path)
        except (NotFound,):
            if not create:
                raise
        return RandomFile(self, lambda: self.open_write(path), base, self.cfg.spool_dir)

    def _find_chunk(self, domain, dedup_id):
        with self.st.db.read() as c:
            row = t.chunk_by_dedup(c, domain.id, dedup_id)
        return None if row is None else row["id"]

    def _chunk_plaintext(self, domain, pc) -> bytes:
        if pc.key is not None:
            stored = self.st.blobs.get(pc.blob_name)
            return crypto.decrypt_chunk(pc.key, stored, pc.plain_size)
        with self.st.db.read() as c:
            row = t.chunk_by_dedup(c, domain.id, pc.dedup_id)
        key = crypto.open_sealed(domain.keys.wrap, bytes(row["wrapped_key"]), pc.dedup_id.encode())
        return crypto.decrypt_chunk(key, self.st.blobs.get(row["blob_name"]), row["plain_size"])

    def _publish(self, w: Writer) -> Entry:
        """Make a finished stream the file's current version, in one transaction."""
        parts, dom = w.parts, w.domain
        now = meta.now_us()
        drop_blobs: list[str] = []
        with self.st.db.write() as c:
            parent = self._walk(c, self._root(c), parts[:-1])
            if parent["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts[:-1])} is a file, not a folder")
            lookup = crypto.name_lookup(dom.keys, parent["id"], parts[-1])
            cur = t.child(c, parent["id"], lookup)
            if cur is not None and cur["kind"] == "d":
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            if cur is not None and w.exclusive:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
            ids: dict[str, int] = {}
            used_blobs: set[str] = set()
            for pc in w.chunks:
                if pc.dedup_id in ids:
                    if pc.blob_name and pc.blob_name not in used_blobs:
                        drop_blobs.append(pc.blob_name)      # the same chunk stored twice in parallel
                        used_blobs.add(pc.blob_name)
                    continue
                row = t.chunk_by_dedup(c, dom.id, pc.dedup_id)
                if row is not None:
                    ids[pc.dedup_id] = row["id"]
                    if pc.blob_name and row["blob_name"] != pc.blob_name:
                        drop_blobs.append(pc.blob_name)      # stored twice by concurrent writers
                    continue
                if pc.blob_name is None:
                    raise Conflict("a chunk this upload relied on was purged meanwhile; retry the upload")
                used_blobs.add(pc.blob_name)
                ids[pc.dedup_id] = t.insert_chunk(
                    c, domain_id=dom.id, dedup_id=pc.dedup_id, blob_name=pc.blob_name,
                    plain_size=pc.plain_size, stored_size=pc.stored_size, wrapped_key=pc.wrapped_key,
                    stored_sha256=pc.stored_sha256, refcount=0, created_us=now)
            refs = Counter(ids[pc.dedup_id] for pc in w.chunks)
            gained = t.add_refs(c, refs)
            t.add_usage(c, dom.id, gained)
            if gained:
                limit = self.st.accounts.quota_limit(self.user)
                if limit is not None and uq.owner_usage(c, dom.owner_id) > limit:
                    raise QuotaExceeded("the account's storage quota is full: delete files or purge old "
                                        "versions, or ask for a larger plan; nothing was changed")
            mtime = w.mtime_us or now
            hashes = crypto.seal(dom.keys.meta, json.dumps(w.hashes()).encode(), b"hashes")
            if cur is None:
                nid = t.insert_node(c, domain_id=dom.id, parent_id=parent["id"],
                                    name_enc=crypto.encrypt_name(dom.keys, parts[-1]), name_lookup=lookup,
                                    kind="f", mode=None, created_us=now, mtime_us=mtime, changed_us=now,
                                    size=w.size, excluded=self._is_excluded(parts[-1]))
            else:
                nid = cur["id"]
            vid = t.insert_version(c, node_id=nid, domain_id=dom.id, size=w.size, stored_bytes=gained,
                                   created_us=now, mtime_us=mtime, author_id=self.user.id, hashes_enc=hashes)
            t.add_version_chunks(c, vid, [ids[pc.dedup_id] for pc in w.chunks])
            t.update_node(c, nid, version_id=vid, size=w.size, mtime_us=mtime, changed_us=now)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            drop_blobs += self._apply_retention(c, dom, nid, now)
            node = t.node(c, nid)
        self._delete_blobs(drop_blobs)
        return self._entry(self._live_item(node, parts))

    def _delete_blobs(self, names) -> None:
        for name in names:
            try:
                self.st.blobs.delete(name)
            except Exception:
                log.warning("could not delete a purged chunk; gc will reclaim it")

    def _drop_versions(self, c, dom, version_ids) -> list[str]:
        refs = Counter()
        for vid in version_ids:
            refs.update(t.delete_version(c, vid))
        freed, blobs = t.drop_refs(c, refs)
        t.add_usage(c, dom.id, -freed)
        return blobs

    def _apply_retention(self, c, dom, node_id, now) -> list[str]:
        node = t.node(c, node_id)
        rows = t.versions_of(c, node_id)
        rows = [r for r in rows if r["id"] == node["version_id"]] + \
               [r for r in rows if r["id"] != node["version_id"]]
        if node["excluded"]:
            keep = {0}
        else:
            keep = retention.thin([r["created_us"] for r in rows], now, self.policy)
        drop = [r["id"] for i, r in enumerate(rows) if i not in keep]
        return self._drop_versions(c, dom, drop) if drop else []

    def mkdir(self, path) -> Entry:
        parts = paths.parse(path)
        self._writable(parts)
        now = meta.now_us()
        with self.st.db.write() as c:
            parent = self._walk(c, self._root(c), parts[:-1])
            if parent["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts[:-1])} is a file, not a folder")
            lookup = crypto.name_lookup(self.home.keys, parent["id"], parts[-1])
            if t.child(c, parent["id"], lookup) is not None:
                raise AlreadyExists(f"{paths.join(parts)} already exists")
            nid = t.insert_node(c, domain_id=self.home.id, parent_id=parent["id"],
                                name_enc=crypto.encrypt_name(self.home.keys, parts[-1]), name_lookup=lookup,
                                kind="d", created_us=now, mtime_us=now, changed_us=now, size=0)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            node = t.node(c, nid)
        return self._entry(self._live_item(node, parts))

    def makedirs(self, path) -> None:
        parts = paths.parse(path)
        for i in range(1, len(parts) + 1):
            try:
                self.mkdir(paths.join(parts[:i]))
            except AlreadyExists:
                pass

    def _trash(self, c, node, parts, now) -> None:
        t.update_node(c, node["id"], trashed_us=now, changed_us=now,
                      trash_path_enc=crypto.seal(self.home.keys.names, paths.join(parts).encode(), b"trash"))

    def delete(self, path) -> None:
        """Move a file or folder (with everything in it) to the trash; in
        /.coffer, purge for good."""
        parts = paths.parse(path)
        if paths.is_meta(parts):
            return self._purge_meta(parts)
        self._writable(parts)
        now = meta.now_us()
        with self.st.db.write() as c:
            node = self._walk(c, self._root(c), parts)
            self._trash(c, node, parts, now)
            t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)

    def rmdir(self, path) -> None:
        """Delete an empty folder (SFTP semantics)."""
        parts = paths.parse(path)
        self._writable(parts)
        with self.st.db.read() as c:
            node = self._walk(c, self._root(c), parts)
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            if t.has_children(c, node["id"]):
                raise DirectoryNotEmpty(f"{paths.join(parts)} is not empty")
        self.delete(path)

    def move(self, src, dst, overwrite: bool = True) -> Entry:
        sp, dp = paths.parse(src), paths.parse(dst)
        self._writable(sp)
        self._writable(dp)
        if dp[:len(sp)] == sp:
            if dp == sp:
                return self.stat(dst)
            raise Conflict(f"cannot move {paths.join(sp)} into itself")
        if sp[:len(dp)] == dp:
            raise Conflict(f"cannot replace {paths.join(dp)}: it holds {paths.join(sp)}")
        now = meta.now_us()
        with self.st.db.write() as c:
            node = self._walk(c, self._root(c), sp)
            parent = self._walk(c, self._root(c), dp[:-1])
            if parent["kind"] != "d":
                raise NotADirectory(f"{paths.join(dp[:-1])} is a file, not a folder")
            lookup = crypto.name_lookup(self.home.keys, parent["id"], dp[-1])
            target = t.child(c, parent["id"], lookup)
            if target is not None:
                if not overwrite:
                    raise AlreadyExists(f"{paths.join(dp)} already exists")
                self._trash(c, target, dp, now)
            t.add_history(c, node["id"], node["parent_id"], bytes(node["name_enc"]), now)
            t.update_node(c, node["id"], parent_id=parent["id"], name_lookup=lookup, changed_us=now,
                          name_enc=crypto.encrypt_name(self.home.keys, dp[-1]),
                          excluded=self._is_excluded(dp[-1]) if node["kind"] == "f" else False)
            t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            moved = t.node(c, node["id"])
        return self._entry(self._live_item(moved, dp))

    def copy(self, src, dst, overwrite: bool = True, recursive: bool = True) -> Entry:
        """Copy a file or folder; content is shared, not re-encrypted. A
        source in /.coffer (a version, a trashed item, a snapshot) restores."""
        sp, dp = paths.parse(src), paths.parse(dst)
        self._writable(dp)
        if dp[:len(sp)] == sp:
            raise Conflict(f"cannot copy {paths.join(sp)} into itself")
        if sp[:len(dp)] == dp:
            raise Conflict(f"cannot replace {paths.join(dp)}: it holds {paths.join(sp)}")
        now = meta.now_us()
        drop: list[str] = []
        with self.st.db.write() as c:
            item = self._resolve(c, sp)
            parent = self._walk(c, self._root(c), dp[:-1])
            if parent["kind"] != "d":
                raise NotADirectory(f"{paths.join(dp[:-1])} is a file, not a folder")
            target = t.child(c, parent["id"], crypto.name_lookup(self.home.keys, parent["id"], dp[-1]))
            if target is not None:
                if not overwrite:
                    raise AlreadyExists(f"{paths.join(dp)} already exists")
                if target["kind"] == "d" or item.is_dir:
                    self._trash(c, target, dp, now)
                    target = None
            drop += self._copy_item(c, item, parent["id"], dp, target, now, recursive)
            t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
            node = t.child(c, parent["id"], crypto.name_lookup(self.home.keys, parent["id"], dp[-1]))
            self._check_quota(c)
        self._delete_blobs(drop)
        return self._entry(self._live_item(node, dp))

    def _check_quota(self, c) -> None:
        limit = self.st.accounts.quota_limit(self.user)
        if limit is not None and uq.owner_usage(c, self.home.owner_id) > limit:
            raise QuotaExceeded("the account's storage quota is full: delete files or purge old versions, "
                                "or ask for a larger plan; nothing was changed")

    def _copy_item(self, c, item: Item, parent_id, dparts, target, now, recursive) -> list[str]:
        name = dparts[-1]
        lookup = crypto.name_lookup(self.home.keys, parent_id, name)
        if item.is_dir:
            nid = t.insert_node(c, domain_id=self.home.id, parent_id=parent_id,
                                name_enc=crypto.encrypt_name(self.home.keys, name), name_lookup=lookup, kind="d",
                                created_us=now, mtime_us=item.mtime_us or now, changed_us=now, size=0)
            if item.node is not None and item.tag in ("live", "trashnode"):
                t.copy_props(c, item.node["id"], nid)
            if recursive:
                for ch in self._children(c, item):
                    self._copy_item(c, ch, nid, dparts + (ch.name,), None, now, True)
            return []
        v = item.version if item.version is not None else (
            t.version(c, item.node["version_id"]) if item.node["version_id"] else None)
        if target is None:
            nid = t.insert_node(c, domain_id=self.home.id, parent_id=parent_id,
                                name_enc=crypto.encrypt_name(self.home.keys, name), name_lookup=lookup, kind="f",
                                created_us=now, mtime_us=item.mtime_us or now, changed_us=now,
                                size=item.size, excluded=self._is_excluded(name),
                                mode=item.node["mode"] if item.node is not None else None)
        else:
            nid = target["id"]
        if item.node is not None and item.tag in ("live", "trashnode"):
            t.copy_props(c, item.node["id"], nid)
        if v is None:
            t.update_node(c, nid, size=0, mtime_us=item.mtime_us or now, changed_us=now)
            return []
        chunk_ids = [r["id"] for r in t.version_chunk_rows(c, v["id"])]
        gained = t.add_refs(c, Counter(chunk_ids))
        t.add_usage(c, self.home.id, gained)
        vid = t.insert_version(c, node_id=nid, domain_id=self.home.id, size=v["size"], stored_bytes=gained,
                               created_us=now, mtime_us=v["mtime_us"], author_id=self.user.id,
                               hashes_enc=v["hashes_enc"])
        t.add_version_chunks(c, vid, chunk_ids)
        t.update_node(c, nid, version_id=vid, size=v["size"], mtime_us=v["mtime_us"], changed_us=now)
        return self._apply_retention(c, self.home, nid, now)

    def set_mtime(self, path, mtime: float) -> None:
        parts = paths.parse(path)
        self._writable(parts)
        with self.st.db.write() as c:
            node = self._walk(c, self._root(c), parts)
            t.update_node(c, node["id"], mtime_us=int(mtime * 1e6), changed_us=meta.now_us())

    def set_mode(self, path, mode: int) -> None:
        parts = paths.parse(path)
        self._writable(parts)
        with self.st.db.write() as c:
            node = self._walk(c, self._root(c), parts)
            t.update_node(c, node["id"], mode=mode & 0o7777, changed_us=meta.now_us())

    # -- dead properties ------------------------------------------------------------------------
    def get_props(self, path) -> dict[str, bytes]:
        parts = paths.parse(path)
        with self.st.db.read() as c:
            it = self._resolve(c, parts)
            if it.node is None or it.tag not in ("live", "trashnode"):
                return {}
            rows = t.props(c, it.node["id"])
        keys = self.home.keys
        return {crypto.open_sealed(keys.meta, bytes(r["name_enc"]), b"prop-name", "property").decode():
                crypto.open_sealed(keys.meta, bytes(r["value_enc"]), b"prop-value", "property") for r in rows}

    def set_props(self, path, changes: dict) -> None:
        parts = paths.parse(path)
        self._writable(parts)
        keys = self.home.keys
        with self.st.db.write() as c:
            node = self._walk(c, self._root(c), parts)
            for name, value in changes.items():
                lookup = crypto.name_lookup(keys, node["id"], "prop:" + name)
                t.set_prop(c, node["id"], lookup, crypto.seal(keys.meta, name.encode(), b"prop-name"),
                           None if value is None else crypto.seal(keys.meta, bytes(value), b"prop-value"))

    # -- purging ----------------------------------------------------------------------------------
    def _purge_nodes(self, c, root_ids) -> list[str]:
        ids = []
        for rid in root_ids:
            ids += t.subtree_ids(c, rid)
        blobs = []
        if ids:
            vids = [v for v, _ in t.versions_for_nodes(c, ids)]
            for n in ids:
                t.update_node(c, n, version_id=None)
            blobs = self._drop_versions(c, self.home, vids)
            t.delete_nodes(c, list(reversed(ids)))
        return blobs

    def _purge_meta(self, parts) -> None:
        rest = parts[1:]
        blobs: list[str] = []
        if len(rest) < 2 and not (rest and rest[0] == "trash"):
            raise PermissionDenied(f"{paths.join(parts)} cannot be deleted; delete entries inside it to purge")
        with self.st.db.write() as c:
            it = self._resolve(c, parts)
            if it.tag == "version":
                if rest[0] != "versions":
                    raise PermissionDenied(READ_ONLY)
                if it.node["version_id"] == it.version["id"]:
                    raise Conflict("this is the file's current version: delete the file itself to move it to "
                                   f"the trash, or delete {paths.join(parts[:-1])} to purge it with its history")
                blobs = self._drop_versions(c, self.home, [it.version["id"]])
            elif it.tag in ("vfile", "vdir"):
                blobs = self._purge_path(c, parts[2:])
            elif it.tag == "trashnode":
                blobs = self._purge_nodes(c, [it.node["id"]])
            elif it.tag in ("trashstamp", "trashdir"):
                st, sub = (it.ref, ()) if it.tag == "trashstamp" else it.ref
                blobs = self._purge_nodes(c, [n["id"] for n, tp in self._trash_entries(c, st)
                                              if tp[:len(sub)] == sub])
            elif it.tag == "meta" and rest == ("trash",):
                blobs = self._purge_nodes(c, [n["id"] for n, _ in self._trash_entries(c)])
            else:
                raise PermissionDenied(READ_ONLY)
        self._delete_blobs(blobs)

    def _purge_path(self, c, parts) -> list[str]:
        roots = []
        try:
            roots.append(self._walk(c, self._root(c), parts)["id"])
        except (NotFound, NotADirectory):
            pass
        roots += [n["id"] for n, tp in self._trash_entries(c) if tp[:len(parts)] == parts]
        if not roots:
            raise NotFound(f"{paths.join(parts)} is neither in the tree nor in the trash")
        return self._purge_nodes(c, roots)

    def purge(self, path) -> None:
        """Delete a file or folder with all its versions and trash entries, for good."""
        parts = paths.parse(path)
        if paths.is_meta(parts):
            return self._purge_meta(parts)
        self._writable(parts)
        with self.st.db.write() as c:
            blobs = self._purge_path(c, parts)
        self._delete_blobs(blobs)

    def expire(self, now_us: int | None = None) -> dict:
        """Apply retention to every file and empty the trash of what is older
        than the policy's trash_days (the periodic job calls this)."""
        now = now_us or meta.now_us()
        blobs: list[str] = []
        counts = {"versions": 0, "trash": 0}
        with self.st.db.write() as c:
            rows = t.version_rows_for_domain(c, self.home.id)
            by_node: dict[int, list] = {}
            for r in rows:
                by_node.setdefault(r.node_id, []).append(r)
            kept_old = []
            for nid, vs in by_node.items():
                node = t.node(c, nid)
                vs = [v for v in vs if v.id == node["version_id"]] + [v for v in vs if v.id != node["version_id"]]
                keep = {0} if node["excluded"] else retention.thin([v.created_us for v in vs], now, self.policy)
                drop = [v.id for i, v in enumerate(vs) if i not in keep]
                kept_old += [(v.id, v.created_us, v.stored_bytes) for i, v in enumerate(vs) if i in keep and i]
                if drop:
                    counts["versions"] += len(drop)
                    blobs += self._drop_versions(c, self.home, drop)
            share = retention.over_share(kept_old, self.st.accounts.quota_limit(self.user), self.policy)
            if share:
                counts["versions"] += len(share)
                blobs += self._drop_versions(c, self.home, share)
            cutoff = now - self.policy.trash_days * retention.DAY
            old = [n["id"] for n, _ in self._trash_entries(c) if n["trashed_us"] < cutoff]
            counts["trash"] = len(old)
            blobs += self._purge_nodes(c, old)
        self._delete_blobs(blobs)
        return counts

    def restore(self, path, version_id: int | None = None, at: float | None = None, to=None) -> Entry:
        """Bring a file or folder back as it was: a version by id, the state at
        a time (snapshot), or the newest trash entry for the path."""
        parts = paths.parse(path)
        dest = to or path
        if version_id is not None:
            with self.st.db.read() as c:
                node = self._walk(c, self._root(c), parts)
                for v in t.versions_of(c, node["id"]):
                    if v["id"] == version_id:
                        src = paths.join(("versions",) + parts + (self._version_name(v, parts[-1]),))
                        break
                else:
                    raise NotFound(f"{paths.join(parts)} has no version {version_id}")
            return self.copy("/" + paths.META + src, dest)
        if at is not None:
            return self.copy(paths.join((paths.META, "snapshots", stamp(int(at * 1e6))) + parts), dest)
        with self.st.db.read() as c:
            found = [(n, tp) for n, tp in self._trash_entries(c) if tp == parts]
        if not found:
            raise NotFound(f"{paths.join(parts)} is not in the trash; give a version or a time")
        n, tp = max(found, key=lambda e: e[0]["trashed_us"])
        return self.copy(paths.join((paths.META, "trash", stamp(n["trashed_us"])) + tp), dest)


