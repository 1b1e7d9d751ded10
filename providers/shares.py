"""Shared folders: grants, revocations and listings for a folder's owner.

A shared folder is a key domain of its own. Its key is held by the owner
wrapped under the owner's user key, and by each collaborator sealed to their
X25519 public key (so granting needs nothing secret of theirs; they open it
with their own password-unlocked private key). Revoking removes the
collaborator's copy and rotates the folder key: names, properties, hashes,
chunk keys and WebDAV locks are re-wrapped under the new key, so an old copy
of the key opens nothing written afterwards (content itself is never
re-encrypted).

A collaborator finds the folder at `/Shared/<owner>/<folder name>`;
same-named folders of one owner appear as `name`, `name (2)`, ...
(`mount_names`).
"""
from __future__ import annotations

from . import crypto, locks, meta, paths, rekey
from .resolve import mount_path
from .errors import Conflict, NotFound, PermissionDenied
from .meta import tree as t
from .meta import users as uq

PERMISSIONS = ("read", "write")


def mount_names(received) -> dict[int, str]:
    """The names folders shared with one principal appear under in
    `/Shared/<owner>/`, from (domain id, owner, name it was granted under,
    order) tuples: {domain id: name}. Names are unique per owner: of
    same-named folders the first in `order` (the earliest grant) keeps the
    name, the others get the first free of `name (2)`, `name (3)`, ...
    Every granted name stays reserved, so a name given this way, once kept,
    is never taken by a later grant."""
    by_owner: dict[str, list] = {}
    for did, owner, name, order in sorted(received, key=lambda r: r[3]):
        by_owner.setdefault(owner, []).append((did, name))
    out = {}
    for items in by_owner.values():
        used = {name for _, name in items}
        given: set[str] = set()
        for did, name in items:
            if name in given:
                n = 2
                while _numbered(name, n) in used:
                    n += 1
                name = _numbered(name, n)
                used.add(name)
            given.add(name)
            out[did] = name
    return out


def _numbered(name: str, n: int) -> str:
    suffix = f" ({n})"
    while len((name + suffix).encode("utf-8")) > paths.MAX_NAME_BYTES:
        name = name[:-1]
    return name + suffix


def _own_folder(vfs, c, node, parts):
    """The key domain of a folder to share or stop sharing (the policy has
    allowed `share` on it: a folder of the principal's own tree)."""
    if node["kind"] != "d":
        raise Conflict(f"{paths.join(parts)} is a file: share the folder that holds it")
    dom = vfs.keys.of(c, node)
    parent_dom = vfs.keys.of(c, t.node(c, node["parent_id"]))
    if dom.owner_id != vfs.user.id or parent_dom.id != vfs.home.id:
        raise PermissionDenied(f"{paths.join(parts)} is inside a shared folder: share the top folder instead")
    return dom


def _grantee(c, name: str, owner_id: int, disclose: bool = True):
    """The grantee's row; for a name that is not an active account, NotFound
    when `disclose`, else None (the caller answers as if it were)."""
    from .accounts import normalize_name
    row = uq.user_by_name(c, normalize_name(name))
    if row is None or row["status"] != "active":
        if not disclose:
            return None
        raise NotFound(f"no active account named {normalize_name(name)!r}")
    if row["id"] == owner_id:
        raise Conflict("you already own this folder")
    return row


