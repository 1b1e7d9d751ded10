"""coffer-admin: user set / cancel / reinstate, maintenance, exclude, versions,
restore, purge, sessions and audit - through the installed entry point."""
from __future__ import annotations

import time

import pytest

from admin_harness import Admin
from providers.errors import AuthenticationFailed, NotFound, QuotaExceeded


@pytest.fixture
def admin(tmp_path):
    a = Admin(tmp_path)
    a.add_user("alice", "alice-password", "--email", "alice@example.org")
    return a


def test_every_command_has_help(capsys):
    from scripts import admin as admin_main
    parser = admin_main.build_parser()
    for cmd in (["user", "set"], ["user", "cancel"], ["user", "reinstate"], ["user", "erase"], ["user", "export"],
                ["purge"], ["exclude"], ["versions"], ["restore"], ["sessions"], ["audit"], ["receipts"],
                ["notify", "breach"], ["notify", "news"], ["maintenance"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([*cmd, "--help"])
        assert e.value.code == 0 and "usage: coffer-admin" in capsys.readouterr().out, cmd
    assert Admin  # the other tests run the installed entry point


def test_user_set_profile_consent_and_plan(admin):
    before = time.time()
    u = admin.ok("user", "set", "alice", "--first-name", "Alice", "--last-name", "Liddell",
                 "--email", "al@example.org", "--consent", "yes", "--plan", "pro", "--json")
    assert (u["first_name"], u["last_name"], u["email"], u["plan"]) == ("Alice", "Liddell", "al@example.org", "pro")
    assert u["email_consent"] is True and u["email_consent_changed"] != "-"
    assert u["quota_bytes"] == 1024**4
    shown = admin.ok("user", "show", "alice", "--json")
    assert shown["email_consent"] is True and shown["plan"] == "pro"
    # withdrawing records a new time; the default is off
    u = admin.ok("user", "set", "alice", "--consent", "no", "--json")
    assert u["email_consent"] is False
    st = admin.storage()
    try:
        assert st.accounts.get("alice").consent_changed_us >= before * 1e6
    finally:
        st.close()
    assert "unknown plan 'gold'" in admin.fails("user", "set", "alice", "--plan", "gold")
    assert "not an email address" in admin.fails("user", "set", "alice", "--email", "no-at-sign")
    assert "no account named 'nobody'" in admin.fails("user", "set", "nobody", "--email", "x@example.org")
    assert "is not a size" in admin.fails("user", "set", "alice", "--quota", "lots")
    assert admin.ok("user", "add", "bob", "--password-stdin", "--json", input="bob-password\nbob-password\n"
                    )["email_consent"] is False


def test_downgrade_below_usage_keeps_files_and_blocks_writes(admin):
    st = admin.storage()
    try:
        vfs = st.open_account("alice", how="key")
        vfs.write_bytes("/big.bin", b"x" * 50_000)
        out = admin.ok("user", "set", "alice", "--quota", "10K")
        assert "above the new quota" in out and "new writes are refused" in out
        vfs = st.open_account("alice", how="key")
        assert vfs.read_bytes("/big.bin") == b"x" * 50_000
        with pytest.raises(QuotaExceeded):
            vfs.write_bytes("/more.bin", b"y" * 20_000)
        admin.ok("user", "set", "alice", "--plan", "basic")       # back to the plan's quota
        st.open_account("alice", how="key").write_bytes("/more.bin", b"y" * 20_000)
    finally:
        st.close()


def test_cancel_then_reinstate_within_grace_keeps_everything(admin):
    st = admin.storage()
    try:
        st.open_account("alice", how="key").write_bytes("/keep.txt", b"precious")
        u = admin.ok("user", "cancel", "alice", "--json")
        assert u["status"] == "cancelled" and u["erase_after"]
        with pytest.raises(AuthenticationFailed):
            st.open_account("alice", "alice-password")
        assert st.account_generation("alice") is None
        assert "already cancelled" in admin.fails("user", "cancel", "alice")
        report = admin.ok("maintenance", "--json")
        assert report["accounts_erased"] == 0
        assert admin.ok("user", "reinstate", "alice", "--json")["status"] == "active"
        vfs = st.open_account("alice", "alice-password")
        assert vfs.read_bytes("/keep.txt") == b"precious"
        assert "not cancelled" in admin.fails("user", "reinstate", "alice")
        assert "no account named" in admin.fails("user", "cancel", "ghost")
    finally:
        st.close()


def test_cancel_grace_over_then_maintenance_erases(tmp_path):
    admin = Admin(tmp_path, accounts={"cancel_grace_days": 0})
    admin.add_user("alice", "alice-password")
    admin.add_user("bob", "bob-password")
    st = admin.storage()
    try:
        st.open_account("alice", how="key").write_bytes("/f.txt", b"bye")
        st.open_account("bob", how="key").write_bytes("/f.txt", b"stay")
    finally:
        st.close()
    admin.ok("user", "cancel", "alice")
    assert "grace period" in admin.fails("user", "reinstate", "alice")
    report = admin.ok("maintenance", "--json")
    assert report["accounts_erased"] == 1 and len(report["receipts"]) == 1
    assert "no account named 'alice'" in admin.fails("user", "show", "alice")
    receipts = admin.ok("receipts", "--json")
    assert [r["reason"] for r in receipts] == ["cancellation"] and receipts[0]["files"] == 1
    assert "alice" not in str(receipts)
    assert admin.ok("receipts", str(receipts[0]["id"]), "--json") == receipts
    assert "no receipt #999" in admin.fails("receipts", "999")
    st = admin.storage()
    try:
        assert st.open_account("bob", how="key").read_bytes("/f.txt") == b"stay"
    finally:
        st.close()


def test_maintenance_applies_trash_and_record_retention(tmp_path):
    admin = Admin(tmp_path, retention={"trash_days": 0}, accounts={"session_record_days": 0, "audit_days": 0})
    admin.add_user("alice", "alice-password")
    st = admin.storage()
    try:
        vfs = st.open_account("alice", how="key")
        vfs.write_bytes("/gone.txt", b"old")
        vfs.delete("/gone.txt")
        sid = st.sessions.start(vfs.user.id, "webdav", "192.0.2.1")
        st.sessions.end(sid, 1, 2, 3)
        time.sleep(0.01)
        report = admin.ok("maintenance", "--json")
        assert report["trash_expired"] == 1 and report["retention_accounts"] == 1
        assert report["session_records_purged"] == 1 and report["audit_events_purged"] >= 1
        with pytest.raises(NotFound):
            vfs.restore("/gone.txt")
        assert st.sessions.list() == []
        assert "erased 0 account(s)" in admin.ok("maintenance", "--no-retention")
    finally:
        st.close()


def test_exclude_patterns(admin):
    pats = admin.ok("exclude", "alice", "list", "--json")["patterns"]
    assert "*.tmp" in pats and "*.bak" not in pats
    assert "*.bak" in admin.ok("exclude", "alice", "add", "*.bak", "--json")["patterns"]
    assert "already in the list" in admin.fails("exclude", "alice", "add", "*.bak")
    assert "needs a PATTERN" in admin.fails("exclude", "alice", "add")
    assert "not paths" in admin.fails("exclude", "alice", "add", "a/b")
    st = admin.storage()
    try:
        vfs = st.open_account("alice", how="key")
        vfs.write_bytes("/x.bak", b"1")
        vfs.write_bytes("/x.bak", b"2")
        assert len(vfs.versions("/x.bak")) == 1          # excluded: no history
    finally:
        st.close()
    assert "*.tmp" not in admin.ok("exclude", "alice", "remove", "*.tmp", "--json")["patterns"]
    assert "not in the list" in admin.fails("exclude", "alice", "remove", "*.nope")
    assert "no account named" in admin.fails("exclude", "ghost", "list")


def test_versions_restore_and_purge(admin):
    st = admin.storage()
    try:
        vfs = st.open_account("alice", how="key")
        vfs.makedirs("/docs")
        vfs.write_bytes("/docs/a.txt", b"one")
        t_one = time.time()
        time.sleep(1.1)
        vfs.write_bytes("/docs/a.txt", b"two")
        versions = admin.ok("versions", "alice", "/docs/a.txt", "--json")
        assert [v["current"] for v in versions] == [True, False] and versions[1]["size"] == 3
        old = versions[1]["id"]

        admin.ok("restore", "alice", "/docs/a.txt", "--version", str(old), "--to", "/docs/old.txt")
        assert vfs.read_bytes("/docs/old.txt") == b"one"
        admin.ok("restore", "alice", "/docs/a.txt", "--version", str(old))
        assert vfs.read_bytes("/docs/a.txt") == b"one"
        vfs.write_bytes("/docs/a.txt", b"three")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_one + 1))
        r = admin.ok("restore", "alice", "/docs", "--at", at, "--to", "/then", "--json")
        assert r["is_dir"] and vfs.read_bytes("/then/a.txt") == b"one"
        vfs.delete("/docs")
        admin.ok("restore", "alice", "/docs")                        # newest trash entry
        assert vfs.read_bytes("/docs/a.txt") == b"three"

        assert "has no version 999999" in admin.fails("restore", "alice", "/docs/a.txt", "--version", "999999")
        assert "not in the trash" in admin.fails("restore", "alice", "/never")
        assert "not a time" in admin.fails("restore", "alice", "/docs", "--at", "yesterday-ish")
        assert "not both" in admin.fails("restore", "alice", "/docs", "--at", "1d", "--version", "1")
        assert "folder" in admin.fails("versions", "alice", "/docs")

        assert "add --yes" in admin.fails("purge", "alice", "/docs/a.txt")
        admin.ok("purge", "alice", "/docs/a.txt", "--yes")
        assert not vfs.exists("/docs/a.txt")
        assert "does not exist" in admin.fails("versions", "alice", "/docs/a.txt")
        assert "neither in the tree nor in the trash" in admin.fails("purge", "alice", "/docs/a.txt", "--yes")
        assert "no account named" in admin.fails("versions", "ghost", "/x")
    finally:
        st.close()


