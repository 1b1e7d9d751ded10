"""Shared folders in the filesystem API: what owner, read and write
collaborators and a stranger may do, revocation, private-mode key handling."""
import os
import threading

import pytest

from providers.errors import CofferError, PermissionDenied, NotFound

from backend import damage


@pytest.fixture
def team(storage):
    people = {}
    for name, mode in (("owner", "private"), ("reader", "private"), ("writer", "managed"),
                       ("stranger", "managed")):
        storage.accounts.create(name, f"{name}-password", mode=mode)
        people[name] = storage.open_account(name, f"{name}-password")
    o = people["owner"]
    o.makedirs("/Projects/inner")
    o.write_bytes("/Projects/plan.txt", b"v1")
    o.write_bytes("/Projects/plan.txt", b"v2")
    o.write_bytes("/Projects/inner/deep.bin", os.urandom(200_000))
    o.write_bytes("/private.txt", b"owner only")
    o.share_grant("/Projects", "reader", "read")
    o.share_grant("/Projects", "writer", "write")
    return people


S = "/Shared/owner/Projects"


def snapshot(vfs, path="/Projects"):
    out = {}
    for e in vfs.list(path):
        out[e.name] = (e.size, e.is_dir, e.etag)
        if e.is_dir:
            out.update({f"{e.name}/{k}": v for k, v in snapshot(vfs, e.path).items()})
    return out


