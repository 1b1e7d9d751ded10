"""Paths to typed targets: the one module that knows the layout of a
principal's tree, the hidden `/.coffer/` and the folders under `/Shared/`.

  /                                         TOP
  /<path>                                   LIVE
  /Shared, /Shared/<owner>                  SHARED     folders shared with the principal appear here
  /Shared/<owner>/<folder>                  MOUNT      the top of one of them
  /Shared/<owner>/<folder>/<path>           LIVE
  /.coffer/versions/Shared[/<owner>]        SHARED     (their history)
  /.coffer, /.coffer/versions,
  /.coffer/snapshots                        META
  /.coffer/versions/<path>                  HISTORY    the files (or folders) that have lived at the path
  /.coffer/versions/<path>/<time>_<name>    VERSION    one kept version of one of them
  /.coffer/trash[/<time>[/<folders>]]       TRASH      the trash, what was deleted at a time, the
                                                       folders above a deleted entry
  /.coffer/trash/<time>/<path>              TRASHED    a deleted file or folder, or what is in one
  /.coffer/snapshots/<time>[/<path>]        SNAPSHOT   a folder as it was then
                                            SNAPSHOT_FILE  a file as it was then

Resolving reads what it must and nothing more: a live path costs one query
per name (the top folder's row only for `/` itself).
"""
from __future__ import annotations

import calendar
import enum
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass

from . import crypto, history, meta, paths
from .errors import IntegrityError, NotADirectory, NotFound, PermissionDenied
from .history import Gen
from .meta import tree as t
from .meta import users as uq

log = logging.getLogger(__name__)
META = paths.META
SHARED = "Shared"               # where folders shared with the principal appear


class Kind(enum.Enum):
    TOP = "the top folder"
    LIVE = "a file or folder"
    MOUNT = "a folder shared with you"
    SHARED = "where shared folders appear"
    META = "a folder of /.coffer"
    HISTORY = "the versions of a path"
    VERSION = "one version"
    TRASH = "the trash"
    TRASHED = "a trash entry"
    SNAPSHOT = "a snapshot folder"
    SNAPSHOT_FILE = "a file in a snapshot"

    # A member is equal only to itself, so its identity is its hash: looked
    # up in sets and tables for every member of a listing, where Enum's own
    # (a Python-level hash of the name) shows in the profile.
    __hash__ = object.__hash__


LIVE_KINDS = frozenset({Kind.TOP, Kind.LIVE, Kind.MOUNT})
NODE_KINDS = frozenset({Kind.TOP, Kind.LIVE, Kind.MOUNT, Kind.TRASHED})   # a node's own properties apply


@dataclass
class Target:
    """What a path names for one principal."""
    kind: Kind
    name: str
    parts: tuple
    is_dir: bool
    node: dict | None = None
    version: dict | None = None
    ref: object = None              # HISTORY: generations; VERSION: its generation; TRASH: (time, folders);
    size: int = 0                   # SNAPSHOT: the time; SHARED: the owner, or None
    mtime_us: int = 0
    created_us: int = 0
    grant: str | None = None        # the principal's permission where it lies, when looked up

    @property
    def virtual(self) -> bool:
        return self.kind not in LIVE_KINDS


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


def mount_path(owner: str, folder: str) -> tuple:
    """Where a folder shared by `owner` appears for a collaborator."""
    return (SHARED, owner, folder)


def is_mount(parts) -> bool:
    return len(parts) == 3 and parts[0] == SHARED


def in_shared(parts) -> bool:
    """Is this /Shared or anything below it?"""
    return bool(parts) and parts[0] == SHARED


def version_path(parts, name: str) -> tuple:
    return (META, "versions") + tuple(parts) + (name,)


def snapshot_path(parts, at_us: int) -> tuple:
    return (META, "snapshots", stamp(at_us)) + tuple(parts)


def trash_path(parts, trashed_us: int) -> tuple:
    return (META, "trash", stamp(trashed_us)) + tuple(parts)


