"""Sealed values are bound to their rows: someone who can write the
database but holds no key cannot move a name, a property, a content hash,
a lock or a wrapped key from one row to another without it failing
authentication. A database written before binding opens, reads as before,
and is bound at the first use of each account's key."""
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, update

from providers import config, crypto, locks
from providers.errors import CofferError, IntegrityError
from providers.meta import schema
from providers.meta import tree as t
from providers.meta import users as uq
from providers.resolve import stamp
from providers.storage import Storage

from conftest import FAST
from webdav_harness import CofferServer

PRE_BINDING = Path(__file__).parent / "data" / "pre_binding"


# -- a database from before binding --------------------------------------------------

@pytest.fixture
def old_store(tmp_path):
    """The data folder Coffer wrote before binding (tests/data/make_pre_binding.py),
    on SQLite and a local folder as it was made, opened (and migrated) now."""
    shutil.copytree(PRE_BINDING, tmp_path / "var")
    (tmp_path / "var").chmod(0o700)
    cfg = config.from_dict({"storage": {"data_dir": str(tmp_path / "var")}, "security": dict(FAST)},
                           base_dir=str(tmp_path))
    st = Storage.open(cfg)
    with st.db.write() as c:             # its lock was taken for a week when the data was made
        c.execute(update(schema.locks).values(expires_us=(2 ** 62)))
    yield st
    st.close()


def sealing(st, table, **where):
    with st.db.read() as c:
        q = select(table.c.sealing)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        return [r[0] for r in c.execute(q)]


def user_id(st, name):
    with st.db.read() as c:
        return uq.user_by_name(c, name)["id"]


def unbound_values(st) -> list[str]:
    """Every sealed value in the database that is not bound to its row."""
    s = schema
    columns = [(s.users, ("wrapped_user_key", "wrapped_private_key")),
               (s.domain_members, ("wrapped_key", "sealed_key", "mount_enc")),
               (s.nodes, ("name_enc", "trash_path_enc")), (s.node_history, ("name_enc",)),
               (s.versions, ("hashes_enc",)), (s.dead_props, ("name_enc", "value_enc")), (s.locks, ("data_enc",))]
    out = []
    with st.db.read() as c:
        for table, cols in columns:
            for row in c.execute(select(*[table.c[n] for n in cols])).mappings():
                out += [f"{table.name}.{n}" for n in cols if row[n] is not None and not crypto.is_bound(row[n])]
    return out


def test_a_database_from_before_binding_reads_as_before_and_is_bound_at_first_use(old_store):
    st = old_store
    assert sealing(st, schema.users) == [1, 1, 1] and set(sealing(st, schema.domains)) == {1}
    before = len(unbound_values(st))
    assert before > 20

    alice = st.open_account("alice", "alice-password-1")       # managed: the master key opens it
    assert alice.read_bytes("/docs/a.txt") == b"alice a, second"
    assert [v.size for v in alice.versions("/docs/a.txt")] == [len(b"alice a, second"), len(b"alice a, first")]
    assert alice.read_bytes("/docs/renamed.txt") == b"renamed later"
    assert alice.get_props("/docs/a.txt") == {"{urn:x}colour": b"<colour xmlns='urn:x'>blue</colour>"}
    assert alice.hashes("/docs/a.txt")["sha256"]
    assert [e.name for e in alice.list("/.coffer/trash")]          # the deleted file is there
    assert alice.read_bytes("/Shared/bob/out/for-alice.txt") == b"bob shares this"   # bob's: not bound yet
    # alice's own keys and the domains she owns are bound; bob's and carol's are not yet
    assert sealing(st, schema.users, name="alice") == [2]
    assert set(sealing(st, schema.domains, owner_id=alice.user.id)) == {2}
    assert set(sealing(st, schema.domains, owner_id=user_id(st, "bob"))) == {1}
    assert sealing(st, schema.users, name="carol") == [1]
    scope = locks.scope_of(alice.user.id, alice.home)
    with st.db.read() as c:
        token = c.execute(select(schema.locks.c.token)).scalar_one()
    assert locks.LockStore(st.db).get(scope, token)["owner"] == b"<owner>alice</owner>"
    # the name recorded before the rename still shows in a view of that time
    with st.db.read() as c:
        until = c.execute(select(schema.node_history.c.until_us)).scalar_one()
    past = "/.coffer/snapshots/" + stamp(until - 1) + "/docs"
    assert sorted(e.name for e in alice.list(past)) == ["a.txt", "old.txt"]
    alice.close()

    bob = st.open_account("bob", "bob-password-1")               # private: his password opens it
    assert bob.read_bytes("/mine.txt") == b"bob's own"
    assert bob.read_bytes("/Shared/alice/team/plan.txt") == b"the plan"
    assert bob.read_bytes("/Shared/alice/team/from-bob.txt") == b"bob wrote this"
    bob.close()
    carol = st.open_account("carol", "carol-password-1")
    assert carol.read_bytes("/c.txt") == b"carol's"
    carol.close()

    assert unbound_values(st) == []
    assert sealing(st, schema.users) == [2, 2, 2] and set(sealing(st, schema.domains)) == {2}
    # and all of it still reads, with the bound values only
    again = st.open_account("bob", "bob-password-1")
    assert again.read_bytes("/Shared/alice/team/plan.txt") == b"the plan"
    again.close()
    assert st.fsck()["damaged"] == []


