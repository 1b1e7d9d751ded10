"""The filesystem API: one object per authenticated principal.

Every front-end (WebDAV, SFTP, coffer-admin) calls this and nothing below
it. Paths are validated by providers.paths; each call resolves its targets
(providers/resolve.py) and passes the policy gate (providers/core.py,
providers/policy.py) once; the operations themselves are in
providers/tree_ops.py, publish.py and purging.py. Besides the live tree there is the hidden read-only tree `/.coffer/`:

  /.coffer/versions/<path>/<time>_<name>   every kept version of every file
                                           that has lived at the path
  /.coffer/trash/<deleted time>/<path>     deleted files and folders
  /.coffer/snapshots/<UTC time>/<path>     the whole tree as it was then

Copying out of `/.coffer/` restores (out of the trash, the deleted node
itself comes back with its history); deleting in it purges for good.
"""
from __future__ import annotations

import hashlib
import json
import logging

from . import app_passwords, crypto, guard, meta, paths, purging, rekey, tree_ops
from .core import UNLIMITED_SPACE, Core, Entry, Quota, VersionInfo  # noqa: F401  (the contract)
from .domains import Domain
from .errors import (AlreadyExists, DirectoryNotEmpty, IsADirectory, NotADirectory, NotFound, PermissionDenied,
                     QuotaExceeded)
from .meta import tree as t
from .meta import users as uq
from .policy import Op
from .purging import expire_account
from .resolve import (NODE_KINDS, Kind, Target, parse_stamp, snapshot_path, stamp,  # noqa: F401
                      trash_path, version_path)
from .streams import RandomFile, Reader, Writer

log = logging.getLogger(__name__)
PROPS_BATCH = 500           # node ids per dead-property query of a listing
PROP_VALUE_BYTES = 64 * 1024             # a dead property's name and value together
PROPS_PER_NODE = 256                     # dead properties per file or folder
PROP_BYTES_PER_ACCOUNT = 16 * 1024 * 1024   # all of an owner's, as charged (tree.prop_cost)


