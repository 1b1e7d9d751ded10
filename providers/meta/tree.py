"""Queries on the file tree: nodes, versions, chunks, history, dead properties."""
from __future__ import annotations

from sqlalchemy import BigInteger, bindparam, cast, delete, func, insert, literal, or_, select, update

from .db import HotQuery, HotStatement
from .schema import chunks, dead_props, domains, node_history, nodes, small_blobs, version_chunks, versions

NODE_COLS = (nodes.c.id, nodes.c.domain_id, nodes.c.parent_id, nodes.c.name_enc, nodes.c.name_lookup,
             nodes.c.kind, nodes.c.mode,
             nodes.c.created_us, nodes.c.mtime_us, nodes.c.changed_us, nodes.c.version_id, nodes.c.size,
             nodes.c.trashed_us, nodes.c.trash_path_enc, nodes.c.excluded)


# The hottest statements are built once (building a statement costs more
# than running it on SQLite).
_NODE = select(*NODE_COLS).where(nodes.c.id == bindparam("i"))
_CHILD = select(*NODE_COLS).where(nodes.c.parent_id == bindparam("p"), nodes.c.name_lookup == bindparam("l"),
                                  nodes.c.trashed_us.is_(None))
_VERSIONS_OF = select(versions).where(versions.c.node_id == bindparam("n")).order_by(
    versions.c.created_us.desc(), versions.c.id.desc())
_CHUNK_BY_DEDUP = select(chunks).where(chunks.c.domain_id == bindparam("d"), chunks.c.dedup_id == bindparam("x"))
_CHUNK_ID_BY_DEDUP = select(chunks.c.id).where(chunks.c.domain_id == bindparam("d"),
                                               chunks.c.dedup_id == bindparam("x"))
_BATCH = 500                # ids per IN (...) list: well under every database's parameter limit


_HOT_NODE = HotQuery(_NODE)
_HOT_CHILD = HotQuery(_CHILD)
_HOT_CHUNK_ID = HotQuery(_CHUNK_ID_BY_DEDUP)
_HOT_NAMED = HotQuery(select(*NODE_COLS).where(nodes.c.parent_id == bindparam("p"),
                                                nodes.c.name_lookup == bindparam("l")))
_HOT_VERSIONS_OF = HotQuery(_VERSIONS_OF)
# the offset is a parameter too: SQLite's dialect writes "LIMIT ? OFFSET ?" for a bound limit
_HOT_CHILDREN = HotQuery(select(*NODE_COLS).where(nodes.c.parent_id == bindparam("p"), nodes.c.trashed_us.is_(None)))
_HOT_PROPS = HotQuery(select(dead_props).where(dead_props.c.node_id == bindparam("i")))
_HOT_PROPS_OF_NODES = HotQuery(select(dead_props).where(dead_props.c.node_id.in_(bindparam("ids", expanding=True))))
_HOT_CHILDREN_PAGE = HotQuery(select(*NODE_COLS).where(nodes.c.parent_id == bindparam("p"), nodes.c.trashed_us.is_(None),
                                                        nodes.c.id > bindparam("a"))
                              .order_by(nodes.c.id).limit(bindparam("n")).offset(bindparam("o")))
_HOT_VERSION = HotQuery(select(versions).where(versions.c.id == bindparam("i")))
_HOT_VERSION_CHUNKS = HotQuery(
    select(chunks.c.id, chunks.c.dedup_id, chunks.c.blob_name, chunks.c.blob_offset, chunks.c.plain_size,
           chunks.c.stored_size, chunks.c.wrapped_key, small_blobs.c.data.label("small"))
    .select_from(version_chunks.join(chunks, chunks.c.id == version_chunks.c.chunk_id)
                 .outerjoin(small_blobs, small_blobs.c.name == chunks.c.blob_name))
    .where(version_chunks.c.version_id == bindparam("v")).order_by(version_chunks.c.seq))
_HOT_CHUNK_REF = HotQuery(select(chunks.c.id, chunks.c.dedup_id, chunks.c.blob_name, chunks.c.refcount,
                                 chunks.c.stored_size).where(chunks.c.domain_id == bindparam("d"),
                                                             chunks.c.dedup_id == bindparam("x")))
