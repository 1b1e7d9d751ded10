"""`coffer-admin user export`: a tar whose files are byte-identical to what was
uploaded, with README.txt and account.json holding profile, consents, grants,
quota, sessions and administrator access; the trash under trash/; a managed
account needs a reason, a private one its password on stdin."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from urllib.parse import quote

import pytest

from admin_harness import ADMIN, Admin
from webdav_harness import CofferServer, require_client


@pytest.fixture
def admin(tmp_path):
    a = Admin(tmp_path, storage={"chunk_size": 64 * 1024}, accounts={"session_addresses": "full"})
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
    summary = admin.ok("user", "export", "alice", "--out", str(out), "--with-versions", "--json",
                       "--reason", "alice asked for a copy")
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
    (opened,) = [a for a in record["administrator_access"] if a["event"] == "account_opened"]
    assert opened["what"] == "exported your files and account record; reason: alice asked for a copy"


def test_export_without_versions_and_to_stdout(admin, tmp_path):
    st = admin.storage()
    try:
        upload(st, "alice", {"/a.txt": b"new"}, {"/a.txt": b"old"})
    finally:
        st.close()
    p = subprocess.run([ADMIN, "--config", str(admin.config), "user", "export", "alice", "--out", "-",
                        "--reason", "portability request"], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tar:
        assert tar.getnames()[:2] == ["README.txt", "account.json"]
        assert sorted(tar.getnames()) == ["README.txt", "account.json", "files/a.txt"]
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
    assert "no account named 'ghost'" in admin.fails("user", "export", "ghost", "--out", str(tmp_path / "g.tar"),
                                                      "--reason", "x")
    assert "cannot write" in admin.fails("user", "export", "alice", "--out", str(tmp_path / "no" / "such" / "x.tar"),
                                         "--reason", "x")
    p = admin("user", "export", "alice")
    assert p.returncode == 2 and "--out" in p.stderr


def test_managed_export_needs_a_reason(admin, tmp_path):
    """No terminal to ask on and no --reason: refused, nothing written, nothing recorded as done."""
    out = tmp_path / "alice.tar"
    msg = admin.fails("user", "export", "alice", "--out", str(out))
    assert "needs a reason" in msg and "--reason" in msg and "--disclosure" in msg
    assert "one line" in admin.fails("user", "export", "alice", "--out", str(out), "--reason", "a\nb")
    assert "no disclosure #99" in admin.fails("user", "export", "alice", "--out", str(out), "--disclosure", "99")
    assert not out.exists()
    assert admin.ok("access", "alice", "--json")[-1]["event"] == "account_updated"    # the consent, nothing since


# -- the trash, through a real server ------------------------------------------------------------

def curl(srv, user: str, *args) -> subprocess.CompletedProcess:
    """curl as `user` against the server; the password reaches curl in a config file, not argv."""
    cfg = srv.folder / f"curl-{user}.conf"
    cfg.write_text(f'user = "{user}:{srv.accounts[user]}"\n')
    cfg.chmod(0o600)
    return subprocess.run([require_client("curl"), "-ksS", "-K", str(cfg), "-o", "/dev/null", "-w", "%{http_code}",
                           *args], capture_output=True, text=True, timeout=120)


def put(srv, user: str, path: str, data: bytes) -> None:
    """PUT a file, making its folders first (MKCOL)."""
    parts = path.split("/")[1:-1]
    for i in range(1, len(parts) + 1):
        p = curl(srv, user, "-X", "MKCOL", srv.url + quote("/".join(parts[:i])) + "/")
        assert p.stdout in ("201", "405"), (path, p.stdout, p.stderr)        # 405: it exists
    src = srv.folder / "upload.bin"
    src.write_bytes(data)
    p = curl(srv, user, "-T", str(src), srv.url.rstrip("/") + quote(path))
    assert p.stdout in ("201", "204"), (path, p.stdout, p.stderr)


def delete(srv, user: str, path: str) -> None:
    p = curl(srv, user, "-X", "DELETE", srv.url.rstrip("/") + quote(path))
    assert p.stdout == "204", (path, p.stdout, p.stderr)


MEASURE = ("import os, subprocess, sys\n"
           "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)\n"
           "_, status, usage = os.wait4(p.pid, 0)\n"
           "print(usage.ru_maxrss)\n"
           "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_measured(args: list[str]) -> tuple[int, str, int]:
    """Run a command; (exit status, stderr, its own peak resident memory in KiB). A small
    Python starts it: a child forked from this test process would count the test's own memory."""
    p = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stderr, int(p.stdout.strip() or 0)