class Vfs(Core):
    """The filesystem API of one logged-in principal (what front-ends call)."""

    # -- reading ------------------------------------------------------------------------
    def stat(self, path) -> Entry:
        parts = paths.parse(path)
        with self.tx() as c:
            return self.entry(self.res.resolve(c, parts))

    def exists(self, path) -> bool:
        try:
            self.stat(path)
            return True
        except (NotFound, NotADirectory):
            return False

    def list(self, path) -> list[Entry]:
        parts = paths.parse(path)
        with self.tx() as c:
            it = self.res.resolve(c, parts)
            if not it.is_dir:
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            return [self.entry(ch) for ch in self.res.children(c, it)]

    def list_page(self, path, cursor=None, limit: int = 100) -> tuple[list[Entry], object]:
        """A folder's members a page at a time: `cursor` is None for the
        first page, then what the previous page returned; the last page
        returns None. A live folder is read by node id from where the last
        page ended, so a holder keeps a cursor, not the listing, and members
        added meanwhile appear once; other (virtual) folders are small and
        are sliced. The path is resolved, and access checked, on every page."""
        parts = paths.parse(path)
        with self.tx() as c:
            it = self.res.resolve(c, parts)
            if not it.is_dir:
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            paged = self.res.page(c, it, cursor or 0, limit)
            if paged is not None:
                return [self.entry(i) for i in paged[0]], paged[1]
            start = -(cursor or 0)            # a slice's cursor is a negative index
            page = self.res.children(c, it)[start:start + limit]
            more = len(page) == limit
            return [self.entry(i) for i in page], -(start + limit) if more else None

    def walk(self, path="/"):
        """Every entry below a folder, each folder followed by its contents,
        names in order (folders shared with the principal are not entered).
        One query per folder, from the folder's node rather than its path, and
        a stack of its own: any depth of tree walks, in time linear in its size."""
        def members(it):
            with self.tx() as c:
                return iter(sorted(self.res.children(c, it), key=lambda ch: ch.name))
        with self.tx() as c:
            top = self.res.resolve(c, paths.parse(path))
        stack = [members(top)] if top.is_dir else []
        while stack:
            it = next(stack[-1], None)
            if it is None:
                stack.pop()
                continue
            yield self.entry(it)
            if it.is_dir and it.kind is not Kind.SHARED:
                stack.append(members(it))

    def list_with_props(self, path) -> list[tuple[Entry, dict[str, bytes]]]:
        """A folder's members, each with its dead properties as `get_props`
        gives them: one transaction, and one query per PROPS_BATCH members
        for the properties instead of a path lookup per member."""
        parts = paths.parse(path)
        with self.tx() as c:
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
                out.append((self.entry(ch), self._open_props(self.keys.of(c, ch.node).keys, found) if found else {}))
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
        with self.tx() as c:
            return self._reader_for(c, self.res.resolve(c, parts))

    def read_bytes(self, path) -> bytes:
        with self.open_read(path) as r:
            return r.read()

    def hashes(self, path, compute=()) -> dict:
        """Whole-file checksums of the file's version ({"md5": hex, "sha1": …,
        "sha256": …}) as far as they are known. Those named in `compute` that
        are not known yet are computed by reading the version, and kept."""
        parts = paths.parse(path)
        with self.tx() as c:
            it = self.res.resolve(c, parts)
            if it.is_dir:
                raise IsADirectory(f"{paths.join(parts)} is a folder")
            v = it.version or (t.version(c, it.node["version_id"]) if it.node["version_id"] else None)
            if v is None:
                return {algo: hashlib.new(algo).hexdigest() for algo in ("md5", "sha1", "sha256")}
            keys = self.keys.domain(c, v["domain_id"]).keys
            known = json.loads(rekey.open_hashes(keys, v))
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
        with self.tx(True) as c:
            row = t.version(c, v["id"])
            if row is not None:     # purged meanwhile: nothing to keep
                known = json.loads(rekey.open_hashes(keys, row))
                known.update(computed)
                t.update_version(c, v["id"], hashes_enc=crypto.seal_hashes(
                    keys, json.dumps(known).encode(), row["node_id"], row["created_us"], row["size"]))
        return {**known, **computed}

    def quota(self) -> Quota:
        """The principal's own quota: bytes used (after dedup, versions
        included) in everything it owns, the limit, what is left."""
        with self.tx() as c:
            return self.quota_of(c, self.user.id)

    def versions(self, path) -> list[VersionInfo]:
        parts = paths.parse(path)
        if paths.is_meta(parts):
            raise PermissionDenied("versions are listed for files in the live tree")
        with self.tx() as c:
            rows = self.res.path_versions(c, parts)
            authors = {}
            for v, _, _ in rows:
                if v["author_id"] and v["author_id"] not in authors:
                    u = uq.user_by_id(c, v["author_id"])
                    authors[v["author_id"]] = u["name"] if u else None
        return [VersionInfo(v["id"], v["size"], v["created_us"] / 1e6, v["mtime_us"] / 1e6,
                            authors.get(v["author_id"]), g.live and v["id"] == g.node["version_id"], name)
                for v, g, name in rows]

    def trash(self) -> list[dict]:
        """What is in the principal's trash, oldest deletion first: each
        deleted file or folder (a folder with what it held) with its original
        path, when it was deleted, and `at`, the path that reads it (under
        /.coffer/trash)."""
        with self.tx() as c:
            found = self.res.trash_entries(c)
        return [{"path": paths.join(tp), "deleted_us": n["trashed_us"], "is_dir": n["kind"] == "d",
                 "at": paths.join(trash_path(tp, n["trashed_us"]))}
                for n, tp in sorted(found, key=lambda e: (e[0]["trashed_us"], e[1]))]

    # -- writing ---------------------------------------------------------------------------
    def open_write(self, path, mtime: float | None = None, exclusive: bool = False,
                   checksums: bool = False, expect: dict | None = None) -> Writer:
        """A write stream for `path`, published by its `commit()`.

        Whole-file checksums of a large stream are computed while writing
        only with `checksums`, or `expect` ({"sha1": hex, ...}: what the client
        says it sent; a mismatch refuses the upload); otherwise on first request."""
        parts = paths.parse(path)
        with self.tx() as c:
            parent, dom = self.parent_for_write(c, parts)
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
        with self.tx() as c:
            _, dom = self.parent_for_write(c, parts)
            # A write far past the end leaves a hole that reads as zeros and
            # dedups to nothing, but publishing walks every chunk of it: one
            # byte at 1 TiB cost 400 s of CPU. No file may outgrow its
            # owner's whole quota.
            limit = self.quota_of(c, dom.owner_id).limit
            try:                              # what is there now, in the same transaction
                e = self.entry(self.res.resolve(c, parts))
            except NotFound:
                if not create:
                    raise
        if e is not None and e.is_dir:
            raise IsADirectory(f"{paths.join(parts)} is a folder")
        if e is not None and exclusive:
            raise AlreadyExists(f"{paths.join(parts)} already exists")
        if not truncate and e is not None and e.size:
            base = self.open_read(path)
        return RandomFile(lambda: self.open_write(path), base, self.cfg.spool_dir, max_size=limit,
                          owner_id=dom.owner_id, quota_room=lambda: self.quota_room(dom))

    def mkdir(self, path) -> Entry:
        return tree_ops.mkdir(self, path)

    def makedirs(self, path) -> None:
        parts = paths.parse(path)
        for i in range(1, len(parts) + 1):
            try:
                tree_ops.mkdir(self, paths.join(parts[:i]))
            except AlreadyExists:
                pass

    def delete(self, path) -> None:
        """Move a file or folder (with everything in it) to the trash; in
        /.coffer, purge for good."""
        parts = paths.parse(path)
        if paths.is_meta(parts):
            return purging.purge_in_coffer(self, parts)
        now = meta.now_us()
        with self.tx(True) as c:
            node = self.resolve_for(c, Op.REMOVE, parts).node
            tree_ops.trash(self, c, node, now)
            t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)

    def rmdir(self, path) -> None:
        """Delete an empty folder (SFTP semantics)."""
        parts = paths.parse(path)
        self.by_layout(Op.REMOVE, parts)
        with self.tx() as c:
            node = self.res.live(c, parts)
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts)} is a file, not a folder")
            if t.has_children(c, node["id"]):
                raise DirectoryNotEmpty(f"{paths.join(parts)} is not empty")
        self.delete(path)

    def move(self, src, dst, overwrite: bool = True) -> Entry:
        """Rename or move a file or folder; its history goes along (see tree_ops.move)."""
        return tree_ops.move(self, src, dst, overwrite)

    def copy(self, src, dst, overwrite: bool = True, recursive: bool = True) -> Entry:
        """Copy a file or folder; out of /.coffer it restores (see tree_ops.copy)."""
        return tree_ops.copy(self, src, dst, overwrite, recursive)

    def set_mtime(self, path, mtime: float) -> None:
        parts = paths.parse(path)
        with self.tx(True) as c:
            node = self.resolve_for(c, Op.CHANGE, parts).node
            t.update_node(c, node["id"], mtime_us=int(mtime * 1e6), changed_us=meta.now_us())

    def set_mode(self, path, mode: int) -> None:
        parts = paths.parse(path)
        with self.tx(True) as c:
            node = self.resolve_for(c, Op.CHANGE, parts).node
            t.update_node(c, node["id"], mode=mode & 0o7777, changed_us=meta.now_us())

    # -- dead properties ------------------------------------------------------------------------
    def get_props(self, path) -> dict[str, bytes]:
        parts = paths.parse(path)
        with self.tx() as c:
            it = self.res.resolve(c, parts)
            if it.kind not in NODE_KINDS:
                return {}
            rows = t.props(c, it.node["id"])
            keys = self.keys.of(c, it.node).keys
        return self._open_props(keys, rows)

    @staticmethod
    def _open_props(keys, rows) -> dict[str, bytes]:
        return dict(crypto.open_prop(keys, r["node_id"], r["name_lookup"], r["name_enc"], r["value_enc"])
                    for r in rows)

    def set_props(self, path, changes: dict, dry_run: bool = False) -> None:
        """Set (or, with None, remove) dead properties, all or none. They are
        charged to the quota as stored (tree.prop_cost) and limited: a name
        and value of PROP_VALUE_BYTES together, PROPS_PER_NODE properties
        per file or folder, PROP_BYTES_PER_ACCOUNT for all of the owner's.
        `dry_run` checks without writing."""
        parts = paths.parse(path)
        with self.tx(not dry_run) as c:
            node = self.resolve_for(c, Op.CHANGE, parts).node
            dom = self.keys.of(c, node)
            keys = dom.keys
            have = {r["name_lookup"]: t.prop_cost(bytes(r["name_enc"]), bytes(r["value_enc"]))
                    for r in t.props(c, node["id"])}
            sealed, delta = {}, 0
            for name, value in changes.items():
                if value is not None and len(name.encode()) + len(value) > PROP_VALUE_BYTES:
                    raise QuotaExceeded(f"the property {name} is {len(value)} bytes long: a property's name and "
                                        f"value may take {PROP_VALUE_BYTES} bytes; nothing was changed")
                lookup = rekey.prop_lookup(keys, node["id"], name)
                name_enc, value_enc = crypto.seal_prop(keys, node["id"], lookup, name, b"" if value is None else value)
                value_enc = None if value is None else value_enc
                delta += (0 if value_enc is None else t.prop_cost(name_enc, value_enc)) - have.pop(lookup, 0)
                if value_enc is not None:
                    have[lookup] = 0            # counted in delta; kept for the count below
                sealed[lookup] = (name_enc, value_enc)
            if len(have) > PROPS_PER_NODE:
                raise QuotaExceeded(f"{paths.join(parts)} would have {len(have)} properties; a file or folder "
                                    f"may have {PROPS_PER_NODE}; nothing was changed")
            if delta > 0:
                total = t.prop_bytes(c, uq.owned_domain_ids(c, dom.owner_id)) + delta
                if total > PROP_BYTES_PER_ACCOUNT:
                    raise QuotaExceeded(f"properties would take {total} bytes; an account's may take "
                                        f"{PROP_BYTES_PER_ACCOUNT}: remove some; nothing was changed")
                q = self.quota_of(c, dom.owner_id)
                if q.limit is not None and q.used + delta > q.limit:
                    self.quota_full(dom)
            if dry_run:
                return
            for lookup, (name_enc, value_enc) in sealed.items():
                t.set_prop_charged(c, dom.id, node["id"], lookup, name_enc, value_enc)

    # -- purging ----------------------------------------------------------------------------------
    def purge(self, path) -> None:
        """Delete a file or folder with all its versions and trash entries, for good."""
        parts = paths.parse(path)
        if paths.is_meta(parts):
            return purging.purge_in_coffer(self, parts)
        self.by_layout(Op.PURGE, parts)
        with self.tx(True) as c:
            guard.refuse_purge(c, self.user.id, paths.join(parts))
            blobs, count = purging.purge_path(self, c, parts)
            purging.audit_purge(self, c, None, "tree", count)
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
            with self.tx() as c:
                for v, _, name in self.res.path_versions(c, parts):
                    if v["id"] == version_id:
                        src = paths.join(version_path(parts, name))
                        break
                else:
                    raise NotFound(f"{paths.join(parts)} has no version {version_id}")
            return tree_ops.copy(self, src, dest)
        if at is not None:
            return tree_ops.copy(self, paths.join(snapshot_path(parts, int(at * 1e6))), dest)
        with self.tx() as c:
            found = [(n, tp) for n, tp in self.res.trash_entries(c) if tp == parts]
        if not found:
            raise NotFound(f"{paths.join(parts)} is not in the trash; give a version or a time")
        n, tp = max(found, key=lambda e: e[0]["trashed_us"])
        return tree_ops.copy(self, paths.join(trash_path(tp, n["trashed_us"])), dest)

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
        with self.tx(True) as c:
            out, blobs = shares.grant(self, c, self.resolve_for(c, Op.SHARE, parts).node, parts, grantee, permission,
                                      actor, disclose)
        self.st.delete_blobs(blobs)
        return out

    def share_revoke(self, path, grantee: str, actor: str = "user", disclose: bool = True) -> dict:
        """Take a folder back from one collaborator: their copy of the key goes
        at once, and the folder key is rotated for everything afterwards."""
        from . import shares
        parts = paths.parse(path)
        with self.tx(True) as c:
            return shares.revoke(self, c, self.resolve_for(c, Op.SHARE, parts).node, parts, grantee, actor, disclose)

    # -- app passwords ---------------------------------------------------------------------------
    def app_password_create(self, label: str, scope: str, actor: str = "user"):
        """A new app password for this account (AppPassword, secret shown once).
        Only a session with the full password (or a full app password) may."""
        app_passwords.require_full(self.scope, "creating an app password")
        return self.st.apps.create(self.user.id, self.keys.user_key, label, scope, actor)

    def app_password_list(self):
        return self.st.apps.list(self.user.id)

    def app_password_revoke(self, ref: str, actor: str = "user"):
        app_passwords.require_full(self.scope, "revoking an app password")
        return self.st.apps.revoke(self.user.id, ref, actor)

    # -- exclusion patterns --------------------------------------------------------------------
    def exclusions(self) -> list[str]:
        """The account's patterns of file names that keep no history."""
        from . import lifecycle
        return lifecycle.exclusions(self.st, self.user.name)

    def exclusion_change(self, add: str | None = None, remove: str | None = None,
                         drop_history: bool = False) -> tuple[list[str], dict | None]:
        """Add or remove a pattern (providers/lifecycle.py); with
        `drop_history`, also purge the old versions that matching files kept
        so far. Shortening history is the account holder's own decision: a
        limited app password may not."""
        from . import lifecycle
        app_passwords.require_full(self.scope, "changing which files keep history")
        if drop_history:
            return lifecycle.exclude_dropping_history(self.st, self, add)
        return lifecycle.change_exclusions(self.st, self.user.name, add=add, remove=remove), None

    def share_list(self) -> dict:
        """Folders this principal shares (with whom, how) and receives."""
        from . import shares
        return shares.listing(self)

    def administrator_access(self) -> list[dict]:
        """What administrators did on the principal's own account, oldest
        first, each in words (see providers/access.py)."""
        from . import access
        return access.accesses(self.st, self.user.id)

    def key_domains(self) -> list[tuple[tuple, Domain]]:
        """Every key domain this principal reaches, with the path where its
        top appears in the principal's tree: the home at `()`, folders it
        shares at their paths, folders shared with it under /Shared."""
        with self.tx() as c:
            return self.res.key_domains(c)