_HOT_REFCOUNT = HotQuery(select(chunks.c.refcount, chunks.c.stored_size).where(chunks.c.id == bindparam("i")))
_INSERT_NODE = HotStatement(insert(nodes), returns_id=True)
_UPDATE_NODE = HotStatement(update(nodes).where(nodes.c.id == bindparam("w_id")))
_INSERT_VERSION = HotStatement(insert(versions), returns_id=True)
_UPDATE_VERSION = HotStatement(update(versions).where(versions.c.id == bindparam("w_id")))
_INSERT_CHUNK = HotStatement(insert(chunks), returns_id=True)
_INSERT_VERSION_CHUNKS = HotStatement(insert(version_chunks))
_INSERT_HISTORY = HotStatement(insert(node_history))
_ADD_USAGE = HotStatement(update(domains).where(domains.c.id == bindparam("w_id")).values(
    used_bytes=domains.c.used_bytes + bindparam("delta")))


def node(c, node_id: int):
    return _HOT_NODE.first(c, {"i": node_id})


def child(c, parent_id: int, lookup: str):
    return _HOT_CHILD.first(c, {"p": parent_id, "l": lookup})


def children(c, parent_id: int):
    return _HOT_CHILDREN.all(c, {"p": parent_id})


def children_page(c, parent_id: int, after_id: int, limit: int):
    """Up to `limit` live children with ids above `after_id`, by id (keyset
    pagination: a folder changing meanwhile never repeats or skips a member
    that stays)."""
    return _HOT_CHILDREN_PAGE.all(c, {"p": parent_id, "a": after_id, "n": limit, "o": 0})


def named(c, parent_id: int, lookup: str):
    """Every node that has this name in this folder: the live one and the
    deleted ones (a trashed node keeps its parent and keyed name)."""
    return _HOT_NAMED.all(c, {"p": parent_id, "l": lookup})


def children_any(c, parent_ids: list[int]):
    """The members of these folders, live and deleted."""
    out = []
    for i in range(0, len(parent_ids), _BATCH):
        out += c.execute(select(*NODE_COLS).where(nodes.c.parent_id.in_(parent_ids[i:i + _BATCH]))).mappings().all()
    return out


def has_children(c, parent_id: int) -> bool:
    return c.execute(select(nodes.c.id).where(nodes.c.parent_id == parent_id, nodes.c.trashed_us.is_(None))
                     .limit(1)).first() is not None


def insert_node(c, **values) -> int:
    return _INSERT_NODE.run(c, values)


def update_node(c, node_id: int, **values) -> None:
    _UPDATE_NODE.run(c, {**values, "w_id": node_id})


def subtree_height(c, root_id: int) -> int:
    """Levels in the live subtree of a node: 1 for a file or an empty folder."""
    base = select(nodes.c.id, literal(1).label("level")).where(nodes.c.id == root_id).cte("tall", recursive=True)
    rec = base.union_all(select(nodes.c.id, base.c.level + 1).where(nodes.c.parent_id == base.c.id,
                                                                     nodes.c.trashed_us.is_(None)))
    return c.execute(select(func.max(rec.c.level))).scalar() or 1


def subtree_ids(c, root_id: int, live_only: bool = False) -> list[int]:
    """The node and everything below it (recursive query)."""
    cond = nodes.c.trashed_us.is_(None) if live_only else literal(True)
    base = select(nodes.c.id).where(nodes.c.id == root_id).cte("sub", recursive=True)
    rec = base.union_all(select(nodes.c.id).where(nodes.c.parent_id == base.c.id, cond))
    return [r[0] for r in c.execute(select(rec.c.id))]


def ancestors(c, node_id: int) -> list[int]:
    out = []
    while node_id is not None:
        out.append(node_id)
        node_id = c.execute(select(nodes.c.parent_id).where(nodes.c.id == node_id)).scalar()
    return out


