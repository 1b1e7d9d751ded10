"""Moving metadata from one set of domain keys to another, without touching
content: re-encrypt names, property values and hashes, recompute keyed
lookups, and re-wrap chunk keys. Used when a file or folder moves into or out
of a shared folder, when a folder becomes shared, and when a shared folder's
key is rotated after a revocation. WebDAV locks follow (providers/locks.py).
"""
from __future__ import annotations

import hashlib
import hmac
from collections import Counter

from . import crypto, locks
from .meta import tree as t

IMPORTED = "i:"      # marks dedup ids derived from another domain's id, not from the plaintext


def open_hashes(keys: crypto.DomainKeys, v) -> bytes:
    """A version's content hashes (the sealed JSON), opened."""
    return crypto.open_hashes(keys, v["hashes_enc"], v["node_id"], v["created_us"], v["size"])


def reseal_hashes(src: crypto.DomainKeys, dst: crypto.DomainKeys, v) -> bytes:
    return crypto.seal_hashes(dst, open_hashes(src, v), v["node_id"], v["created_us"], v["size"])


def prop_lookup(keys: crypto.DomainKeys, node_id: int, name: str) -> str:
    return crypto.name_lookup(keys, node_id, "prop:" + name)


def import_chunk(c, row, src: crypto.DomainKeys, dst_id: int, dst: crypto.DomainKeys, now: int) -> int:
    """A chunk row in the destination domain for the same stored blob, its key
    re-wrapped. Its dedup id is derived from the source id (the plaintext is
    not read), so importing the same chunk twice gives one row."""
    did = IMPORTED + hmac.new(dst.dedup, b"import:" + row["dedup_id"].encode(), hashlib.sha256).hexdigest()[:62]
    found = t.chunk_by_dedup(c, dst_id, did)
    if found is not None:
        return found["id"]
    key = crypto.open_sealed(src.wrap, bytes(row["wrapped_key"]), row["dedup_id"].encode(), "chunk key")
    return t.insert_chunk(c, domain_id=dst_id, dedup_id=did, blob_name=row["blob_name"],
                          blob_offset=row["blob_offset"], plain_size=row["plain_size"], stored_size=row["stored_size"],
                          wrapped_key=crypto.seal(dst.wrap, key, did.encode()),
                          stored_hash=row["stored_hash"], refcount=0, created_us=now)


def move_versions(c, version_rows, src_id: int, src: crypto.DomainKeys, dst_id: int,
                  dst: crypto.DomainKeys, now: int) -> list[str]:
    """Re-home versions into another domain: their chunk references move to
    chunk rows of the destination (same blobs), hashes are re-sealed.
    Returns blobs no longer referenced (none, normally)."""
    vids = [v["id"] for v in version_rows]
    if not vids:
        return []
    mapping: dict[int, int] = {}
    old, new = Counter(), Counter()
    for vid, seq, cid in t.chunk_refs_of_versions(c, vids):
        if cid not in mapping:
            mapping[cid] = import_chunk(c, t.chunk(c, cid, lock=True), src, dst_id, dst, now)
        t.set_version_chunk(c, vid, seq, mapping[cid])
        old[cid] += 1
        new[mapping[cid]] += 1
    t.add_usage(c, dst_id, t.add_refs(c, new))
    freed, blobs = t.drop_refs(c, old)
    t.add_usage(c, src_id, -freed)
    for v in version_rows:
        t.update_version(c, v["id"], domain_id=dst_id, hashes_enc=reseal_hashes(src, dst, v))
    return blobs


def rekey_nodes(c, node_ids: list[int], keep_name: set[int], src: crypto.DomainKeys, dst: crypto.DomainKeys,
                dst_id: int) -> None:
    """Re-encrypt the names, trash paths, history names and dead properties of
    nodes under new keys, and move them to domain `dst_id`. Nodes in
    `keep_name` keep their own name as is (it belongs to their parent's
    domain: a moved subtree's top, a shared folder's root)."""
    # what their properties cost moves with them (re-sealing keeps sizes)
    for old_id, cost in (t.prop_cost_by_domain(c, node_ids) if node_ids else {}).items():
        if old_id != dst_id:
            t.add_usage(c, old_id, -cost)
            t.add_usage(c, dst_id, cost)
    for nid in node_ids:
        n = t.node(c, nid)
        values = {"domain_id": dst_id}
        if nid not in keep_name:
            name = crypto.decrypt_name(src, n["name_enc"], n["name_lookup"])
            values["name_lookup"] = lookup = crypto.name_lookup(dst, n["parent_id"], name) if n["parent_id"] else "root"
            values["name_enc"] = crypto.encrypt_name(dst, name, lookup)
        if n["trash_path_enc"] is not None:
            values["trash_path_enc"] = crypto.seal_trash_path(
                dst, crypto.open_trash_path(src, n["trash_path_enc"], nid), nid)
        t.update_node(c, nid, **values)
    ids = [i for i in node_ids if i not in keep_name]
    if ids:
        for h in t.history_of(c, ids):
            reseal_history_name(c, h, src, dst)
    for p in t.props_of_nodes(c, node_ids) if node_ids else []:
        name, value = crypto.open_prop(src, p["node_id"], p["name_lookup"], p["name_enc"], p["value_enc"])
        t.set_prop(c, p["node_id"], p["name_lookup"], b"", None)
        lookup = prop_lookup(dst, p["node_id"], name)
        t.set_prop(c, p["node_id"], lookup, *crypto.seal_prop(dst, p["node_id"], lookup, name, value))


def reseal_history_name(c, h, src: crypto.DomainKeys, dst: crypto.DomainKeys) -> bool:
    """A recorded name (where a node was before a move) sealed under `dst`,
    bound to its lookup there. False, and left as it is, when `src` does not
    open it: a name kept from before a move between domains."""
    try:
        name = crypto.decrypt_name(src, h["name_enc"], h["name_lookup"])
    except crypto.IntegrityError:
        return False
    lookup = crypto.name_lookup(dst, h["parent_id"] or 0, name)
    t.set_history_name(c, h["id"], crypto.encrypt_name(dst, name, lookup), lookup)
    return True


def move_subtree(c, node_ids: list[int], top_id: int, src_id: int, src: crypto.DomainKeys, dst_id: int,
                 dst: crypto.DomainKeys, now: int, keep_top_name: bool) -> list[str]:
    """Move a subtree (files, folders, versions, trash, properties) from one
    key domain to another. Returns blobs to delete after commit."""
    rekey_nodes(c, node_ids, {top_id} if keep_top_name else set(), src, dst, dst_id)
    return move_versions(c, t.versions_of_nodes(c, node_ids), src_id, src, dst_id, dst, now)


def rotate_domain(c, domain_id: int, root_id: int, old: crypto.DomainKeys, new: crypto.DomainKeys) -> None:
    """Put everything of a domain under a new key, in place: WebDAV locks,
    names, lookups, properties, hashes and every chunk key (the content
    stays as stored)."""
    locks.rehome(c, domain_id, old, domain_id, new)
    ids = t.domain_node_ids(c, domain_id)
    rekey_nodes(c, ids, {root_id}, old, new, domain_id)
    for v in t.versions_of_nodes(c, ids):
        t.update_version(c, v["id"], hashes_enc=reseal_hashes(old, new, v))
    for row in list(t.domain_chunks(c, domain_id)):
        key = crypto.open_sealed(old.wrap, bytes(row["wrapped_key"]), row["dedup_id"].encode(), "chunk key")
        t.update_chunk(c, row["id"], wrapped_key=crypto.seal(new.wrap, key, row["dedup_id"].encode()))
