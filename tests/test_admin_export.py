"""`coffer-admin user export`: a tar whose files are byte-identical to what was
uploaded, with account.json holding profile, consents, grants, quota and
sessions; private accounts need their password on stdin."""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest

from admin_harness import ADMIN, Admin


@pytest.fixture
def admin(tmp_path):
    a = Admin(tmp_path, storage={"chunk_size": 64 * 1024})
    a.add_user("alice", "alice-password", "--email", "alice@example.org", "--first-name", "Alice",
               "--last-name", "Liddell", "--plan", "pro")
    a.ok("user", "set", "alice", "--consent", "yes")
    return a


def upload(st, name: str, files: dict, old: dict | None = None) -> None:
    vfs = st.open_account(name, how="key")
    for path, data in (old or {}).items():
        vfs.makedirs(path.rsplit("/", 1)[0] or "/")
        vfs.write_bytes(path, data)
    for path, data in files.items():
        parent = path.rsplit("/", 1)[0]
        if parent:
            vfs.makedirs(parent)
        vfs.write_bytes(path, data)


def test_export_round_trip_with_versions(admin, tmp_path):
    files = {"/big.bin": os.urandom(1_000_000), "/empty": b"", "/docs/naïve résumé.txt": "ünïcödé\n".encode(),
             "/docs/deep/er/x.dat": os.urandom(70_000)}
    old = {"/docs/deep/er/x.dat": b"first version"}
    st = admin.storage()
    try:
        upload(st, "alice", files, old)
        st.open_account("alice", how="key").makedirs("/empty-folder")
        st.accounts.create("bob", "bob-password")
        bob = st.open_account("bob", how="key")
        bob.mkdir("/B")
        bob.write_bytes("/B/bobs.txt", b"not alice's")
        bob.share_grant("/B", "alice", "read")
        st.open_account("alice", how="key").share_grant("/docs", "bob", "write")
        uid = st.accounts.get("alice").id
        sid = st.sessions.start(uid, "sftp", "203.0.113.5")
        st.sessions.end(sid, 1234, 5678, 9)
    finally:
        st.close()
    out = tmp_path / "alice.tar"
    summary = admin.ok("user", "export", "alice", "--out", str(out), "--with-versions", "--json")
    assert summary["files"] == 4 and summary["versions"] == 1
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert not out.with_name(out.name + ".part").exists()
    with tarfile.open(out) as tar:
        names = tar.getnames()
        got = {n[len("files"):]: tar.extractfile(n).read() for n in names
               if n.startswith("files/") and tar.getmember(n).isfile()}
        assert got == files
        assert tar.getmember("files/empty-folder").isdir()
        (vname,) = [n for n in names if n.startswith("versions/")]
        assert vname.startswith("versions/docs/deep/er/x.dat/") and vname.endswith("_x.dat")
        assert tar.extractfile(vname).read() == b"first version"
        record = json.loads(tar.extractfile("account.json").read())
    p = record["profile"]
    assert (p["name"], p["first_name"], p["last_name"], p["email"]) == ("alice", "Alice", "Liddell",
                                                                        "alice@example.org")
    assert record["consents"]["news_email"] is True and record["consents"]["news_email_changed"]
    assert record["quota"]["plan"] == "pro" and record["quota"]["used_bytes"] > 1_000_000
    assert record["grants"]["shared"] == [{"folder": "/docs", "grantee": "bob", "permission": "write",
                                           "trashed": False}]
    assert [(g["owner"], g["folder"]) for g in record["grants"]["received"]] == [("bob", "/Shared/bob/B")]
    assert not any("Shared" in n for n in names)             # folders others own are theirs to export
    (s,) = record["sessions"]
    assert (s["protocol"], s["address"], s["bytes_in"], s["bytes_out"]) == ("sftp", "203.0.113.5", 1234, 5678)
    assert any(e["event"] == "account_created" for e in record["audit_events"])


def test_export_without_versions_and_to_stdout(admin, tmp_path):
    st = admin.storage()
    try:
        upload(st, "alice", {"/a.txt": b"new"}, {"/a.txt": b"old"})
    finally:
        st.close()
    p = subprocess.run([ADMIN, "--config", str(admin.config), "user", "export", "alice", "--out", "-"],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tar:
        assert sorted(tar.getnames()) == ["account.json", "files/a.txt"]
        assert tar.extractfile("files/a.txt").read() == b"new"
    assert b"exported alice" in p.stderr


def test_export_private_account_needs_password_on_stdin(admin, tmp_path):
    admin.add_user("pat", "pat-password", "--mode", "private")
    st = admin.storage()
    try:
        st.open_account("pat", "pat-password").write_bytes("/secret.txt", b"only mine")
    finally:
        st.close()
    out = tmp_path / "pat.tar"
    msg = admin.fails("user", "export", "pat", "--out", str(out))
    assert "private" in msg and "--password-stdin" in msg
    assert "wrong password" in admin.fails("user", "export", "pat", "--out", str(out), "--password-stdin",
                                           input="not-the-password\n")
    assert not out.exists()
    admin.ok("user", "export", "pat", "--out", str(out), "--password-stdin", input="pat-password\n")
    with tarfile.open(out) as tar:
        assert tar.extractfile("files/secret.txt").read() == b"only mine"


def test_export_failures(admin, tmp_path):
    assert "no account named 'ghost'" in admin.fails("user", "export", "ghost", "--out", str(tmp_path / "g.tar"))
    assert "cannot write" in admin.fails("user", "export", "alice", "--out", str(tmp_path / "no" / "such" / "x.tar"))
    p = admin("user", "export", "alice")
    assert p.returncode == 2 and "--out" in p.stderr