def trashed(c, domain_id: int, stamp_us=None):
    q = select(*NODE_COLS).where(nodes.c.domain_id == domain_id, nodes.c.trashed_us.is_not(None))
    if stamp_us is not None:
        q = q.where(nodes.c.trashed_us == stamp_us)
    return c.execute(q.order_by(nodes.c.trashed_us)).mappings().all()


def trashed_before(c, before_us: int):
    return c.execute(select(nodes.c.id, nodes.c.domain_id).where(nodes.c.trashed_us.is_not(None),
                                                                 nodes.c.trashed_us < before_us)).all()


def delete_nodes(c, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for domain_id, cost in prop_cost_by_domain(c, part).items():
            add_usage(c, domain_id, -cost)
        c.execute(delete(node_history).where(node_history.c.node_id.in_(part)))
        c.execute(delete(dead_props).where(dead_props.c.node_id.in_(part)))
        c.execute(delete(nodes).where(nodes.c.id.in_(part)))


# -- history (for snapshot views) ------------------------------------------------------

def add_history(c, node, parent_id: int | None, until_us: int) -> None:
    """Record that `node` was in `parent_id` (None: nowhere) under its
    present name until `until_us` (its sealed name and lookup, copied)."""
    _INSERT_HISTORY.run(c, dict(node_id=node["id"], parent_id=parent_id, name_enc=node["name_enc"],
                                name_lookup=node["name_lookup"], until_us=until_us))


def history_rows(c, node_ids: list[int]):
    if not node_ids:
        return []
    return c.execute(select(node_history).where(node_history.c.node_id.in_(node_ids))
                     .order_by(node_history.c.until_us)).mappings().all()


def candidates_at(c, parent_id: int):
    """Nodes that are, or ever were, children of `parent_id`."""
    past = select(node_history.c.node_id).where(node_history.c.parent_id == parent_id)
    return c.execute(select(*NODE_COLS).where(or_(nodes.c.parent_id == parent_id, nodes.c.id.in_(past)))
                     ).mappings().all()


# -- versions ------------------------------------------------------------------------------

def insert_version(c, **values) -> int:
    return _INSERT_VERSION.run(c, values)


def version(c, version_id: int):
    return _HOT_VERSION.first(c, {"i": version_id})


def versions_of(c, node_id: int):
    return _HOT_VERSIONS_OF.all(c, {"n": node_id})


def version_at(c, node_id: int, at_us: int):
    return c.execute(select(versions).where(versions.c.node_id == node_id, versions.c.created_us <= at_us)
                     .order_by(versions.c.created_us.desc(), versions.c.id.desc()).limit(1)).mappings().first()


def versions_for_nodes(c, node_ids: list[int]):
    return c.execute(select(versions.c.id, versions.c.node_id).where(versions.c.node_id.in_(node_ids))).all()


def version_times(c, domain_id: int, limit: int = 2000) -> list[int]:
    return [r[0] for r in c.execute(select(versions.c.created_us).where(versions.c.domain_id == domain_id)
                                    .order_by(versions.c.created_us.desc()).limit(limit))]


def version_chunk_rows(c, version_id: int):
    return _HOT_VERSION_CHUNKS.all(c, {"v": version_id})


def add_version_chunks(c, version_id: int, chunk_ids: list[int]) -> None:
    _INSERT_VERSION_CHUNKS.run_many(c, [{"version_id": version_id, "seq": i, "chunk_id": cid}
                                        for i, cid in enumerate(chunk_ids)])


def delete_version(c, version_id: int) -> list[int]:
    """Remove a version; returns the chunk ids it referenced (one per reference)."""
    ids = [r[0] for r in c.execute(select(version_chunks.c.chunk_id)
                                   .where(version_chunks.c.version_id == version_id))]
    c.execute(delete(version_chunks).where(version_chunks.c.version_id == version_id))
    c.execute(delete(versions).where(versions.c.id == version_id))
    return ids


# -- chunks ------------------------------------------------------------------------------

def chunk_by_dedup(c, domain_id: int, dedup_id: str):
    return c.execute(_CHUNK_BY_DEDUP, {"d": domain_id, "x": dedup_id}).mappings().first()


def chunk_id_by_dedup(db, domain_id: int, dedup_id: str) -> int | None:
    """Looked up for each chunk an upload makes: a lookup of its own."""
    row = db.lookup(_HOT_CHUNK_ID, {"d": domain_id, "x": dedup_id})
    return None if row is None else row["id"]


def chunks_by_dedup(c, domain_id: int, dedup_ids) -> dict[str, dict]:
    """The domain's chunks with these dedup ids, by dedup id (a query per 500)."""
    ids, found = list(dedup_ids), {}
    if len(ids) == 1:                  # a small file: the prepared single-row query
        row = _HOT_CHUNK_REF.first(c, {"d": domain_id, "x": ids[0]})
        return {} if row is None else {ids[0]: row}
    for i in range(0, len(ids), _BATCH):
        for row in c.execute(select(chunks.c.id, chunks.c.dedup_id, chunks.c.blob_name)
                             .where(chunks.c.domain_id == domain_id,
                                    chunks.c.dedup_id.in_(ids[i:i + _BATCH]))).mappings():
            found[row["dedup_id"]] = dict(row)
    return found


def insert_chunk(c, **values) -> int:
    return _INSERT_CHUNK.run(c, values)


def insert_chunks(c, rows: list[dict]) -> dict[str, int]:
    """Insert chunks of one domain in one statement per batch; their ids by dedup id."""
    out = {}
    if len(rows) == 1:
        return {rows[0]["dedup_id"]: insert_chunk(c, **rows[0])}
    for i in range(0, len(rows), _BATCH):
        for r in c.execute(insert(chunks).returning(chunks.c.id, chunks.c.dedup_id), rows[i:i + _BATCH]):
            out[r.dedup_id] = r.id
    return out


# A chunk is charged to its domain as the disk blocks it takes: its stored
# size rounded up to BLOCK (a small file's chunk has a blob file of its own,
# which takes a whole block).
BLOCK = 4096
_CHARGED = (chunks.c.stored_size + (BLOCK - 1)) // BLOCK * BLOCK


def charged(stored_size: int) -> int:
    return -(-stored_size // BLOCK) * BLOCK


_ADD_REFS = update(chunks).where(chunks.c.id == bindparam("cid")).values(
    refcount=chunks.c.refcount + bindparam("n"))
_ADD_REFS_HOT = HotStatement(_ADD_REFS)


def add_refs(c, counts: dict[int, int]) -> int:
    """Add references; returns the stored bytes of chunks that went from 0 to >0."""
    ids, gained = list(counts), 0
    if len(ids) == 1:
        row = _HOT_REFCOUNT.first(c, {"i": ids[0]})
        _ADD_REFS_HOT.run(c, {"cid": ids[0], "n": counts[ids[0]]})
        return charged(row["stored_size"]) if row is not None and row["refcount"] == 0 else 0
    for i in range(0, len(ids), _BATCH):
        for row in c.execute(select(chunks.c.refcount, chunks.c.stored_size)
                             .where(chunks.c.id.in_(ids[i:i + _BATCH]), chunks.c.refcount == 0)):
            gained += charged(row.stored_size)
    if ids:
        c.execute(_ADD_REFS, [{"cid": cid, "n": n} for cid, n in counts.items()])
    return gained


def drop_refs(c, counts: dict[int, int]) -> tuple[int, list[str]]:
    """Drop references; chunks left with none are deleted. Returns (stored
    bytes freed, blob names to delete once the transaction commits)."""
    freed, blobs = 0, []
    for cid, n in counts.items():
        c.execute(update(chunks).where(chunks.c.id == cid).values(refcount=chunks.c.refcount - n))
        row = c.execute(select(chunks.c.refcount, chunks.c.stored_size, chunks.c.blob_name)
                        .where(chunks.c.id == cid)).first()
        if row.refcount <= 0:
            freed += charged(row.stored_size)
            c.execute(delete(chunks).where(chunks.c.id == cid))
            if c.execute(select(func.count()).select_from(chunks)
                         .where(chunks.c.blob_name == row.blob_name)).scalar_one() == 0:
                blobs.append(row.blob_name)
    return freed, blobs


def add_usage(c, domain_id: int, delta: int) -> None:
    if delta:
        _ADD_USAGE.run(c, {"w_id": domain_id, "delta": delta})


def domain_chunks(c, domain_id=None):
    q = select(chunks)
    if domain_id is not None:
        q = q.where(chunks.c.domain_id == domain_id)
    return c.execute(q.order_by(chunks.c.id)).mappings()


def chunk_users(c, chunk_id: int):
    """(version id, node id) pairs that reference a chunk: fsck names damaged files."""
    return c.execute(select(versions.c.id, versions.c.node_id).select_from(
        version_chunks.join(versions, versions.c.id == version_chunks.c.version_id))
        .where(version_chunks.c.chunk_id == chunk_id).distinct()).all()


def chunk_location(c, chunk_id: int) -> tuple[str, int] | None:
    row = c.execute(select(chunks.c.blob_name, chunks.c.blob_offset).where(chunks.c.id == chunk_id)).first()
    return None if row is None else (row.blob_name, row.blob_offset)


def live_bytes_by_blob(c) -> dict[str, int]:
    """Bytes of each blob that chunks still use (rows sharing a location,
    as an imported chunk does, count once)."""
    loc = select(chunks.c.blob_name, chunks.c.blob_offset, chunks.c.stored_size).distinct().subquery()
    return dict(c.execute(select(loc.c.blob_name, cast(func.sum(loc.c.stored_size), BigInteger)).group_by(loc.c.blob_name)).all())


def blob_locations(c, blob_name: str) -> list[tuple[int, int]]:
    """(offset, stored size) of every chunk location in use in one blob."""
    return [tuple(r) for r in c.execute(select(chunks.c.blob_offset, chunks.c.stored_size).distinct()
                                        .where(chunks.c.blob_name == blob_name).order_by(chunks.c.blob_offset))]


def move_chunk(c, blob_name: str, offset: int, new_name: str, new_offset: int) -> None:
    c.execute(update(chunks).where(chunks.c.blob_name == blob_name, chunks.c.blob_offset == offset)
              .values(blob_name=new_name, blob_offset=new_offset))


def all_blob_names(c) -> set[str]:
    return {r[0] for r in c.execute(select(chunks.c.blob_name))}


def delete_chunk_rows(c, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        c.execute(delete(chunks).where(chunks.c.id.in_(ids[i:i + 500])))


def zero_ref_chunks(c):
    return c.execute(select(chunks.c.id, chunks.c.blob_name).where(chunks.c.refcount <= 0)).all()


def recount_refs(c) -> int:
    """Set every chunk's refcount from version_chunks; returns rows fixed."""
    fixed = 0
    counts = dict(c.execute(select(version_chunks.c.chunk_id, func.count())
                            .group_by(version_chunks.c.chunk_id)).all())
    for cid, ref in c.execute(select(chunks.c.id, chunks.c.refcount)).all():
        if counts.get(cid, 0) != ref:
            c.execute(update(chunks).where(chunks.c.id == cid).values(refcount=counts.get(cid, 0)))
            fixed += 1
    return fixed


def recompute_usage(c) -> None:
    """Each domain's usage from what it stores: its chunks and its dead properties."""
    for did, in c.execute(select(domains.c.id)).all():
        used = c.execute(select(cast(func.coalesce(func.sum(_CHARGED), 0), BigInteger))
                         .where(chunks.c.domain_id == did, chunks.c.refcount > 0)).scalar_one()
        used += prop_bytes(c, [did])
        c.execute(update(domains).where(domains.c.id == did).values(used_bytes=used))


def usage_parts(c, owner_id: int) -> dict[str, int]:
    """Of what the account's own domains store (charged as in `used_bytes`),
    the chunks only old versions use, and those only the trash uses (a
    chunk a current file also uses counts for the files):
    {"old_versions": bytes, "trash": bytes}."""
    owned = select(domains.c.id).where(domains.c.owner_id == owner_id)
    base = select(nodes.c.id).where(nodes.c.domain_id.in_(owned), nodes.c.trashed_us.is_not(None)
                                    ).cte("binned", recursive=True)
    binned = base.union_all(select(nodes.c.id).where(nodes.c.parent_id == base.c.id))
    uses = select(version_chunks.c.chunk_id).join(versions, versions.c.id == version_chunks.c.version_id)
    current = uses.join(nodes, nodes.c.id == versions.c.node_id).where(
        nodes.c.version_id == versions.c.id, nodes.c.trashed_us.is_(None), nodes.c.id.not_in(select(binned.c.id)))
    in_trash = uses.where(versions.c.node_id.in_(select(binned.c.id)))
    total = cast(func.coalesce(func.sum(_CHARGED), 0), BigInteger)
    stored = select(total).where(chunks.c.domain_id.in_(owned), chunks.c.refcount > 0,
                                 chunks.c.id.not_in(current))
    trash = c.execute(stored.where(chunks.c.id.in_(in_trash))).scalar_one()
    old = c.execute(stored.where(chunks.c.id.not_in(in_trash))).scalar_one()
    return {"old_versions": int(old), "trash": int(trash)}


def version_rows_for_domain(c, domain_id: int):
    return c.execute(select(versions.c.id, versions.c.node_id, versions.c.created_us, versions.c.stored_bytes)
                     .where(versions.c.domain_id == domain_id)
                     .order_by(versions.c.node_id, versions.c.created_us.desc())).all()


# -- dead properties -------------------------------------------------------------------------
# A property is charged to its domain's usage as what it stores: its sealed
# name and value, and PROP_ROW_BYTES for its row and index entry. Re-sealing
# keeps sizes, so re-keying moves a charge between domains unchanged.

PROP_ROW_BYTES = 100
_PROP_COST = func.length(dead_props.c.name_enc) + func.length(dead_props.c.value_enc) + PROP_ROW_BYTES


def prop_cost(name_enc: bytes, value_enc: bytes) -> int:
    return len(name_enc) + len(value_enc) + PROP_ROW_BYTES


def prop_bytes(c, domain_ids) -> int:
    """What the dead properties of these domains' nodes cost."""
    return int(c.execute(select(cast(func.coalesce(func.sum(_PROP_COST), 0), BigInteger)).select_from(
        dead_props.join(nodes, nodes.c.id == dead_props.c.node_id)).where(nodes.c.domain_id.in_(list(domain_ids)))
    ).scalar_one())


def prop_cost_by_domain(c, node_ids) -> dict[int, int]:
    """{domain id: cost} of the dead properties of these nodes."""
    ids, out = list(node_ids), {}
    for i in range(0, len(ids), _BATCH):
        for did, cost in c.execute(select(nodes.c.domain_id, func.sum(_PROP_COST)).select_from(
                dead_props.join(nodes, nodes.c.id == dead_props.c.node_id))
                .where(dead_props.c.node_id.in_(ids[i:i + _BATCH])).group_by(nodes.c.domain_id)).all():
            if cost:
                out[did] = out.get(did, 0) + int(cost)
    return out


def props(c, node_id: int) -> list[dict]:
    return _HOT_PROPS.all(c, {"i": node_id})


def set_prop(c, node_id: int, lookup: str, name_enc: bytes, value_enc) -> None:
    c.execute(delete(dead_props).where(dead_props.c.node_id == node_id, dead_props.c.name_lookup == lookup))
    if value_enc is not None:
        c.execute(insert(dead_props).values(node_id=node_id, name_lookup=lookup, name_enc=name_enc,
                                            value_enc=value_enc))


def set_prop_charged(c, domain_id: int, node_id: int, lookup: str, name_enc: bytes, value_enc) -> int:
    """set_prop, with the change in what the node's properties cost added
    to the domain's usage; returns that change."""
    old = c.execute(select(_PROP_COST).where(dead_props.c.node_id == node_id,
                                             dead_props.c.name_lookup == lookup)).scalar()
    set_prop(c, node_id, lookup, name_enc, value_enc)
    delta = (prop_cost(name_enc, value_enc) if value_enc is not None else 0) - int(old or 0)
    add_usage(c, domain_id, delta)
    return delta


def clear_props(c, node_id: int) -> None:
    """Drop a node's dead properties, and what they cost its domain."""
    for domain_id, cost in prop_cost_by_domain(c, [node_id]).items():
        add_usage(c, domain_id, -cost)
    c.execute(delete(dead_props).where(dead_props.c.node_id == node_id))




# -- moving between key domains ------------------------------------------------------------

def history_of(c, node_ids):
    return c.execute(select(node_history).where(node_history.c.node_id.in_(node_ids))).mappings().all()


def set_history_name(c, hist_id: int, name_enc: bytes, lookup: str) -> None:
    c.execute(update(node_history).where(node_history.c.id == hist_id).values(name_enc=name_enc,
                                                                              name_lookup=lookup))


def versions_of_nodes(c, node_ids):
    return c.execute(select(versions).where(versions.c.node_id.in_(node_ids))).mappings().all()


def update_version(c, version_id: int, **values) -> None:
    _UPDATE_VERSION.run(c, {**values, "w_id": version_id})


def chunk_refs_of_versions(c, version_ids):
    return c.execute(select(version_chunks.c.version_id, version_chunks.c.seq, version_chunks.c.chunk_id)
                     .where(version_chunks.c.version_id.in_(version_ids))).all()


def set_version_chunk(c, version_id: int, seq: int, chunk_id: int) -> None:
    c.execute(update(version_chunks).where(version_chunks.c.version_id == version_id,
                                           version_chunks.c.seq == seq).values(chunk_id=chunk_id))


def chunk(c, chunk_id: int, lock: bool = False):
    """A chunk row; `lock` holds it until the transaction ends (PostgreSQL:
    a gc moving it to another pack waits, or is waited for)."""
    q = select(chunks).where(chunks.c.id == chunk_id)
    return c.execute(q.with_for_update() if lock else q).mappings().first()


def update_chunk(c, chunk_id: int, **values) -> None:
    c.execute(update(chunks).where(chunks.c.id == chunk_id).values(**values))


def props_of_nodes(c, node_ids):
    node_ids = list(node_ids)
    return _HOT_PROPS_OF_NODES.all(c, {"ids": node_ids}) if node_ids else []


def file_names(c, domain_id: int):
    """Every file of a key domain, live or deleted: id, encrypted name,
    current version, whether it is excluded."""
    return c.execute(select(nodes.c.id, nodes.c.name_enc, nodes.c.name_lookup, nodes.c.version_id, nodes.c.excluded)
                     .where(nodes.c.domain_id == domain_id, nodes.c.kind == "f")).mappings().all()


def domain_node_ids(c, domain_id: int) -> list[int]:
    return [r[0] for r in c.execute(select(nodes.c.id).where(nodes.c.domain_id == domain_id))]


def roots_among(c, node_ids) -> list[int]:
    """Which of these nodes are the root of a key domain."""
    return [r[0] for r in c.execute(select(domains.c.root_node_id).where(domains.c.root_node_id.in_(node_ids)))]


def history_named_in(c, node_ids):
    """Recorded names sealed under these nodes' domain: where a node was
    in one of them, or (no parent: nowhere, out of the trash) of one of them."""
    return c.execute(select(node_history).where(
        node_history.c.parent_id.in_(node_ids)
        | (node_history.c.parent_id.is_(None) & node_history.c.node_id.in_(node_ids)))).mappings().all()


def nodes_by_id(c, node_ids):
    return c.execute(select(*NODE_COLS).where(nodes.c.id.in_(node_ids))).mappings().all()


def prop_exists(c, node_id: int, lookup: str) -> bool:
    return c.execute(select(dead_props.c.node_id).where(dead_props.c.node_id == node_id,
                                                        dead_props.c.name_lookup == lookup)).first() is not None


def files_among(c, node_ids: list[int]) -> int:
    """How many of these nodes are files."""
    n = 0
    for i in range(0, len(node_ids), _BATCH):
        n += c.execute(select(func.count()).select_from(nodes).where(nodes.c.id.in_(node_ids[i:i + _BATCH]),
                                                                     nodes.c.kind == "f")).scalar_one()
    return n