def grant(vfs, c, node, parts, grantee: str, permission: str, actor: str = "user", disclose: bool = True) -> tuple[dict, list]:
    """Share a folder (in the caller's transaction; returns the answer and
    the blobs to delete once it is committed). With `disclose` false, a grantee name that is not an
    active account is answered like one that is, after the same work (the
    folder becomes a key domain, a key is sealed), but nobody is added: an
    account holder cannot learn from a grant which accounts exist."""
    from .accounts import normalize_name
    if permission not in PERMISSIONS:
        raise Conflict("the permission is 'read' or 'write'")
    now = meta.now_us()
    blobs: list[str] = []
    dom = _own_folder(vfs, c, node, parts)
    who = _grantee(c, grantee, vfs.user.id, disclose)
    if dom.id == vfs.home.id:
        ids = t.subtree_ids(c, node["id"])
        if t.roots_among(c, ids):
            raise Conflict(f"{paths.join(parts)} holds a shared folder; shares cannot nest")
        key = crypto.random_key()
        did = uq.insert_domain(c, vfs.user.id, "share")
        uq.set_domain_root(c, did, node["id"])
        uq.add_member(c, did, vfs.user.id, "owner", wrapped_key=vfs.keys.wrap(key, did, 1))
        new = crypto.DomainKeys.derive(key)
        blobs = rekey.move_subtree(c, ids, node["id"], vfs.home.id, vfs.home.keys, did, new, now,
                                   keep_top_name=True)
        locks.rehome(c, vfs.home.id, vfs.home.keys, did, new, below=tuple(parts))
        dom = vfs.keys.domain(c, did)
    if who is None:                   # the same sealing, for nobody
        pub = crypto.new_keypair()[1]
        crypto.seal_to(pub, dom.key, crypto.domain_key_aad(dom.id, 0, dom.key_gen))
        crypto.seal_to(pub, parts[-1].encode(), crypto.mount_aad(dom.id, 0))
        uq.audit(c, "share_grant_unknown", user_id=vfs.user.id, actor=actor,
                 detail={"domain": dom.id, "permission": permission})
    else:
        if uq.membership(c, dom.id, who["id"]) is not None:
            uq.update_member(c, dom.id, who["id"], permission=permission)
        else:
            pub = bytes(who["public_key"])
            uq.add_member(c, dom.id, who["id"], permission, key_gen=dom.key_gen,
                          sealed_key=crypto.seal_to(pub, dom.key, crypto.domain_key_aad(dom.id, who["id"], dom.key_gen)),
                          mount_enc=crypto.seal_to(pub, parts[-1].encode(), crypto.mount_aad(dom.id, who["id"])))
        uq.audit(c, "share_granted", user_id=vfs.user.id, actor=actor,
                 detail={"domain": dom.id, "grantee": who["id"], "permission": permission})
    return {"folder": paths.join(parts), "grantee": who["name"] if who else normalize_name(grantee),
            "permission": permission, "appears_as": paths.join(mount_path(vfs.user.name, parts[-1]))}, blobs


def revoke(vfs, c, node, parts, grantee: str, actor: str = "user", disclose: bool = True) -> dict:
    """Stop sharing a folder with one collaborator (in the caller's transaction)."""
    from .accounts import normalize_name
    dom = _own_folder(vfs, c, node, parts)
    who = _grantee(c, grantee, vfs.user.id, disclose)
    if who is None or dom.id == vfs.home.id or uq.membership(c, dom.id, who["id"]) is None:
        raise NotFound(f"{paths.join(parts)} is not shared with {normalize_name(grantee)}")
    uq.remove_member(c, dom.id, who["id"])
    locks.drop_of_user(c, dom.id, who["id"])       # write intents of someone who can no longer write
    # Rotate: a new key for the folder, everything re-wrapped under it.
    key = crypto.random_key()
    new = crypto.DomainKeys.derive(key)
    rekey.rotate_domain(c, dom.id, node["id"], dom.keys, new)
    gen = dom.key_gen + 1
    for m in uq.members(c, dom.id):
        if m["user_id"] == vfs.user.id:
            values = {"wrapped_key": vfs.keys.wrap(key, dom.id, gen), "key_gen": gen}
        else:
            values = {"sealed_key": crypto.seal_to(bytes(m["public_key"]), key,
                                                   crypto.domain_key_aad(dom.id, m["user_id"], gen)),
                      "wrapped_key": None, "key_gen": gen}
        uq.update_member(c, dom.id, m["user_id"], **values)
    uq.update_domain(c, dom.id, key_gen=gen)
    uq.audit(c, "share_revoked", user_id=vfs.user.id, actor=actor,
             detail={"domain": dom.id, "grantee": who["id"]})
    return {"folder": paths.join(parts), "grantee": who["name"], "revoked": True}


def listing(vfs) -> dict:
    out = {"shared": [], "received": []}
    with vfs.st.db.read() as c:
        for row in uq.owned_share_domains(c, vfs.user.id):
            root = t.node(c, row["root_node_id"])
            path = paths.join(vfs.res.owner_path(c, root))
            for m in uq.members(c, row["id"]):
                if m["permission"] != "owner":
                    out["shared"].append({"folder": path, "grantee": m["name"], "permission": m["permission"],
                                          "trashed": root["trashed_us"] is not None})
        rows = {r["domain_id"]: r for r in uq.received_shares(c, vfs.user.id)}
        for owner, mounts in vfs.res.received(c).items():
            for mount, (did, _) in mounts.items():
                out["received"].append({"owner": owner, "folder": paths.join(mount_path(owner, mount)),
                                        "permission": rows[did]["permission"]})
    return out


