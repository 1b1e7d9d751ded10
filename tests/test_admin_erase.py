"""`coffer-admin user erase`: keys first, then everything else; no row refers
to the account afterwards, its blobs are gone and copies of them cannot be
decrypted with anything left on the server; interrupted runs resume."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import func, select as sql_select

from admin_harness import ADMIN, Admin
from backend import database_values
from providers import crypto, lifecycle
from providers.errors import AuthenticationFailed, CofferError, Conflict, IntegrityError
from providers.meta import locks as lockq
from providers.meta import schema
from providers.meta import users as uq
from providers.sshkeys import SSHKeys

USER_COLUMNS = {"user_id", "owner_id", "author_id"}


def ssh_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " a@b"


def populate(st, name: str, net: str = "192.0.2") -> None:
    """Files, versions, trash, a dead property, a lock, an SSH key, sessions, audit."""
    vfs = st.open_account(name, how="key")
    vfs.makedirs("/docs/deep")
    vfs.write_bytes("/docs/a.txt", os.urandom(100_000))
    vfs.write_bytes("/docs/a.txt", os.urandom(60_000))
    vfs.write_bytes("/docs/deep/b.bin", os.urandom(300_000))
    vfs.write_bytes("/trash-me.txt", b"t" * 1000)
    vfs.delete("/trash-me.txt")
    vfs.set_props("/docs/a.txt", {"{urn:x}colour": b"blue"})
    with st.db.write() as c:
        lockq.insert(c, token=f"opaquelocktoken:{name}", domain_id=vfs.home.id, user_id=vfs.user.id,
                     root_lookup="0" * 64, expires_us=int((time.time() + 3600) * 1e6), data_enc=b"sealed")
    SSHKeys(st.db, st.accounts).add(name, ssh_line())
    secret = st.totp.begin(vfs.user.id, vfs.keys.user_key)          # two-step sign-in with recovery codes
    st.totp.confirm(vfs.user.id, vfs.keys.user_key, pyotp.TOTP(secret).now())
    sid = st.sessions.start(vfs.user.id, "webdav", f"{net}.44")
    st.sessions.end(sid, 10, 20, 3)
    with pytest.raises(AuthenticationFailed):
        st.open_account(name, "wrong-password", client_addr=f"{net}.45")


def references(st, user_id: int, domain_ids: list[int]) -> list[str]:
    """Every (table.column) holding the account's id or one of its domains' ids."""
    found = []
    with st.db.read() as c:
        for table in schema.metadata.sorted_tables:
            for col in table.columns:
                targets = {f"{fk.column.table.name}.{fk.column.name}" for fk in col.foreign_keys}
                is_user = "users.id" in targets or col.name in USER_COLUMNS or (table.name, col.name) == ("users", "id")
                is_domain = "domains.id" in targets or col.name == "domain_id" or \
                    (table.name, col.name) == ("domains", "id")
                if is_user and c.execute(sql_select(func.count()).select_from(table)
                                         .where(col == user_id)).scalar_one():
                    found.append(f"{table.name}.{col.name}")
                if is_domain and domain_ids and c.execute(sql_select(func.count()).select_from(table)
                                                          .where(col.in_(domain_ids))).scalar_one():
                    found.append(f"{table.name}.{col.name}")
    return found


def key_material(st) -> list[bytes]:
    """Every chunk key that anything left on the server can unwrap."""
    keys = []
    with st.db.read() as c:
        users = [dict(r) for r in uq.all_users(c)]
        members = c.execute(sql_select(schema.domain_members)).mappings().all()
        chunk_rows = c.execute(sql_select(schema.chunks)).mappings().all()
    user_keys = []
    for u in users:
        try:
            user_keys.append(st.accounts.user_key(u))
        except CofferError:
            pass                                    # private accounts: not without their password
    domain_keys = []
    for m in members:
        for uk in user_keys:
            try:
                domain_keys.append(crypto.unwrap_bound(uk, bytes(m["wrapped_key"]), crypto.domain_key_aad(
                    m["domain_id"], m["user_id"], m["key_gen"]), b"domain", "folder key"))
            except (CofferError, TypeError):
                pass
    for dk in domain_keys + [st.master.key]:
        wrap = crypto.DomainKeys.derive(dk).wrap
        for r in chunk_rows:
            try:
                keys.append(crypto.open_sealed(wrap, bytes(r["wrapped_key"]), r["dedup_id"].encode()))
            except CofferError:
                pass
    return keys + [st.master.key] + user_keys + domain_keys


def files_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and "blobs" not in p.parts)


def test_erase_destroys_keys_data_and_personal_data(tmp_path):
    admin = Admin(tmp_path)
    admin.add_user("alice", "alice-password", "--email", "alice.liddell@example.org", "--first-name", "Alicia")
    admin.add_user("bob", "bob-password")
    st = admin.storage()
    try:
        populate(st, "alice")
        populate(st, "bob", "198.51.100")
        bob = st.open_account("bob", how="key")
        bob.write_bytes("/bob.txt", b"bob's own")
        alice = st.accounts.get("alice")
        with st.db.write() as c:
            # grants both ways (as shared folders will record them) and a version alice wrote in bob's folder
            alice_home = uq.home_domain(c, alice.id)["id"]
            uq.add_member(c, alice_home, bob.user.id, "read", wrapped_key=os.urandom(60))
            uq.add_member(c, bob.home.id, alice.id, "write", wrapped_key=os.urandom(60))
            c.execute(schema.versions.update().where(schema.versions.c.domain_id == bob.home.id)
                      .values(author_id=alice.id))
            doms = [r[0] for r in c.execute(sql_select(schema.domains.c.id)
                                            .where(schema.domains.c.owner_id == alice.id))]
            urow = uq.user_by_id(c, alice.id)
            secrets = [bytes(urow["wrapped_user_key"]), bytes(urow["wrapped_private_key"])]
            secrets += [bytes(r[0]) for r in c.execute(sql_select(schema.domain_members.c.wrapped_key)
                                                       .where(schema.domain_members.c.domain_id.in_(doms)))]
            chunk_rows = [dict(r) for r in c.execute(sql_select(schema.chunks)
                                                     .where(schema.chunks.c.domain_id.in_(doms))).mappings()]
        secrets += [bytes(r["wrapped_key"]) for r in chunk_rows]
        assert len(chunk_rows) >= 4
        # copies of alice's blobs, as a backup of the blob store would hold them
        copies = tmp_path / "backup"
        copies.mkdir()
        for r in chunk_rows:
            (copies / r["blob_name"]).write_bytes(st.blobs.get(r["blob_name"]))
        # sanity: before erasure, what the server holds does decrypt them
        keys = key_material(st)
        r0 = chunk_rows[0]
        assert any(_decrypts(k, (copies / r0["blob_name"]).read_bytes(), r0["plain_size"]) for k in keys)
        bob_gen = st.account_generation("bob")
    finally:
        st.close()

    receipt = admin.ok("user", "erase", "alice", "--yes", "--json")
    assert receipt["files"] == 3 and receipt["folders"] == 2 and receipt["versions"] == 4
    assert receipt["chunks"] == len(chunk_rows) and receipt["bytes"] == sum(r["stored_size"] for r in chunk_rows)
    assert receipt["ssh_keys"] == 1 and receipt["locks"] == 1 and receipt["dead_properties"] == 1
    assert receipt["key_memberships"] == 3 and receipt["session_records_anonymised"] == 1
    assert receipt["keys_destroyed_first"] is True
    assert receipt["database_log_cleared"] is (True if admin.cfg.database_url.startswith("sqlite") else None)
    assert "alice" not in json.dumps(receipt).lower() and "192.0.2" not in json.dumps(receipt)

    st = admin.storage()
    try:
        assert references(st, alice.id, doms) == []
        with pytest.raises(AuthenticationFailed):
            st.open_account("alice", "alice-password")
        with pytest.raises(AuthenticationFailed):
            st.open_account("alice", how="key")
        assert st.account_generation("alice") is None
        # session records and audit events stay, without who or from where
        sessions = st.sessions.list()
        assert [s["user_id"] for s in sessions].count(None) == 1
        assert all(s["client_addr"] is None for s in sessions if s["user_id"] is None)
        with st.db.read() as c:
            anon = [dict(r) for r in uq.audit_events_list(c) if r["user_id"] is None]
            stored = [dict(r["body"]) for r in lifecycle.lq.receipts_list(c)]
        assert anon and all(e["client_addr"] is None for e in anon)
        assert any(e["event"] == "account_erased" for e in anon)
        assert stored and "alice" not in json.dumps(stored)
        # the blob store holds no chunk of alice's domains, and bob is untouched
        assert not any(st.blobs.exists(r["blob_name"]) for r in chunk_rows)
        assert st.open_account("bob", how="key").read_bytes("/bob.txt") == b"bob's own"
        assert st.account_generation("bob") == bob_gen
        # nothing left on the server decrypts the copies...
        keys = key_material(st)
        for r in chunk_rows:
            blob = (copies / r["blob_name"]).read_bytes()
            assert not any(_decrypts(k, blob, r["plain_size"]) for k in keys)
        # ...because no wrapped copy of alice's keys, nor her profile, survives in any file
        everything = files_bytes(tmp_path / "var") + b"".join(raw for _, raw in database_values(st))
        for s in secrets:
            assert s not in everything
        for personal in (b"alice.liddell@example.org", b"Alicia", b"192.0.2.44", b"192.0.2.45"):
            assert personal not in everything
    finally:
        st.close()
    assert "no account named 'alice'" in admin.fails("user", "erase", "alice", "--yes")
    assert "add --yes" in admin.fails("user", "erase", "bob")
    assert "alice" not in admin.ok("user", "list")


def _decrypts(key: bytes, blob: bytes, plain_size: int) -> bool:
    try:
        crypto.decrypt_chunk(key, blob, plain_size)
        return True
    except (IntegrityError, ValueError):
        return False


def test_erase_private_account_needs_no_password(tmp_path):
    admin = Admin(tmp_path)
    admin.add_user("pat", "pat-password", "--mode", "private")
    st = admin.storage()
    try:
        st.open_account("pat", "pat-password").write_bytes("/x", b"private stuff")
    finally:
        st.close()
    r = admin.ok("user", "erase", "pat", "--yes", "--json")
    assert r["mode"] == "private" and r["files"] == 1
    assert "no account named" in admin.fails("user", "show", "pat")


def test_erase_interrupted_in_process_resumes(tmp_path, monkeypatch):
    admin = Admin(tmp_path, storage={"chunk_size": 4096})
    admin.add_user("alice", "alice-password")
    st = admin.storage()
    try:
        if hasattr(st.blobs, "PACK_BYTES"):
            monkeypatch.setattr(type(st.blobs.inner), "PACK_BYTES", 2 * 4096)     # two chunks per pack blob
        st.open_account("alice", how="key").write_bytes("/f.bin", os.urandom(4096 * 450))
        stored = len(list(st.blobs.names()))
        assert stored == (225 if hasattr(st.blobs, "PACK_BYTES") else 450)     # packs on local disk
        calls = {"n": 0}
        real = st.blobs.delete

        def dying(name):
            calls["n"] += 1
            if calls["n"] == 150:
                raise KeyboardInterrupt          # like a crash half-way through the chunks
            real(name)
        monkeypatch.setattr(st.blobs, "delete", dying)
        with pytest.raises(KeyboardInterrupt):
            lifecycle.erase(st, "alice")
        assert st.accounts.get("alice").status == "erasing"
        with pytest.raises(AuthenticationFailed):
            st.open_account("alice", "alice-password")
        with pytest.raises(Conflict):
            st.accounts.set_status("alice", "active")          # no way back once the keys are gone
        assert st.fsck()["damaged"] == []
        monkeypatch.setattr(st.blobs, "delete", real)
    finally:
        st.close()
    assert "being erased" in admin.fails("user", "enable", "alice")
    r = admin.ok("user", "erase", "alice", "--json")           # resuming asks nothing
    assert r["runs"] == 2 and r["chunks"] == 450 and r["blobs"] == stored
    st = admin.storage()
    try:
        with st.db.read() as c:
            assert c.execute(sql_select(func.count()).select_from(schema.chunks)).scalar_one() == 0
        assert list(st.blobs.names()) == []
    finally:
        st.close()


def test_sigkill_mid_erase_then_rerun_completes(tmp_path, monkeypatch):
    admin = Admin(tmp_path, storage={"chunk_size": 4096})
    admin.add_user("alice", "alice-password")
    monkeypatch.setattr(os, "fsync", lambda fd: None)       # faster set-up only; the erasing process fsyncs
    st = admin.storage()
    try:
        vfs = st.open_account("alice", how="key")
        for i in range(6):
            vfs.write_bytes(f"/f{i}.bin", os.urandom(4096 * 500))
        total = 3000
    finally:
        st.close()
    monkeypatch.undo()
    master, slave = pty.openpty()           # on a terminal, erase prints progress: kill it once it has
    proc = subprocess.Popen([ADMIN, "--config", str(admin.config), "user", "erase", "alice", "--yes"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"chunks removed" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.close(master)
    assert proc.returncode == -signal.SIGKILL, seen
    st = admin.storage()
    try:
        assert st.accounts.get("alice").status == "erasing"
        with st.db.read() as c:
            left = c.execute(sql_select(func.count()).select_from(schema.chunks)).scalar_one()
        assert 0 < left < total, "the erasure was not interrupted half-way"
        with pytest.raises(AuthenticationFailed):
            st.open_account("alice", "alice-password")
    finally:
        st.close()
    r = admin.ok("user", "erase", "alice", "--json")
    assert r["runs"] == 2 and r["chunks"] == total and r["files"] == 6
    st = admin.storage()
    try:
        assert references(st, 1, [1]) == []
        assert list(st.blobs.names()) == []
    finally:
        st.close()


def test_maintenance_resumes_only_stalled_erasures(tmp_path, monkeypatch):
    admin = Admin(tmp_path)
    admin.add_user("alice", "alice-password")
    st = admin.storage()
    try:
        st.open_account("alice", how="key").write_bytes("/f", b"data")
        monkeypatch.setattr(st.blobs, "delete", lambda name: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            lifecycle.erase(st, "alice")
        monkeypatch.undo()
        assert lifecycle.run_maintenance(st, retention=False)["accounts_erased"] == 0    # maybe still running
        later = int((time.time() + 3600) * 1e6)
        report = lifecycle.run_maintenance(st, now_us=later, retention=False)
        assert report["accounts_erased"] == 1
        assert st.accounts.list() == []
    finally:
        st.close()


def test_erased_account_cannot_log_in_over_webdav(tmp_path):
    from webdav_harness import CofferServer
    with CofferServer(tmp_path / "dav", tls=False) as srv:
        assert srv.request("PUT", "/a.txt", body=b"hello")[0] in (201, 204)
        assert srv.request("GET", "/a.txt")[0] == 200           # the login is now cached
        p = subprocess.run([ADMIN, "--config", str(srv.config), "user", "erase", "alice", "--yes"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert srv.request("GET", "/a.txt")[0] == 401
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"})[0] == 401
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"}, user="bob")[0] == 207


def test_erased_account_cannot_log_in_over_sftp(tmp_path):
    from sftp_harness import SftpServer
    with SftpServer(tmp_path / "ssh", accounts={"alice": ("alice-pw-1", "managed"),
                                                "bob": ("bob-pw-22", "managed")}) as srv:
        assert srv.sftp_batch("ls\n").returncode == 0
        p = subprocess.run([ADMIN, "--config", str(srv.config), "user", "erase", "alice", "--yes"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert srv.sftp_batch("ls\n").returncode != 0
        assert srv.sftp_batch("ls\n", password="alice-pw-1").returncode != 0
        assert srv.sftp_batch("ls\n", user="bob").returncode == 0


def test_erase_spares_content_copied_into_another_accounts_folder(tmp_path):
    admin = Admin(tmp_path)
    admin.add_user("alice", "alice-password")
    admin.add_user("bob", "bob-password")
    data = os.urandom(300_000)
    st = admin.storage()
    try:
        bob = st.open_account("bob", how="key")
        bob.mkdir("/Box")
        bob.share_grant("/Box", "alice", "write")
        alice = st.open_account("alice", how="key")
        alice.write_bytes("/mine.bin", data)
        alice.copy("/mine.bin", "/Shared/bob/Box/copy.bin")      # bob's folder now holds the same content
        alice.mkdir("/Out")
        alice.share_grant("/Out", "bob", "read")
        with st.db.read() as c:
            doms = [row[0] for row in c.execute(sql_select(schema.domains.c.id)
                                                .where(schema.domains.c.owner_id == alice.user.id))]
        alice_id = alice.user.id
    finally:
        st.close()
    r = admin.ok("user", "erase", "alice", "--yes", "--json")
    assert r["domains"] == 2 and r["blobs"] < r["chunks"]           # blobs bob's folder uses stay
    st = admin.storage()
    try:
        bob = st.open_account("bob", how="key")
        assert bob.read_bytes("/Box/copy.bin") == data
        assert bob.share_list() == {"shared": [], "received": []}
        assert st.fsck()["damaged"] == []
        assert len(doms) == 2 and references(st, alice_id, doms) == []
    finally:
        st.close()
