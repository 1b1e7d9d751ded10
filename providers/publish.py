"""Publishing a finished upload: its chunks, the version and the file's
node in one transaction, and retention applied to the file's versions."""
from __future__ import annotations

import json
from collections import Counter

from . import crypto, guard, meta, paths, retention, small_blobs
from .errors import AlreadyExists, Conflict, IsADirectory
from .meta import tree as t
from .purging import drop_versions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .core import Entry
    from .streams import Writer


def publish_version(fs, w: Writer) -> Entry:
    """Make a finished stream the file's current version, in one transaction."""
    parts = w.parts
    now = meta.now_us()
    drop_blobs: list[str] = []
    with fs.tx(True) as c:
        parent, dom = fs.parent_for_write(c, parts)
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
        new_rows, small_rows = [], []
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
            if pc.small is not None:
                small_rows.append(dict(name=pc.blob_name, data=pc.small, created_us=now))
            ids[pc.dedup_id] = 0
            new_rows.append(dict(domain_id=dom.id, dedup_id=pc.dedup_id, blob_name=pc.blob_name,
                                 blob_offset=pc.blob_offset, plain_size=pc.plain_size,
                                 stored_size=pc.stored_size,
                                 wrapped_key=pc.wrapped_key, stored_hash=pc.stored_hash,
                                 refcount=0, created_us=now))
        small_blobs.insert_rows(c, small_rows)
        ids.update(t.insert_chunks(c, new_rows))
        # blobs this upload wrote that hold none of its new chunks (a
        # concurrent upload stored the same content first)
        drop_blobs += [name for name in w.stored_blobs() if name not in used_blobs]
        refs = Counter(ids[pc.dedup_id] for pc in w.chunks)
        gained = t.add_refs(c, refs)
        t.add_usage(c, dom.id, gained)
        if gained:
            fs.check_quota(c, dom)
        mtime = w.mtime_us or now
        # the owner's patterns as they are now: a file that came to match one
        # keeps no history from this write on, one that no longer does keeps it again
        excluded = fs.excludes(c, dom, parts[-1], cur)
        if cur is None:
            nid = t.insert_node(c, domain_id=dom.id, parent_id=parent["id"],
                                name_enc=crypto.encrypt_name(dom.keys, parts[-1], lookup), name_lookup=lookup,
                                kind="f", mode=None, created_us=now, mtime_us=mtime, changed_us=now,
                                size=w.size, excluded=excluded)
        else:
            nid = cur["id"]
            guard.note(fs, c, dom.owner_id, changed_us=cur["changed_us"])
        hashes = crypto.seal_hashes(dom.keys, json.dumps(w.hashes()).encode(), nid, now, w.size)
        vid = t.insert_version(c, node_id=nid, domain_id=dom.id, size=w.size, stored_bytes=gained,
                               created_us=now, mtime_us=mtime, author_id=fs.user.id, hashes_enc=hashes)
        t.add_version_chunks(c, vid, [ids[pc.dedup_id] for pc in w.chunks])
        t.update_node(c, nid, version_id=vid, size=w.size, mtime_us=mtime, changed_us=now, excluded=excluded)
        t.update_node(c, parent["id"], changed_us=now, mtime_us=now)
        drop_blobs += apply_retention(fs, c, dom, nid, now)
        node = t.node(c, nid)
        item = fs.res.node_target(node, parts, c=c)
    fs.st.delete_blobs(drop_blobs)
    return fs.entry(item)


def apply_retention(fs, c, dom, node_id, now) -> list[str]:
    node = t.node(c, node_id)
    rows = t.versions_of(c, node_id)
    rows = [r for r in rows if r["id"] == node["version_id"]] + \
           [r for r in rows if r["id"] != node["version_id"]]
    if node["excluded"]:
        keep = {0}
    else:
        # a collaborator's write never drops what the owner's age tiers keep
        keep = retention.thin([r["created_us"] for r in rows], now, fs.retention_of(c, dom)[0],
                              cap=dom.owner_id == fs.user.id)
    drop = [r["id"] for i, r in enumerate(rows) if i not in keep]
    if not drop or guard.holding(c, dom.owner_id, now):     # a mass change is held: nothing is removed
        return []
    return drop_versions(c, dom.id, drop)