def version_name(v, file_name: str, with_id: bool = False) -> str:
    return f"{stamp(v['created_us'])}{'-v%d' % v['id'] if with_id else ''}_{file_name}"


class Resolver:
    """Resolves paths and lists folders for one principal (see the module doc)."""

    def __init__(self, db, keys, user_id: int):
        self.db, self.keys, self.user_id = db, keys, user_id
        self._mount_fixes: dict[int, str] = {}      # shared folders whose name under /Shared to keep

    # -- the live tree -----------------------------------------------------------------------
    def root(self, c):
        return t.node(c, self.keys.home.root_id)

    def _top(self, c, parts):
        """Where a walk down the home starts: the top folder's row for the top
        itself, else only what walking needs from it (one query less)."""
        if not parts:
            return self.root(c)
        return {"id": self.keys.home.root_id, "kind": "d", "domain_id": self.keys.home.id}

    def walk(self, c, start, parts, prefix=()):
        node = start
        for i, name in enumerate(parts):
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(prefix + parts[:i])} is a file, not a folder")
            nxt = t.child(c, node["id"], crypto.name_lookup(self.keys.of(c, node).keys, node["id"], name))
            if nxt is None:
                raise NotFound(f"{paths.join(prefix + parts[:i + 1])} does not exist")
            node = nxt
        return node

    def live(self, c, parts):
        """The live node at a path, following /Shared into folders shared with us."""
        if in_shared(parts):
            if len(parts) < 3:
                raise PermissionDenied(f"{paths.join(parts)} is where shared folders appear; it is read-only")
            got = self.received(c).get(parts[1], {}).get(parts[2])
            if got is None:
                raise NotFound(f"{paths.join(parts[:3])} is not shared with you")
            self.keys.domain(c, got[0])
            return self.walk(c, t.node(c, got[1]), parts[3:], parts[:3])
        return self.walk(c, self._top(c, parts), parts)

    def own(self, c, parts):
        """A node of the principal's own tree (never through /Shared or /.coffer)."""
        return self.walk(c, self.root(c), parts)

    def received(self, c) -> dict:
        """{owner name: {folder name: (domain id, root node id)}} of folders shared with this principal.

        Two folders of one owner with the same name both appear: the one
        granted first keeps the name, the other gets `name (2)` (see
        providers.shares.mount_names). A name given that way is kept for
        good (`keep_mount_names`), so it never changes between listings;
        folders in the owner's trash keep their names reserved."""
        from .shares import mount_names
        rows, priv = [], None
        for r in uq.received_shares(c, self.user_id):
            root = t.node(c, r["root_node_id"]) if r["root_node_id"] else None
            if root is None:
                continue
            priv = priv or self.keys.private_key(c)
            rows.append((r, root, self.keys.open_mount(c, r, priv)))
        names = mount_names([(r["domain_id"], r["owner_name"], mount, (r["created_us"], r["domain_id"]))
                             for r, _, mount in rows])
        out: dict = {}
        for r, root, mount in rows:
            name = names[r["domain_id"]]
            if name != mount:
                self._mount_fixes[r["domain_id"]] = name
            if root["trashed_us"] is None:
                out.setdefault(r["owner_name"], {})[name] = (r["domain_id"], r["root_node_id"])
        return out

    def keep_mount_names(self) -> None:
        """Store the names `received` gave to same-named shared folders, sealed
        to this principal like the grant's own (after the transaction that
        found them: it may be a read)."""
        if not self._mount_fixes:
            return
        fixes, self._mount_fixes = self._mount_fixes, {}
        try:
            with self.db.write() as c:
                pub = bytes(uq.user_by_id(c, self.user_id)["public_key"])
                for domain_id, name in fixes.items():
                    uq.update_member(c, domain_id, self.user_id,
                                     mount_enc=crypto.seal_to(pub, name.encode("utf-8"),
                                                              crypto.mount_aad(domain_id, self.user_id)))
        except Exception:          # the same names are worked out again next time
            log.exception("could not store the names of same-named shared folders")

    def owner_path(self, c, node) -> tuple:
        """A node's path in its owner's tree (names decrypted with each parent's keys)."""
        names = []
        while node["parent_id"] is not None:
            parent = t.node(c, node["parent_id"])
            names.append(self.keys.name(c, parent, node))
            node = parent
        return tuple(reversed(names))

    def domain_path(self, c, node) -> tuple:
        """A node's path below the root of its own key domain."""
        dom = self.keys.of(c, node)
        names = []
        while node["id"] != dom.root_id and node["parent_id"] is not None:
            parent = t.node(c, node["parent_id"])
            names.append(self.keys.name(c, parent, node))
            node = parent
        return tuple(reversed(names))

    def key_domains(self, c) -> list:
        """Every key domain this principal reaches, with the path where its top appears."""
        out = [((), self.keys.home)]
        for row in uq.owned_share_domains(c, self.user_id):
            root = t.node(c, row["root_node_id"]) if row["root_node_id"] else None
            if root is not None and root["trashed_us"] is None:
                out.append((self.owner_path(c, root), self.keys.domain(c, row["id"])))
        for owner, mounts in self.received(c).items():
            for mount, (domain_id, _) in mounts.items():
                out.append((mount_path(owner, mount), self.keys.domain(c, domain_id)))
        return out

    # -- targets -------------------------------------------------------------------------------
    def node_target(self, node, parts, kind=Kind.LIVE, c=None) -> Target:
        """A target for a node; with `c`, a live one carries the principal's grant there."""
        if kind is Kind.LIVE and not parts:
            kind = Kind.TOP
        is_dir = node["kind"] == "d" or kind is Kind.HISTORY
        grant = self.keys.of(c, node).permission if c is not None and kind in LIVE_KINDS else None
        return Target(kind, parts[-1] if parts else "", parts, is_dir, node=dict(node),
                      size=node["size"], mtime_us=node["mtime_us"], created_us=node["created_us"], grant=grant)

    @staticmethod
    def place(parts) -> Kind:
        """What is (or would be) at a path, by the layout alone: TOP, LIVE,
        MOUNT, SHARED, or META for anything in /.coffer."""
        if not parts:
            return Kind.TOP
        if paths.is_meta(parts):
            return Kind.META
        if in_shared(parts):
            return Kind.SHARED if len(parts) < 3 else Kind.MOUNT if len(parts) == 3 else Kind.LIVE
        return Kind.LIVE

    def resolve(self, c, parts) -> Target:
        if paths.is_meta(parts):
            return self._resolve_meta(c, parts)
        if in_shared(parts):
            if len(parts) == 1:
                return Target(Kind.SHARED, SHARED, parts, True, mtime_us=self.root(c)["mtime_us"])
            if len(parts) == 2:
                if parts[1] not in self.received(c):
                    raise NotFound(f"{paths.join(parts)}: nothing is shared with you by that account")
                return Target(Kind.SHARED, parts[1], parts, True, ref=parts[1], mtime_us=self.root(c)["mtime_us"])
            node = self.live(c, parts)
            return self.node_target(node, parts, Kind.MOUNT if len(parts) == 3 else Kind.LIVE, c=c)
        return self.node_target(self.walk(c, self._top(c, parts), parts), parts, c=c)

    def children(self, c, it: Target) -> list[Target]:
        lister = self._LISTERS.get(it.kind)
        if lister is None or not it.is_dir:
            raise NotADirectory(f"{paths.join(it.parts)} is a file, not a folder")
        return lister(self, c, it)

    def _live_children(self, c, it: Target) -> list[Target]:
        out = [self.node_target(n, it.parts + (self.keys.name(c, it.node, n),), c=c)
               for n in t.children(c, it.node["id"])]
        if it.kind is Kind.TOP and self.received(c):
            out.append(Target(Kind.SHARED, SHARED, (SHARED,), True, mtime_us=it.mtime_us))
        return out

    def _shared_children(self, c, it: Target) -> list[Target]:
        p = it.parts
        received = self.received(c)
        if it.ref is None:
            return [Target(Kind.SHARED, o, p + (o,), True, ref=o, mtime_us=it.mtime_us) for o in sorted(received)]
        out = []
        for mount, (_, root_id) in sorted(received.get(it.ref, {}).items()):
            root = t.node(c, root_id)
            if paths.is_meta(p):
                out.append(self.node_target(root, p + (mount,), Kind.HISTORY))
            else:
                out.append(self.node_target(root, p + (mount,), Kind.MOUNT, c=c))
        return out

    def _meta_children(self, c, it: Target) -> list[Target]:
        p = it.parts
        if len(p) == 1:
            return [self._resolve_meta(c, p + (n,)) for n in ("snapshots", "trash", "versions")]
        if p[1] == "versions":
            root = self.root(c)
            members = history.Walker(self, c).members([Gen(dict(root), None)])
            out = [self._history_target(gens, p + (name,)) for name, gens in members.items()]
            if self.received(c):
                out.append(Target(Kind.SHARED, SHARED, p + (SHARED,), True, mtime_us=root["mtime_us"]))
            return out
        return [Target(Kind.SNAPSHOT, stamp(s, False), p + (stamp(s, False),), True, node=self.root(c),
                       ref=s, mtime_us=s, created_us=s) for s in self.snapshot_times(c)]

    def _history_children(self, c, it: Target) -> list[Target]:
        w = history.Walker(self, c)
        gens = it.ref or [Gen(dict(it.node), None)]
        if it.node["kind"] == "d":
            return [self._history_target(g, it.parts + (name,)) for name, g in w.members(gens).items()]
        return [self._version_target(v, it.parts + (name,), g) for v, g, name in
                self.named_versions(w, gens, it.name)]

    def _trash_children(self, c, it: Target) -> list[Target]:
        p = it.parts
        st, sub = it.ref
        if st is None:                                  # /.coffer/trash: the times things were deleted
            stamps = sorted({n["trashed_us"] for n, _ in self.trash_entries(c)})
            return [Target(Kind.TRASH, stamp(s), p + (stamp(s),), True, ref=(s, ()), mtime_us=s, created_us=s)
                    for s in stamps]
        out, seen = [], set()
        for node, tp in self.trash_entries(c, st):
            if tp[:len(sub)] != sub or len(tp) <= len(sub) or tp[len(sub)] in seen:
                continue
            name = tp[len(sub)]
            seen.add(name)
            if len(tp) == len(sub) + 1:
                out.append(self.node_target(node, p + (name,), Kind.TRASHED))
            else:
                out.append(Target(Kind.TRASH, name, p + (name,), True, ref=(st, sub + (name,)),
                                  mtime_us=st, created_us=st))
        return out

    def _trashed_children(self, c, it: Target) -> list[Target]:
        return [self.node_target(n, it.parts + (self.keys.name(c, it.node, n),), Kind.TRASHED)
                for n in t.children(c, it.node["id"])]

    def _snapshot_children(self, c, it: Target) -> list[Target]:
        return [self._snap_target(it.parts + (name,), it.ref, n, v)
                for name, n, v in self.snapshot_members(c, it.node["id"], it.ref)]

    _LISTERS = {Kind.TOP: _live_children, Kind.LIVE: _live_children, Kind.MOUNT: _live_children,
                Kind.SHARED: _shared_children, Kind.META: _meta_children, Kind.HISTORY: _history_children,
                Kind.TRASH: _trash_children, Kind.TRASHED: _trashed_children, Kind.SNAPSHOT: _snapshot_children}

    def page(self, c, it: Target, after: int, limit: int) -> tuple[list[Target], int | None] | None:
        """A page of a folder read by node id after `after` (live, history and
        trash folders: (targets, the last node id when the page is full));
        None for other folders, which are listed whole."""
        if it.kind in LIVE_KINDS or it.kind is Kind.TRASHED:
            kind = Kind.TRASHED if it.kind is Kind.TRASHED else Kind.LIVE
        elif it.kind is Kind.HISTORY and it.node["kind"] == "d" and not it.ref:
            kind = Kind.HISTORY
        else:
            return None
        rows = t.children_page(c, it.node["id"], after, limit)
        out = [self.node_target(n, it.parts + (self.keys.name(c, it.node, n),), kind,
                                c=c if kind is Kind.LIVE else None) for n in rows]
        if len(rows) == limit:
            return out, rows[-1]["id"]
        if it.kind is Kind.TOP and self.received(c):
            out.append(Target(Kind.SHARED, SHARED, (SHARED,), True, mtime_us=it.mtime_us))
        return out, None

    # -- /.coffer --------------------------------------------------------------------------------
    def _meta_dir(self, parts) -> Target:
        return Target(Kind.META, parts[-1], parts, True, mtime_us=meta.now_us(), created_us=0)

    def _resolve_meta(self, c, parts) -> Target:
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

    def _resolve_versions(self, c, parts, rest) -> Target:
        if not rest:
            return self._meta_dir(parts)
        if in_shared(rest) and len(rest) < 3:
            it = self.resolve(c, rest)
            return Target(Kind.SHARED, it.name, parts, True, ref=it.ref, mtime_us=it.mtime_us)
        w = history.Walker(self, c)
        try:
            return self._history_target(w.walk(rest), parts)
        except (NotFound, NotADirectory) as e:
            if len(rest) < 2:
                raise
            try:
                gens = history.of_kind(w.walk(rest[:-1]))
            except (NotFound, NotADirectory):
                raise e from None
            for v, g, name in self.named_versions(w, gens, rest[-2]):
                if rest[-1] in (name, version_name(v, rest[-2], True)):
                    return self._version_target(v, parts, g)
            raise NotFound(f"{paths.join(parts)}: no such version (purged, or thinned by retention)") from None

    def history_start(self, c, parts):
        """Where a walk through history starts: (generations, the names left
        to walk, the names walked) — a shared folder's top, or the home's."""
        if in_shared(parts):
            root = self.live(c, parts[:3])
            return [Gen(dict(root), None)], parts[3:], parts[:3]
        return [Gen(dict(self.root(c)), None)], parts, ()

    def _history_target(self, gens: list[Gen], parts) -> Target:
        """What /.coffer/versions/<path> is: the files (or folders) that lived there."""
        gens = history.of_kind(gens)
        it = self.node_target(gens[0].node, parts, Kind.HISTORY)
        it.ref = gens
        return it

    def named_versions(self, w, gens: list[Gen], file_name: str) -> list[tuple[dict, Gen, str]]:
        """Every kept version of the files that lived at a path, newest first,
        with its entry name. Two versions made in the same microsecond are
        told apart by their id; that longer name is accepted for every version."""
        rows = w.versions(gens)
        times = Counter(v["created_us"] for v, _ in rows)
        return [(v, g, version_name(v, file_name, times[v["created_us"]] > 1)) for v, g in rows]

    def path_versions(self, c, parts) -> list[tuple[dict, Gen, str]]:
        """Every kept version of every file that has lived at the path (see providers/history.py)."""
        from .errors import IsADirectory
        w = history.Walker(self, c)
        gens = history.of_kind(w.walk(parts))
        if gens[0].node["kind"] != "f":
            raise IsADirectory(f"{paths.join(parts)} is a folder: versions are kept per file")
        return self.named_versions(w, gens, parts[-1])

    def _version_target(self, v, parts, gen: Gen) -> Target:
        return Target(Kind.VERSION, parts[-1], parts, False, node=dict(gen.node), version=dict(v), ref=gen,
                      size=v["size"], mtime_us=v["mtime_us"], created_us=v["created_us"])

    def trash_entries(self, c, stamp_us=None):
        """Trashed subtree roots of the domains this principal owns, as
        (node, original path parts in the owner's tree)."""
        out = []
        doms = [(self.keys.home, ())]
        for row in uq.owned_share_domains(c, self.user_id):
            root = t.node(c, row["root_node_id"])
            doms.append((self.keys.domain(c, row["id"]), self.owner_path(c, root)))
        for dom, prefix in doms:
            for n in t.trashed(c, dom.id, stamp_us):
                path = crypto.open_trash_path(dom.keys, n["trash_path_enc"], n["id"])
                out.append((n, prefix + paths.parse(path)))
        return out

    def _resolve_trash(self, c, parts, rest) -> Target:
        if not rest:
            return Target(Kind.TRASH, parts[-1], parts, True, ref=(None, ()), mtime_us=meta.now_us())
        st = parse_stamp(rest[0])
        entries = self.trash_entries(c, st)
        if not entries:
            raise NotFound(f"{paths.join(parts[:3])}: nothing was deleted at that time")
        sub = rest[1:]
        if not sub:
            return Target(Kind.TRASH, parts[-1], parts, True, ref=(st, ()), mtime_us=st, created_us=st)
        for node, tp in entries:
            if sub[:len(tp)] == tp:
                found = self.walk(c, node, sub[len(tp):], parts[:3 + len(tp)])
                return self.node_target(found, parts, Kind.TRASHED)
        for node, tp in entries:
            if tp[:len(sub)] == sub:
                return Target(Kind.TRASH, parts[-1], parts, True, ref=(st, sub), mtime_us=st, created_us=st)
        raise NotFound(f"{paths.join(parts)} is not in the trash")

    def snapshot_members(self, c, dir_id, at_us):
        """(name, node, version) of what a folder held at a past time."""
        keys = self.keys.of(c, t.node(c, dir_id)).keys
        cands = t.candidates_at(c, dir_id)
        hist = {}
        for h in t.history_rows(c, [n["id"] for n in cands]):
            hist.setdefault(h["node_id"], []).append(h)
        out = []
        for n in cands:
            if not (n["created_us"] <= at_us and (n["trashed_us"] is None or n["trashed_us"] > at_us)):
                continue
            parent, name_enc, lookup = n["parent_id"], n["name_enc"], n["name_lookup"]
            for h in hist.get(n["id"], ()):            # where it was at that time
                if h["until_us"] > at_us:
                    parent, name_enc, lookup = h["parent_id"], h["name_enc"], h["name_lookup"]
                    break
            if parent != dir_id:
                continue
            try:
                name = crypto.decrypt_name(keys, name_enc, lookup)
            except IntegrityError:       # a name kept from before a move between domains
                continue
            v = None
            if n["kind"] == "f":
                v = t.version_at(c, n["id"], at_us)
                if v is None:
                    continue
            out.append((name, n, v))
        return out

    def _snap_target(self, parts, at_us, node, v) -> Target:
        if node["kind"] == "d":
            return Target(Kind.SNAPSHOT, parts[-1], parts, True, node=dict(node), ref=at_us,
                          mtime_us=min(node["mtime_us"], at_us), created_us=node["created_us"])
        return Target(Kind.SNAPSHOT_FILE, parts[-1], parts, False, node=dict(node), version=dict(v), size=v["size"],
                      mtime_us=v["mtime_us"], created_us=node["created_us"])

    def _resolve_snapshot(self, c, parts, at_us, rest) -> Target:
        node, v = self.root(c), None
        for i, name in enumerate(rest):
            if node["kind"] != "d":
                raise NotADirectory(f"{paths.join(parts[:3 + i])} is a file, not a folder")
            match = [(n, ver) for nm, n, ver in self.snapshot_members(c, node["id"], at_us) if nm == name]
            if not match:
                raise NotFound(f"{paths.join(parts)} did not exist at that time")
            node, v = match[0]
        return self._snap_target(parts, at_us, node, v)

    def snapshot_times(self, c) -> list[int]:
        """Times worth listing: the last change of each hour with changes."""
        seen, out = set(), []
        for us in t.version_times(c, self.keys.home.id):
            hour = us // 3_600_000_000
            if hour not in seen:
                seen.add(hour)
                out.append((us // 1_000_000 + 1) * 1_000_000)
        return sorted(out)[-500:]
