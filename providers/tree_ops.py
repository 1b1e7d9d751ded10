"""Operations on the live tree: mkdir, trash, move and copy (which, out
of /.coffer, restores). Each takes the principal's `Core`, whose gate it
passes first (providers/policy.py)."""
from __future__ import annotations

from collections import Counter

from . import crypto, guard, meta, paths, rekey
from .core import Entry
from .domains import Domain
from .errors import AlreadyExists, Conflict
from .meta import tree as t
from .meta import users as uq
from .policy import Op
from .publish import apply_retention
from .resolve import NODE_KINDS, Kind, Target, is_mount


def mkdir(fs, path) -> Entry:
    parts = paths.parse(path)
    now = meta.now_us()
    with fs.tx(True) as c:
        parent, dom = fs.parent_for_write(c, parts)
        lookup = crypto.name_lookup(dom.keys, parent["id"], parts[-1])
        if t.child(c, parent["id"], lookup) is not None:
            raise AlreadyExists(f"{paths.join(parts)} already exists")
        nid = t.insert_node(c, domain_id=dom.id, parent_id=parent["id"],
                            name_enc=crypto.encrypt_name(dom.keys, parts[-1], lookup), name_lookup=lookup,
                            kind="d", created_us=now, mtime_us=now, changed_us=now, size=0)
        t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
        item = fs.res.node_target(t.node(c, nid), parts, c=c)
    return fs.entry(item)


def trash(fs, c, node, now) -> None:
    """Move a subtree to the trash, remembering its path in its domain."""
    dom = fs.keys.of(c, node)
    rel = fs.res.domain_path(c, node)
    if node["kind"] == "f":
        guard.note(fs, c, dom.owner_id, changed_us=node["changed_us"])
    else:                               # a folder: the files in it
        guard.note(fs, c, dom.owner_id, t.files_among(c, t.subtree_ids(c, node["id"])))
    t.update_node(c, node["id"], trashed_us=now, changed_us=now,
                  trash_path_enc=crypto.seal_trash_path(dom.keys, paths.join(rel), node["id"]))


def _not_into_itself(verb: str, sp, dp) -> None:
    if dp[:len(sp)] == sp:
        raise Conflict(f"cannot {verb} {paths.join(sp)} into itself")
    if sp[:len(dp)] == dp:
        raise Conflict(f"cannot replace {paths.join(dp)}: it holds {paths.join(sp)}")


def move(fs, src, dst, overwrite: bool = True) -> Entry:
    """Rename or move a file or folder; its history goes along. Out of
    /.coffer/trash it restores, as `copy` does. A collaborator moving
    something out of a shared folder into another owner's tree gets a
    copy of it as it is now: the original, with every version, goes to
    the folder owner's trash (only the owner may destroy their history)."""
    sp, dp = paths.parse(src), paths.parse(dst)
    if paths.is_meta(sp) and sp[1:2] == ("trash",) and len(sp) > 2:
        return copy(fs, src, dst, overwrite)
    fs.by_layout(Op.REMOVE, sp)
    fs.by_layout(Op.CREATE, dp)
    if dp == sp:
        return fs.stat(dst)
    _not_into_itself("move", sp, dp)
    now = meta.now_us()
    drop: list[str] = []
    with fs.tx(True) as c:
        node = fs.resolve_for(c, Op.REMOVE, sp).node
        if len(dp) > len(sp):             # deeper: would its deepest entry pass the limit?
            paths.check_depth(dp, t.subtree_height(c, node["id"]) if node["kind"] == "d" else 1)
        src_parent = t.node(c, node["parent_id"])
        src_dom = fs.keys.of(c, src_parent)
        parent, dst_dom = fs.parent_for_write(c, dp)
        lookup = crypto.name_lookup(dst_dom.keys, parent["id"], dp[-1])
        target = t.child(c, parent["id"], lookup)
        if target is not None:
            if not overwrite:
                raise AlreadyExists(f"{paths.join(dp)} already exists")
            fs.allow(c, Op.REMOVE, fs.res.place(dp), dp, node=target)
            trash(fs, c, target, now)
        if src_dom.owner_id != fs.user.id and dst_dom.owner_id != src_dom.owner_id:
            drop += copy_out(fs, c, node, sp, src_dom, parent["id"], dst_dom, dp, now)
        else:
            drop += relocate(fs, c, node, src_dom, parent["id"], dst_dom, dp, now, sp)
            t.add_history(c, node, node["parent_id"], now)
        item = fs.res.node_target(t.child(c, parent["id"], lookup), dp,
                                    Kind.MOUNT if is_mount(dp) else Kind.LIVE, c=c)
    fs.st.delete_blobs(drop)
    return fs.entry(item)