def test_an_unbound_value_is_refused_once_its_domain_is_bound(old_store):
    """After the first use, a value sealed the old way (here: put back from
    a copy of the database taken before) no longer opens."""
    st = old_store
    with st.db.read() as c:
        old_names = {r["id"]: bytes(r["name_enc"]) for r in c.execute(select(schema.nodes)).mappings()}
    alice = st.open_account("alice", "alice-password-1")
    alice.close()
    with st.db.write() as c:
        a_home = uq.home_domain(c, user_id(st, "alice"))["id"]
        docs = [n for n in t.domain_node_ids(c, a_home) if t.node(c, n)["kind"] == "f"]
        for nid in docs:
            c.execute(update(schema.nodes).where(schema.nodes.c.id == nid).values(name_enc=old_names[nid]))
    alice = st.open_account("alice", "alice-password-1")
    with pytest.raises(IntegrityError):
        alice.list("/docs")
    alice.close()


# -- moving sealed values between rows ------------------------------------------------

def swap(c, table, key_cols: tuple, a: dict, b: dict, cols: tuple, back: bool = False) -> None:
    """Exchange the values of `cols` between the rows a and b (matched by
    key_cols), as they were when read; `back` puts each row's own back."""
    def where(row):
        return [table.c[k] == row[k] for k in key_cols]
    for row, other in ((a, b), (b, a)):
        c.execute(update(table).where(*where(row)).values({col: (row if back else other)[col] for col in cols}))


def test_swapped_names_and_properties_are_detected(storage):
    storage.accounts.create("alice", "alice-password-1")
    vfs = storage.open_account("alice", "alice-password-1")
    vfs.mkdir("/docs")
    vfs.write_bytes("/docs/salary-2025.txt", b"confidential")
    vfs.write_bytes("/docs/lunch.txt", b"soup")
    vfs.set_props("/docs/salary-2025.txt", {"{urn:x}tag": b"secret"})
    vfs.set_props("/docs/lunch.txt", {"{urn:x}tag": b"public"})
    with storage.db.read() as c:
        home = vfs.home.id
        files = sorted((dict(t.node(c, n)) for n in t.domain_node_ids(c, home) if t.node(c, n)["kind"] == "f"),
                       key=lambda n: n["id"])
        props = [dict(r) for f in files for r in t.props(c, f["id"])]
        vers = [dict(t.version(c, f["version_id"])) for f in files]
    with storage.db.write() as c:
        swap(c, schema.nodes, ("id",), files[0], files[1], ("name_enc",))
    with pytest.raises(IntegrityError):
        vfs.list("/docs")
    with storage.db.write() as c:
        swap(c, schema.nodes, ("id",), files[0], files[1], ("name_enc",), back=True)
        swap(c, schema.dead_props, ("node_id", "name_lookup"), props[0], props[1], ("value_enc",))
    assert sorted(e.name for e in vfs.list("/docs")) == ["lunch.txt", "salary-2025.txt"]
    with pytest.raises(IntegrityError):
        vfs.get_props("/docs/lunch.txt")
    with storage.db.write() as c:
        swap(c, schema.dead_props, ("node_id", "name_lookup"), props[0], props[1], ("value_enc",), back=True)
        swap(c, schema.versions, ("id",), vers[0], vers[1], ("hashes_enc",))
    assert vfs.get_props("/docs/lunch.txt") == {"{urn:x}tag": b"public"}
    with pytest.raises(IntegrityError):
        vfs.hashes("/docs/lunch.txt")
    vfs.close()


