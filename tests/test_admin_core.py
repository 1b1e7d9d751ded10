"""The first coffer-admin commands, through the installed entry point."""
import os

from admin_harness import Admin
from backend import damage, stored_blobs
from providers.storage import Storage


def test_user_add_list_show_quota_disable_enable(tmp_path):
    admin = Admin(tmp_path)
    out = admin.ok("user", "add", "Bob", "--password-stdin", "--quota", "1G", "--email", "bob@example.org",
                   input="bob-password\n")
    assert "created account bob" in out
    users = admin.ok("user", "list", "--json")
    assert [u["name"] for u in users] == ["bob"] and users[0]["quota_bytes"] == 1024**3
    assert admin.ok("user", "show", "bob", "--json")["email"] == "bob@example.org"
    assert admin.ok("user", "quota", "bob", "--plan", "pro", "--json")["quota_bytes"] == 1024**4
    assert admin.ok("user", "disable", "bob", "--json")["status"] == "disabled"
    assert admin.ok("user", "enable", "bob", "--json")["status"] == "active"
    assert "bob" in admin.ok("user", "list")


def test_failures_name_what_failed(tmp_path):
    admin = Admin(tmp_path)
    assert "no account named 'ghost'" in admin.fails("user", "show", "ghost")
    assert "unknown plan" in admin.fails("user", "add", "x1", "--plan", "gold", "--password-stdin",
                                         input="long-enough-pw\n")
    assert "8 characters" in admin.fails("user", "add", "x2", "--password-stdin", input="short\n")
    assert "account names" in admin.fails("user", "add", "../evil", "--password-stdin", input="long-enough-pw\n")
    assert "standard input" in admin.fails("user", "add", "x3", "--password-stdin", input="")
    admin.ok("user", "add", "dup", "--password-stdin", input="long-enough-pw\n")
    assert "already exists" in admin.fails("user", "add", "dup", "--password-stdin", input="long-enough-pw\n")
    assert "not a size" in admin.fails("user", "quota", "dup", "lots")


def test_password_never_on_argv_and_private_passwd(tmp_path):
    admin = Admin(tmp_path)
    p = admin("user", "add", "carol", "--password", "secret123")
    assert p.returncode == 2                        # argparse refuses an unknown option
    data = admin.ok("user", "add", "carol", "--mode", "private", "--password-stdin", "--json",
                    input="carol-password\n")
    code = data["recovery_code"]
    assert "wrong" in admin.fails("user", "passwd", "carol", "--password-stdin",
                                  input="not-her-password\nnew-password-1\n")
    admin.ok("user", "passwd", "carol", "--password-stdin", input="carol-password\nnew-password-1\n")
    assert "recovery code is wrong" in admin.fails("user", "passwd", "carol", "--password-stdin",
                                                    "--recovery-code", input=f"{code}\nnew-password-2\n")
    from providers.storage import Storage
    st = Storage.open(admin.cfg)
    st.open_account("carol", "new-password-1").write_bytes("/kept", b"still readable")
    st.close()
    out = admin.ok("user", "passwd", "carol", "--password-stdin", input="new-password-1\nnew-password-3\n")
    new_code = out.split("recovery code (the old one no longer works): ")[1].strip()
    admin.ok("user", "passwd", "carol", "--password-stdin", "--recovery-code",
             input=f"{new_code}\nnew-password-4\n")
    st = Storage.open(admin.cfg)
    assert st.open_account("carol", "new-password-4").read_bytes("/kept") == b"still readable"
    st.close()


def test_fsck_and_gc_commands(tmp_path):
    admin = Admin(tmp_path)
    admin.ok("user", "add", "dan", "--password-stdin", input="dan-password\n")
    from providers.storage import Storage
    st = Storage.open(admin.cfg)
    st.open_account("dan", "dan-password").write_bytes("/f", os.urandom(200_000))
    st.blobs.put("ab" * 16, b"orphan left by a crash")
    st.close()
    report = admin.ok("fsck", "--json")
    assert report["chunks_checked"] == 1 and report["damaged"] == []
    assert admin.ok("gc", "--grace", "0", "--json")["orphan_blobs_removed"] == 1
    st = Storage.open(admin.cfg)
    name, size = stored_blobs(st.blobs)[0]
    damage(st.blobs, name, 0)
    st.close()
    p = admin("fsck")
    assert p.returncode == 2 and "DAMAGED in dan" in p.stdout and "/f" in p.stdout


def test_forgotten_private_password_reset_discards_the_files(tmp_path):
    admin = Admin(tmp_path)
    admin.ok("user", "add", "erin", "--mode", "private", "--password-stdin", input="erin-password\n")
    admin.ok("user", "add", "mgr", "--password-stdin", input="mgr-password1\n")
    from providers.storage import Storage
    st = Storage.open(admin.cfg)
    st.open_account("erin", "erin-password").write_bytes("/old.bin", os.urandom(300_000))
    blobs_before = len(list(st.blobs.names()))
    st.close()
    refused = admin.fails("user", "passwd", "erin", "--discard-data", "--password-stdin",
                          input="new-password-9\nnew-password-9\n")
    assert "nobody can decrypt" in refused and "--yes" in refused
    assert "is managed" in admin.fails("user", "passwd", "mgr", "--discard-data", "--yes", "--password-stdin",
                                       input="new-password-9\n")
    data = admin.ok("user", "passwd", "erin", "--discard-data", "--yes", "--password-stdin", "--json",
                    input="new-password-9\n")
    assert data["files"] == 1 and data["recovery_code"]
    st = Storage.open(admin.cfg)
    assert len(list(st.blobs.names())) == blobs_before - 1
    v = st.open_account("erin", "new-password-9")
    assert v.list("/") == []
    v.write_bytes("/new.txt", b"fresh start")
    assert v.read_bytes("/new.txt") == b"fresh start"
    st.close()