def relocate(fs, c, node, src_dom: Domain, parent_id: int, dst_dom: Domain, dp, now, sp) -> list[str]:
    """Give a node (with what it holds) a new parent and name. Into another
    key domain its keys and names are re-wrapped; content is not touched."""
    drop: list[str] = []
    is_root = node["domain_id"] != src_dom.id          # a shared folder's top
    if is_root and dst_dom.id != fs.home.id:
        raise Conflict("a shared folder cannot be moved into another shared folder")
    if src_dom.id != dst_dom.id and not is_root:
        ids = t.subtree_ids(c, node["id"])
        if t.roots_among(c, ids[1:]):
            raise Conflict(f"{paths.join(sp)} holds a shared folder; it cannot move into or out of "
                           "another shared folder")
        drop += rekey.move_subtree(c, ids, node["id"], src_dom.id, src_dom.keys, dst_dom.id,
                                   dst_dom.keys, now, keep_top_name=True)
    excluded = fs.excludes(c, dst_dom, dp[-1], node) if node["kind"] == "f" else False
    guard.note(fs, c, src_dom.owner_id, changed_us=node["changed_us"])
    lookup = crypto.name_lookup(dst_dom.keys, parent_id, dp[-1])
    t.update_node(c, node["id"], parent_id=parent_id, changed_us=now, excluded=excluded, name_lookup=lookup,
                  name_enc=crypto.encrypt_name(dst_dom.keys, dp[-1], lookup))
    t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)
    t.update_node(c, parent_id, changed_us=now, mtime_us=now)
    if src_dom.owner_id != dst_dom.owner_id:
        fs.check_quota(c, dst_dom)
    return drop


def copy_out(fs, c, node, sp, src_dom: Domain, parent_id: int, dst_dom: Domain, dp, now) -> list[str]:
    """A collaborator's move out of a shared folder into another owner's
    tree: a copy of what is there now, and the original to the trash."""
    drop = copy_item(fs, c, fs.res.node_target(node, sp, c=c), parent_id, dst_dom, dp, None, now, True)
    trash(fs, c, node, now)
    t.update_node(c, node["parent_id"], changed_us=now, mtime_us=now)
    t.update_node(c, parent_id, changed_us=now, mtime_us=now)
    fs.check_quota(c, dst_dom)
    uq.audit(c, "share_moved_out", user_id=fs.user.id, actor="user",
             detail={"domain": src_dom.id, "owner": src_dom.owner_id})
    return drop


def untrash(fs, c, node, parent_id: int, dom: Domain, dp, now) -> list[str]:
    """Restore from the trash: the same node comes back at `dp`, so every
    version of every file in it comes along."""
    node = t.node(c, node["id"])
    src_dom = fs.keys.of(c, t.node(c, node["parent_id"]))
    drop = relocate(fs, c, node, src_dom, parent_id, dom, dp, now, dp)
    if node["trashed_us"] is not None:     # where it was until deleted, then nowhere until now
        t.add_history(c, node, node["parent_id"], node["trashed_us"])
        t.add_history(c, node, None, now)
        t.update_node(c, node["id"], trashed_us=None, trash_path_enc=None)
    else:                                  # out of a deleted folder
        t.add_history(c, node, node["parent_id"], now)
    return drop


def copy(fs, src, dst, overwrite: bool = True, recursive: bool = True) -> Entry:
    """Copy a file or folder; content is shared, not re-encrypted. A
    source in /.coffer restores: a version or a snapshot as a copy (a new
    version), a trash entry by bringing back the deleted file or folder
    itself, with its whole history (it leaves the trash)."""
    sp, dp = paths.parse(src), paths.parse(dst)
    fs.by_layout(Op.CREATE, dp)
    _not_into_itself("copy", sp, dp)
    now = meta.now_us()
    drop: list[str] = []
    with fs.tx(True) as c:
        item = fs.res.resolve(c, sp)
        if item.is_dir and recursive and item.node is not None:
            paths.check_depth(dp, t.subtree_height(c, item.node["id"]))
        parent, dom = fs.parent_for_write(c, dp)
        target = t.child(c, parent["id"], crypto.name_lookup(dom.keys, parent["id"], dp[-1]))
        if target is not None:
            if not overwrite:
                raise AlreadyExists(f"{paths.join(dp)} already exists")
            if target["kind"] == "d" or item.is_dir or untrashes(item, recursive):
                fs.allow(c, Op.REMOVE, fs.res.place(dp), dp, node=target)
                trash(fs, c, target, now)
                target = None
        drop += copy_item(fs, c, item, parent["id"], dom, dp, target, now, recursive)
        t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
        node = t.child(c, parent["id"], crypto.name_lookup(dom.keys, parent["id"], dp[-1]))
        fs.check_quota(c, dom)
        out = fs.res.node_target(node, dp, c=c)
    fs.st.delete_blobs(drop)
    return fs.entry(out)