def test_a_collaborator_key_moved_to_another_share_opens_nothing(storage):
    """bob holds keys to two of alice's shared folders; a database writer
    who puts the key of one in the row of the other gets no access to it."""
    for name in ("alice", "bob"):
        storage.accounts.create(name, name + "-password-1")
    alice = storage.open_account("alice", "alice-password-1")
    for folder in ("/open", "/closed"):
        alice.mkdir(folder)
        alice.write_bytes(folder + "/f.txt", folder.encode())
        alice.share_grant(folder, "bob", "read")
    with storage.db.read() as c:
        bob_id = uq.user_by_name(c, "bob")["id"]
        rows = [dict(r) for r in uq.memberships_of(c, bob_id) if r["permission"] != "owner"]
    with storage.db.write() as c:
        swap(c, schema.domain_members, ("domain_id", "user_id"), rows[0], rows[1], ("sealed_key", "mount_enc"))
    bob = storage.open_account("bob", "bob-password-1")
    with pytest.raises(CofferError):
        bob.read_bytes("/Shared/alice/closed/f.txt")
    bob.close()
    alice.close()


@pytest.mark.slow
def test_a_database_writer_cannot_give_one_account_another_accounts_keys(tmp_path):
    """Managed accounts: the master key opens every user key. Before
    binding, someone able to write the database (but without the master
    key) could give bob alice's wrapped keys and home; bob, logging in with
    his own password, then read alice's files. Now that login fails and
    nothing of alice's is served."""
    srv = CofferServer(tmp_path, tls=False, accounts={"alice": "alice-pw-1", "bob": "bob-pw-22"})
    with srv:
        assert srv.request("PUT", "/secret.txt", body=b"alice's secret")[0] == 201
        st = Storage.open(config.load(srv.config))
        try:
            with st.db.write() as c:
                a, b = (dict(uq.user_by_name(c, n)) for n in ("alice", "bob"))
                a_home, b_home = uq.home_domain(c, a["id"]), uq.home_domain(c, b["id"])
                c.execute(update(schema.users).where(schema.users.c.id == b["id"]).values(
                    wrapped_user_key=a["wrapped_user_key"], wrapped_private_key=a["wrapped_private_key"],
                    public_key=a["public_key"]))
                c.execute(update(schema.domains).where(schema.domains.c.id == a_home["id"]).values(owner_id=b["id"]))
                c.execute(update(schema.domains).where(schema.domains.c.id == b_home["id"]).values(owner_id=a["id"]))
                dm = schema.domain_members
                c.execute(update(dm).where(dm.c.domain_id == a_home["id"]).values(user_id=b["id"]))
                c.execute(update(dm).where(dm.c.domain_id == b_home["id"]).values(user_id=a["id"]))
        finally:
            st.close()
        status, _, body = srv.request("GET", "/secret.txt", user="bob")
        assert b"alice's secret" not in body
        assert status >= 500, (status, body[:200])
        status, _, body = srv.request("PROPFIND", "/", headers={"Depth": "1"}, user="bob")
        assert b"secret.txt" not in body
    assert "failed authentication" in srv.log.read_text()


def test_maintenance_binds_managed_accounts_without_a_login(old_store):
    """The periodic job binds what the master key opens; a private
    account waits for its owner."""
    from providers import lifecycle
    report = lifecycle.run_maintenance(old_store, retention=False)
    assert report["accounts_bound"] == 1 and report["errors"] == []
    assert sealing(old_store, schema.users, name="alice") == [2]
    assert sealing(old_store, schema.users, name="bob") == [1]
    assert lifecycle.run_maintenance(old_store, retention=False)["accounts_bound"] == 0