# (operation, who may do it) over the shared folder's content, as a table
OPS = {
    "list":        (lambda v, p: v.list(p), {"owner", "reader", "writer"}),
    "read":        (lambda v, p: v.read_bytes(p + "/plan.txt"), {"owner", "reader", "writer"}),
    "versions":    (lambda v, p: v.list("/.coffer/versions" + p + "/plan.txt"), {"owner", "reader", "writer"}),
    "write_new":   (lambda v, p: v.write_bytes(p + "/new.txt", b"n"), {"owner", "writer"}),
    "overwrite":   (lambda v, p: v.write_bytes(p + "/plan.txt", b"v3"), {"owner", "writer"}),
    "mkdir":       (lambda v, p: v.mkdir(p + "/sub"), {"owner", "writer"}),
    "rename":      (lambda v, p: v.move(p + "/plan.txt", p + "/plan2.txt"), {"owner", "writer"}),
    "delete":      (lambda v, p: v.delete(p + "/inner"), {"owner", "writer"}),
    "set_mtime":   (lambda v, p: v.set_mtime(p + "/plan.txt", 1000), {"owner", "writer"}),
    "props":       (lambda v, p: v.set_props(p + "/plan.txt", {"{x:}y": b"1"}), {"owner", "writer"}),
    "restore":     (lambda v, p: v.copy(v.list("/.coffer/versions" + p + "/plan.txt")[-1].path, p + "/plan.txt"),
                    {"owner", "writer"}),
    "purge":       (lambda v, p: v.delete(v.list("/.coffer/versions" + p + "/plan.txt")[-1].path), {"owner"}),
    "move_out":    (lambda v, p: v.move(p + "/plan.txt", "/taken.txt"), {"owner", "writer"}),
    "move_in":     (lambda v, p: (v.write_bytes("/mine.txt", b"m"), v.move("/mine.txt", p + "/mine.txt")),
                    {"owner", "writer"}),
    "delete_top":  (lambda v, p: v.delete(p), {"owner"}),
    "rename_top":  (lambda v, p: v.move(p, p + "-renamed"), {"owner"}),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("who", ["owner", "reader", "writer", "stranger"])
def test_permission_matrix(team, op, who):
    fn, allowed = OPS[op]
    vfs = team[who]
    path = "/Projects" if who == "owner" else S
    before = snapshot(team["owner"])
    if who in allowed:
        fn(vfs, path)
    else:
        with pytest.raises((PermissionDenied, NotFound)) as e:
            fn(vfs, path)
        assert str(e.value)
        assert snapshot(team["owner"]) == before, "a refused attempt changed something"


def test_collaborators_see_the_folder_and_nothing_else(team):
    for who in ("reader", "writer"):
        v = team[who]
        assert [e.name for e in v.list("/")] == ["Shared"]
        assert [e.name for e in v.list("/Shared")] == ["owner"]
        [top] = v.list("/Shared/owner")
        assert top.name == "Projects" and not top.removable
        assert top.writable == (who == "writer")
        assert v.read_bytes(S + "/plan.txt") == b"v2"
        for bad in ("/Shared/owner/private.txt", "/Shared/owner/../private.txt", "/Shared/owner/Projects/../x"):
            with pytest.raises(CofferError):
                v.read_bytes(bad)
    with pytest.raises(CofferError):
        team["stranger"].list("/Shared/owner/Projects")


def test_collaborator_writes_count_against_owner_and_are_attributed(team, storage):
    used = team["owner"].quota().used
    team["writer"].write_bytes(S + "/big.bin", os.urandom(500_000))
    assert team["owner"].quota().used >= used + 500_000
    assert team["writer"].quota().used == 0
    vs = team["owner"].versions("/Projects/big.bin")
    assert vs[0].author == "writer"


def test_revocation_takes_effect_on_an_open_session_and_rotates_the_key(team, storage, cfg):
    w = team["writer"]
    assert w.read_bytes(S + "/plan.txt") == b"v2"
    # what a revoked collaborator could have kept: the folder key they held
    from providers.meta import users as uq
    with storage.db.read() as c:
        dom_id = uq.received_shares(c, w.user.id)[0]["domain_id"]
        old_key = w.keys.domain(c, dom_id).key
    team["owner"].share_revoke("/Projects", "writer")
    with pytest.raises(CofferError):
        w.read_bytes(S + "/plan.txt")                    # the very next request
    with pytest.raises(CofferError):
        w.write_bytes(S + "/after.txt", b"x")
    assert team["reader"].read_bytes(S + "/plan.txt") == b"v2"   # others keep access
    team["owner"].write_bytes("/Projects/after.txt", b"written after the revocation")
    from providers import crypto
    from providers.meta import tree as t
    old = crypto.DomainKeys.derive(old_key)
    with storage.db.read() as c:
        rows = list(t.domain_chunks(c, dom_id))
        assert rows
        for r in rows:                                     # no chunk key opens with the old folder key
            with pytest.raises(CofferError):
                crypto.open_sealed(old.wrap, bytes(r["wrapped_key"]), r["dedup_id"].encode())
        for nid in t.domain_node_ids(c, dom_id):
            n = t.node(c, nid)
            if n["id"] != t.node(c, nid)["id"] or n["parent_id"] is None:
                continue
            if nid == uq.domain(c, dom_id)["root_node_id"]:
                continue
            with pytest.raises(CofferError):
                crypto.decrypt_name(old, bytes(n["name_enc"]), n["name_lookup"])


def test_revocation_reaches_an_open_read_handle(team):
    r = team["reader"].open_read(S + "/inner/deep.bin")
    assert len(r.read(1000)) == 1000
    team["owner"].share_revoke("/Projects", "reader")
    with pytest.raises(PermissionDenied):
        r.read(1000)
    with team["owner"].open_read("/Projects/inner/deep.bin") as mine:      # the owner's own handle reads on
        assert len(mine.read()) == 200_000


def test_private_owner_content_is_unreadable_before_grant(storage):
    storage.accounts.create("p1", "p1-password", mode="private")
    storage.accounts.create("p2", "p2-password", mode="private")
    a, b = storage.open_account("p1", "p1-password"), storage.open_account("p2", "p2-password")
    a.mkdir("/Box")
    a.write_bytes("/Box/secret.txt", b"s")
    with pytest.raises(CofferError):
        b.list("/Shared/p1/Box")
    a.share_grant("/Box", "p2", "read")          # needs nothing secret of p2
    assert b.read_bytes("/Shared/p1/Box/secret.txt") == b"s"


def test_moving_in_and_out_rewraps_without_new_storage(team):
    o = team["owner"]
    o.write_bytes("/outside.bin", os.urandom(300_000))
    data = o.read_bytes("/outside.bin")
    used = o.quota().used
    o.move("/outside.bin", "/Projects/outside.bin")
    assert team["reader"].read_bytes(S + "/outside.bin") == data
    assert o.quota().used == used
    o.move("/Projects/outside.bin", "/back.bin")
    assert o.read_bytes("/back.bin") == data
    with pytest.raises(CofferError):
        team["reader"].read_bytes(S + "/outside.bin")


def test_two_collaborators_writing_at_once_lose_nothing(team):
    errors = []

    def write(who, n):
        try:
            for i in range(n):
                base = "/Projects" if who == "owner" else S
                team[who].write_bytes(base + "/same.txt", f"{who} {i}".encode())
        except Exception as e:          # noqa: BLE001 - surfaced below
            errors.append(e)
    threads = [threading.Thread(target=write, args=(who, 5)) for who in ("owner", "writer")]
    team["owner"].write_bytes("/Projects/same.txt", b"start")
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    contents = {team["owner"].read_bytes(e.path) for e in team["owner"].list("/.coffer/versions/Projects/same.txt")}
    assert contents >= {f"{w} {i}".encode() for w in ("owner", "writer") for i in range(5)}


def test_grant_errors(team):
    o = team["owner"]
    with pytest.raises(CofferError, match="no active account"):
        o.share_grant("/Projects", "ghost", "read")
    with pytest.raises(CofferError):
        o.share_grant("/Projects/inner", "stranger", "read")     # nested
    with pytest.raises(CofferError):
        o.share_grant("/Projects", "reader", "admin")
    with pytest.raises(CofferError):
        team["writer"].share_grant(S, "stranger", "read")        # only the owner grants
    listing = o.share_list()
    assert {(s["grantee"], s["permission"]) for s in listing["shared"]} == {("reader", "read"), ("writer", "write")}
    assert team["reader"].share_list()["received"] == [
        {"owner": "owner", "folder": S, "permission": "read"}]


def test_fsck_checks_shared_folders_and_moved_content(team, storage, cfg):
    o = team["owner"]
    o.write_bytes("/loose.bin", os.urandom(100_000))
    o.move("/loose.bin", "/Projects/loose.bin")            # imported chunk rows
    report = storage.fsck()
    assert report["damaged"] == []
    storage2 = storage
    report = storage2.fsck(user="owner", password="owner-password")
    assert report["damaged"] == [] and report["chunks_decrypted"] == report["chunks_checked"] > 0
    from providers.meta import tree as t
    with storage.db.read() as c:
        blob = [r for r in t.domain_chunks(c) if r["plain_size"] == 100_000][0]["blob_name"]
    damage(storage.blobs, blob, 50)
    report = storage.fsck(user="owner", password="owner-password")
    assert [d["files"] for d in report["damaged"]] == [["/Projects/loose.bin"]]


def test_erasing_owner_and_grantee_with_real_shares(storage):
    from providers import lifecycle
    for n in ("own", "bob", "eve"):
        storage.accounts.create(n, f"{n}-password1", mode="managed")
    o = storage.open_account("own", "own-password1")
    o.mkdir("/P"); o.write_bytes("/P/f", os.urandom(300_000)); o.share_grant("/P", "bob", "write"); o.share_grant("/P", "eve", "read")
    b = storage.open_account("bob", "bob-password1")
    b.write_bytes("/Shared/own/P/g", b"bob wrote")
    lifecycle.erase(storage, "bob")
    assert [s["grantee"] for s in o.share_list()["shared"]] == ["eve"]
    assert o.read_bytes("/P/g") == b"bob wrote"
    lifecycle.erase(storage, "own")
    e = storage.open_account("eve", "eve-password1")
    assert [x.name for x in e.list("/")] == []
    assert list(storage.blobs.names()) == []
