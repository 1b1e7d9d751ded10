"""Binding, once, the values an account or a key domain sealed before
sealed values were bound to their rows (crypto "Row binding").

The first time an account is opened with its key (a login, or the
administrator's opening of a managed account), what its keys open is sealed
again, bound to its row: its private key, its memberships (its wrapped or
sealed domain keys, the names shared folders appear under) and every value
of the domains it owns, in batches of short transactions. Each is then
marked bound (`sealing`), and from then on an unbound value there fails
authentication like any other tampering. Until then unbound values are
read as before; new values are bound from the start. A private account
that never logs in keeps its old values, readable as before."""
from __future__ import annotations

import logging

from . import crypto, locks, rekey
from .meta import tree as t
from .meta import users as uq

log = logging.getLogger(__name__)

BATCH = 500


def account(vfs) -> None:
    """Bind everything this account's keys open, then mark it bound."""
    uid, db, keys = vfs.user.id, vfs.st.db, vfs.keys
    with db.write() as c:
        row = uq.user_by_id(c, uid)
        if row["sealing"] >= crypto.SEALING_BOUND:
            return
        private = keys.private_key(c)
        if not crypto.is_bound(row["wrapped_private_key"]):
            uq.update_user(c, uid, wrapped_private_key=keys.wrap_private(private))
        public = bytes(row["public_key"])
        for mem in uq.memberships_of(c, uid):
            _membership(c, keys, mem, public, private)
        owned = [vfs.home.id] + [r["id"] for r in uq.owned_share_domains(c, uid)]
    for domain_id in owned:
        with db.read() as c:
            dom = keys.domain(c, domain_id)
        domain(db, dom)
    with db.write() as c:
        uq.update_user(c, uid, sealing=crypto.SEALING_BOUND)
    log.info("account %d: every sealed value is bound to its row now", uid)


def _membership(c, keys, mem, public: bytes, private: bytes) -> None:
    did, uid, gen = mem["domain_id"], mem["user_id"], mem["key_gen"]
    values = {}
    if mem["wrapped_key"] is not None and not crypto.is_bound(mem["wrapped_key"]):
        values["wrapped_key"] = keys.wrap(keys.open_domain_key(mem, "folder key"), did, gen)
    if mem["sealed_key"] is not None and not crypto.is_bound(mem["sealed_key"]):
        values["sealed_key"] = crypto.seal_to(public, keys.open_domain_key(mem, "folder key", c),
                                              crypto.domain_key_aad(did, uid, gen))
    if mem["mount_enc"] is not None and not crypto.is_bound(mem["mount_enc"]):
        values["mount_enc"] = crypto.seal_to(public, keys.open_mount(c, mem, private).encode("utf-8"),
                                             crypto.mount_aad(did, uid))
    if values:
        uq.update_member(c, did, uid, **values)


def domain(db, dom) -> None:
    """Bind every value of one key domain (names of what its folders hold,
    trash paths, recorded names, content hashes, dead properties, locks),
    then mark it bound."""
    with db.read() as c:
        if uq.domain(c, dom.id)["sealing"] >= crypto.SEALING_BOUND:
            return
        ids = t.domain_node_ids(c, dom.id)
    keys = dom.keys
    for i in range(0, len(ids), BATCH):
        with db.write() as c:
            _nodes(c, dom, keys, ids[i:i + BATCH])
    with db.write() as c:
        locks.rehome(c, dom.id, keys, dom.id, keys)
        uq.update_domain(c, dom.id, sealing=crypto.SEALING_BOUND)


def _nodes(c, dom, keys: crypto.DomainKeys, batch: list[int]) -> None:
    for n in t.children_any(c, batch) + [n for n in t.nodes_by_id(c, batch) if n["parent_id"] is None]:
        if not crypto.is_bound(n["name_enc"]):       # a name is sealed under its parent's domain
            name = crypto.decrypt_name(keys, n["name_enc"], n["name_lookup"])
            t.update_node(c, n["id"], name_enc=crypto.encrypt_name(keys, name, n["name_lookup"]))
    for n in t.nodes_by_id(c, batch):
        if n["trash_path_enc"] is not None and not crypto.is_bound(n["trash_path_enc"]):
            t.update_node(c, n["id"], trash_path_enc=crypto.seal_trash_path(
                keys, crypto.open_trash_path(keys, n["trash_path_enc"], n["id"]), n["id"]))
    for h in t.history_named_in(c, batch):
        if h["name_lookup"] is None or not crypto.is_bound(h["name_enc"]):
            rekey.reseal_history_name(c, h, keys, keys)     # one of another domain is left as it is
    for v in t.versions_of_nodes(c, batch):
        if v["domain_id"] == dom.id and not crypto.is_bound(v["hashes_enc"]):
            t.update_version(c, v["id"], hashes_enc=rekey.reseal_hashes(keys, keys, v))
    for p in t.props_of_nodes(c, batch):
        if crypto.is_bound(p["name_enc"]) and crypto.is_bound(p["value_enc"]):
            continue
        name, value = crypto.open_prop(keys, p["node_id"], p["name_lookup"], p["name_enc"], p["value_enc"])
        lookup = rekey.prop_lookup(keys, p["node_id"], name)
        if lookup != p["name_lookup"]:       # copied from another node before copies were sealed anew
            t.set_prop_charged(c, dom.id, p["node_id"], p["name_lookup"], b"", None)
            if t.prop_exists(c, p["node_id"], lookup):
                continue
        t.set_prop_charged(c, dom.id, p["node_id"], lookup, *crypto.seal_prop(keys, p["node_id"], lookup, name, value))
