"""Purging: versions, trash entries and whole histories deleted for good,
and retention applied to an account (which needs no keys)."""
from __future__ import annotations

from collections import Counter

from . import crypto, guard, history, meta, paths, retention
from .core import excluded
from .errors import Conflict, NotADirectory, NotFound
from .meta import tree as t
from .meta import users as uq
from .policy import Op
from .resolve import Kind, Target


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
    young = now - policy.min_age_days * retention.DAY
    with storage.db.write() as c:
        if guard.holding(c, user.id, now):        # a mass change is held: nothing is removed
            return dict(counts, held=1)
        domain_ids = uq.owned_domain_ids(c, user.id)
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
                # quota pressure never removes versions younger than min_age_days
                kept_old += [(v.id, v.created_us, v.stored_bytes) for i, v in enumerate(vs)
                             if i in keep and i and v.created_us < young]
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


DROP_BATCH = 200         # files per write transaction: other writers wait for one batch at most


def drop_excluded_history(fs, pattern: str) -> dict:
    """Apply a new exclusion pattern to the files an account already has:
    each file of its home and of the folders it shares whose name matches
    is marked excluded and its old versions are purged for good, only the
    current one kept (a deleted file keeps the version its trash entry
    holds). Names are encrypted, so this needs the account's keys: `fs` is
    its open filesystem. Names are matched in one read transaction, the
    files changed in batches; each batch is recorded as a `history_dropped`
    audit event (counts, not the pattern: the database keeps no plaintext
    names). Run again after an interruption, it finishes the job."""
    found = []
    with fs.tx() as c:
        for did in uq.owned_domain_ids(c, fs.user.id):
            keys = fs.keys.domain(c, did).keys
            found += [(did, n["id"], bytes(n["name_enc"])) for n in t.file_names(c, did)
                      if excluded(crypto.decrypt_name(keys, n["name_enc"], n["name_lookup"]), (pattern,))]
    total = {"files": 0, "versions": 0, "freed_bytes": 0}
    for i in range(0, len(found), DROP_BATCH):
        counts = _drop_batch(fs, found[i:i + DROP_BATCH])
        for k, v in counts.items():
            total[k] += v
    return total


def _drop_batch(fs, found) -> dict:
    counts = {"files": 0, "versions": 0, "freed_bytes": 0}
    blobs: list[str] = []
    with fs.tx(True) as c:
        before = uq.owner_usage(c, fs.user.id)
        nodes = {}
        for did, nid, name_enc in found:
            node = t.node(c, nid)
            # purged, moved or renamed since it was matched: its name now decides, at its next write
            if node is not None and node["domain_id"] == did and bytes(node["name_enc"]) == name_enc:
                nodes[nid] = node
        old: dict[int, list[int]] = {}
        for v in t.versions_of_nodes(c, list(nodes)) if nodes else ():
            if v["id"] != nodes[v["node_id"]]["version_id"]:
                old.setdefault(v["node_id"], []).append(v["id"])
        for nid, node in nodes.items():
            if node["excluded"] and nid not in old:
                continue
            counts["files"] += 1
            t.update_node(c, nid, excluded=True)
            if nid in old:
                counts["versions"] += len(old[nid])
                blobs += drop_versions(c, node["domain_id"], old[nid])
        counts["freed_bytes"] = before - uq.owner_usage(c, fs.user.id)
        if counts["files"]:
            uq.audit(c, "history_dropped", user_id=fs.user.id, actor="admin", detail=counts)
    fs.st.delete_blobs(blobs)
    return counts


def purge_in_coffer(fs, parts) -> None:
    with fs.tx(True) as c:
        it = fs.resolve_for(c, Op.PURGE, parts)
        guard.refuse_purge(c, fs.user.id, paths.join(parts))
        if it.kind is Kind.VERSION:
            blobs, count = purge_version(fs, c, it, parts), 1
        elif it.kind is Kind.HISTORY:
            blobs, count = purge_path(fs, c, parts[2:], it.ref)
        elif it.kind is Kind.TRASHED:
            blobs, count = purge_nodes(c, [it.node["id"]])
        else:
            st, sub = it.ref
            blobs, count = purge_nodes(c, [n["id"] for n, tp in fs.res.trash_entries(c, st)
                                                 if tp[:len(sub)] == sub])
        audit_purge(fs, c, it.node, parts[1], count)
    fs.st.delete_blobs(blobs)


def audit_purge(fs, c, node, what: str, versions: int) -> None:
    uq.audit(c, "history_purged", user_id=fs.user.id, actor=fs.actor,
             detail={"domain": node["domain_id"] if node else fs.home.id, "from": what, "versions": versions})


def purge_version(fs, c, it: Target, parts) -> list[str]:
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


def purge_path(fs, c, parts, gens=None) -> tuple[list[str], int]:
    """Purge every file or folder that has lived at a path, with its versions and trash entries."""
    if gens is None:
        try:
            gens = history.Walker(fs.res, c).walk(parts)
        except (NotFound, NotADirectory):
            gens = []
    roots, kind = [], fs.res.place(parts)
    for g in gens:
        fs.allow(c, Op.PURGE, kind, parts, node=g.node)
        roots.append(g.id)
    roots += [n["id"] for n, tp in fs.res.trash_entries(c) if tp[:len(parts)] == parts]
    if not roots:
        raise NotFound(f"{paths.join(parts)} is neither in the tree nor in the trash")
    return purge_nodes(c, list(dict.fromkeys(roots)))