def test_private_account_needs_its_password(admin):
    admin.add_user("pat", "pat-password", "--mode", "private")
    st = admin.storage()
    try:
        st.open_account("pat", "pat-password").write_bytes("/p.txt", b"mine")
    finally:
        st.close()
    msg = admin.fails("versions", "pat", "/p.txt")
    assert "private" in msg and "--password-stdin" in msg
    assert "wrong password" in admin.fails("versions", "pat", "/p.txt", "--password-stdin", input="nope-nope\n")
    assert admin.ok("versions", "pat", "/p.txt", "--password-stdin", "--json", input="pat-password\n")[0]["size"] == 4
    assert "private" in admin.fails("purge", "pat", "/p.txt", "--yes")
    assert "private" in admin.fails("restore", "pat", "/p.txt")


@pytest.mark.parametrize("policy,kept", [("full", ("192.0.2.7", "2001:db8:5:6::1")),
                                         ("truncated", ("192.0.2.0/24", "2001:db8:5::/48")),
                                         ("none", (None, None))])
def test_sessions_and_audit(tmp_path, policy, kept):
    admin = Admin(tmp_path, accounts={"session_addresses": policy})
    admin.add_user("alice", "alice-password")
    st = admin.storage()
    try:
        uid = st.accounts.get("alice").id
        sid = st.sessions.start(uid, "webdav", "192.0.2.7")
        st.sessions.end(sid, 100, 2000, 5)
        st.sessions.start(uid, "sftp", "2001:db8:5:6::1")
    finally:
        st.close()
    rows = admin.ok("sessions", "--user", "alice", "--json")
    assert [(r["protocol"], r["address"]) for r in rows] == [("webdav", kept[0]), ("sftp", kept[1])]
    assert rows[0]["bytes_in"] == 100 and rows[0]["bytes_out"] == 2000 and rows[1]["ended"] is None
    assert not rows[0]["cut_short"]
    assert len(admin.ok("sessions", "--since", "1h", "--json")) == 2
    assert admin.ok("sessions", "--since", "2100-01-01", "--json") == []
    listed = admin.ok("sessions")
    assert all(k in listed for k in kept if k) and ("192.0.2" in listed) == (policy != "none")
    assert "not a time" in admin.fails("sessions", "--since", "last tuesday")
    assert "no account named" in admin.fails("sessions", "--user", "ghost")
    events = admin.ok("audit", "--user", "alice", "--event", "account_created", "--json")
    assert len(events) == 1 and events[0]["user"] == "alice"
    assert admin.ok("audit", "--since", "2100-01-01", "--json") == []


def test_serve_timer_job_runs_retention_at_most_hourly(storage):
    from providers.schedule import Scheduler
    storage.accounts.create("alice", "alice-password")
    scheduler = Scheduler(storage)              # coffer serve's
    first = scheduler.tick()
    assert first["retention_accounts"] == 1 and first["errors"] == []
    again = scheduler.tick()                    # a minute later on coffer serve's timer
    assert again["retention_accounts"] == 0 and again["accounts_erased"] == 0