def copy_item(fs, c, item: Target, parent_id, dom: Domain, dparts, target, now, recursive) -> list[str]:
    """Copy an item, and with `recursive` everything below it: a walk with
    its own stack, so no depth of tree runs into the interpreter's
    recursion limit."""
    drop: list[str] = []
    todo = [(item, parent_id, dparts, target)]
    while todo:
        it, pid, dp, tgt = todo.pop()
        if untrashes(it, recursive):
            drop += untrash(fs, c, it.node, pid, dom, dp, now)
        elif it.is_dir:
            nid = copy_folder(fs, c, it, pid, dom, dp[-1], now)
            if recursive:
                todo += [(ch, nid, dp + (ch.name,), None) for ch in fs.res.children(c, it)]
        else:
            drop += copy_file(fs, c, it, pid, dom, dp[-1], tgt, now)
    return drop


def copy_folder(fs, c, item: Target, parent_id, dom: Domain, name: str, now) -> int:
    lookup = crypto.name_lookup(dom.keys, parent_id, name)
    nid = t.insert_node(c, domain_id=dom.id, parent_id=parent_id,
                        name_enc=crypto.encrypt_name(dom.keys, name, lookup), name_lookup=lookup, kind="d",
                        created_us=now, mtime_us=item.mtime_us or now, changed_us=now, size=0)
    if item.kind in NODE_KINDS:
        copy_props(fs, c, item.node, nid, dom)
    return nid


def copy_file(fs, c, item: Target, parent_id, dom: Domain, name: str, target, now) -> list[str]:
    lookup = crypto.name_lookup(dom.keys, parent_id, name)
    excluded = fs.excludes(c, dom, name, target)   # the owner's patterns now, as a new version is written
    src_node = item.node if item.kind in NODE_KINDS else None
    v = item.version if item.version is not None else (
        t.version(c, item.node["version_id"]) if item.node["version_id"] else None)
    if target is None:
        nid = t.insert_node(c, domain_id=dom.id, parent_id=parent_id,
                            name_enc=crypto.encrypt_name(dom.keys, name, lookup), name_lookup=lookup, kind="f",
                            created_us=now, mtime_us=item.mtime_us or now, changed_us=now,
                            size=item.size, excluded=excluded,
                            mode=item.node["mode"] if item.node is not None else None)
    else:
        nid = target["id"]
    if src_node is not None:
        copy_props(fs, c, src_node, nid, dom)
    if v is None:
        t.update_node(c, nid, size=0, mtime_us=item.mtime_us or now, changed_us=now)
        return []
    src_dom = fs.keys.domain(c, v["domain_id"])
    rows = t.version_chunk_rows(c, v["id"])
    if src_dom.id == dom.id:
        chunk_ids = [r["id"] for r in rows]
    else:             # into another key domain: re-wrap chunk keys, content untouched
        mapping: dict[int, int] = {}
        for r in rows:
            if r["id"] not in mapping:
                mapping[r["id"]] = rekey.import_chunk(c, t.chunk(c, r["id"], lock=True), src_dom.keys, dom.id,
                                                      dom.keys, now)
        chunk_ids = [mapping[r["id"]] for r in rows]
    hashes = crypto.seal_hashes(dom.keys, rekey.open_hashes(src_dom.keys, v), nid, now, v["size"])
    gained = t.add_refs(c, Counter(chunk_ids))
    t.add_usage(c, dom.id, gained)
    vid = t.insert_version(c, node_id=nid, domain_id=dom.id, size=v["size"], stored_bytes=gained,
                           created_us=now, mtime_us=v["mtime_us"], author_id=fs.user.id,
                           hashes_enc=hashes)
    t.add_version_chunks(c, vid, chunk_ids)
    t.update_node(c, nid, version_id=vid, size=v["size"], mtime_us=v["mtime_us"], changed_us=now,
                  excluded=excluded)
    return apply_retention(fs, c, dom, nid, now)


def untrashes(item: Target, recursive: bool) -> bool:
    """Is copying this a restore from the trash (of the item itself, not a copy)?"""
    return item.kind is Kind.TRASHED and (recursive or not item.is_dir)


def copy_props(fs, c, src_node, dst_id: int, dom: Domain) -> None:
    """The source's dead properties replace the destination's, sealed anew
    for the destination node (they are bound to the node they belong to)."""
    src_dom = fs.keys.of(c, src_node)
    t.clear_props(c, dst_id)
    for r in t.props(c, src_node["id"]):
        name, value = crypto.open_prop(src_dom.keys, src_node["id"], r["name_lookup"], r["name_enc"], r["value_enc"])
        lookup = rekey.prop_lookup(dom.keys, dst_id, name)
        t.set_prop_charged(c, dom.id, dst_id, lookup, *crypto.seal_prop(dom.keys, dst_id, lookup, name, value))