def test_export_holds_the_trash_deleted_over_webdav(tmp_path):
    """Files deleted with curl DELETE are in the export under trash/<deleted time>/<original path>, listed
    with their deletion times in account.json and explained in README.txt; another account's files and
    trash are nowhere in it; a 64 MiB file in the trash goes through without being held in memory."""
    big = os.urandom(64 * 1024 * 1024)
    gone = [b"gone, first of two", b"gone, second of two"]
    sub = {"/docs/sub/b.bin": os.urandom(300_000), "/docs/sub/deeper/c.txt": "çà et là\n".encode()}
    bobs = {"/bob-keeps.txt": b"BOB-SECRET-KEPT", "/bob-deletes.txt": b"BOB-SECRET-DELETED"}
    with CofferServer(tmp_path / "srv", accounts={"alice": "alice-pw-1", "bob": "bob-pw-22"}) as srv:
        for path, data in {"/keep.txt": b"kept", "/docs/a.txt": b"still here", **sub, "/big.bin": big}.items():
            put(srv, "alice", path, data)
        for data in gone:                         # the same path deleted twice: two trash entries
            put(srv, "alice", "/gone.txt", data)
            delete(srv, "alice", "/gone.txt")
            time.sleep(0.01)
        delete(srv, "alice", "/docs/sub")
        delete(srv, "alice", "/big.bin")
        for path, data in bobs.items():
            put(srv, "bob", path, data)
        delete(srv, "bob", "/bob-deletes.txt")

        admin = Admin.of(srv.config)
        out = tmp_path / "alice.tar"
        base = [ADMIN, "--config", str(srv.config)]
        rc, err, idle_kib = run_measured(base + ["user", "show", "alice"])
        assert rc == 0, err
        rc, err, export_kib = run_measured(base + ["user", "export", "alice", "--out", str(out), "--with-versions",
                                                   "--reason", "alice asked for everything"])
        assert rc == 0, err
        print(f"peak memory: coffer-admin user show {idle_kib} KiB, export of 64 MiB+ {export_kib} KiB")
        assert export_kib - idle_kib < 40 * 1024, (idle_kib, export_kib)    # 64 MiB went through, not into memory
        bob_out = tmp_path / "bob.tar"
        admin.ok("user", "export", "bob", "--out", str(bob_out), "--reason", "bob asked")
    with tarfile.open(bob_out) as tar:
        bob_names = tar.getnames()
        bob_record = json.loads(tar.extractfile("account.json").read())
    assert [e["path"] for e in bob_record["trash"]] == ["/bob-deletes.txt"]
    assert not any(w in n for n in bob_names for w in ("gone", "docs", "big.bin", "/keep.txt"))

    with tarfile.open(out) as tar:
        names = tar.getnames()
        read = {n: tar.extractfile(n).read() for n in names if tar.getmember(n).isfile()}
    record = json.loads(read["account.json"])
    readme = read["README.txt"].decode()
    assert names[0] == "README.txt"
    assert {n for n in read if n.startswith("files/")} == {"files/keep.txt", "files/docs/a.txt"}

    entries = record["trash"]
    assert sorted(e["path"] for e in entries) == ["/big.bin", "/docs/sub", "/gone.txt", "/gone.txt"]
    for e in entries:
        stamp = e["in_export"].split("/")[1]
        assert e["in_export"] == f"trash/{stamp}{e['path']}" and e["in_export"] in names
        assert e["deleted"].replace(":", "-") == stamp            # the time it was deleted, to the microsecond
        assert e["folder"] is (e["path"] == "/docs/sub")
    gones = sorted((e for e in entries if e["path"] == "/gone.txt"), key=lambda e: e["deleted"])
    assert [read[e["in_export"]] for e in gones] == gone
    (folder,) = [e for e in entries if e["folder"]]
    for path, data in sub.items():
        assert read[folder["in_export"] + path[len("/docs/sub"):]] == data
    (big_entry,) = [e for e in entries if e["path"] == "/big.bin"]
    assert read[big_entry["in_export"]] == big
    assert any(n.startswith("versions/gone.txt/") and read[n] == gone[0] for n in read)   # its older file

    assert "trash/" in readme and "files/" in readme and "account.json" in readme and "alice" in readme
    for field in ("profile", "consents", "quota", "grants", "ssh_keys", "sessions", "audit_events",
                  "administrator_access", "trash", "two_step_sign_in"):
        assert field in record and field in readme, field
    everything = b"".join(read.values()) + "".join(names).encode()
    for path, data in bobs.items():
        assert data not in everything and path.encode() not in everything
