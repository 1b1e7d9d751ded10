"""Every administrator access to an account is recorded where its holder can
read it: exports (a managed account's needs a reason), disclosures to third
parties recorded before the export made for them, restores, purges, password
resets. The holder lists them over SSH (`coffer access`, OpenSSH), the
administrator with `coffer-admin access`; another account sees none of them;
erasure takes the typed recipients and reasons with it."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

from admin_harness import ADMIN, Admin
from sftp_harness import SftpServer

COURT = "District Court of Utrecht"
ORDER = "production order 2026/4471"


@pytest.fixture
def server(tmp_path):
    with SftpServer(tmp_path / "srv") as srv:
        yield srv


def access_over_ssh(srv, user: str, *args: str):
    p = srv.ssh(" ".join(["coffer", "access", *args]), user=user)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if "--json" in args else p.stdout.decode()


def test_admin_accesses_are_listed_to_their_account_only(server, tmp_path):
    admin = Admin.of(server.config)
    st = admin.storage()
    try:
        vfs = st.open_account("alice", "alice-pw-1")
        vfs.write_bytes("/report.txt", b"v1")
        vfs.write_bytes("/report.txt", b"v2")
        vfs.delete("/report.txt")
        st.open_account("bob", "bob-pw-22").write_bytes("/bob.txt", b"bob's")
    finally:
        st.close()
    before = {e["id"] for e in access_over_ssh(server, "bob", "--json")}

    # an export of a managed account without a reason is refused, and recorded as nothing
    out = tmp_path / "alice.tar"
    msg = admin.fails("user", "export", "alice", "--out", str(out))
    assert "needs a reason" in msg and not out.exists()
    assert [e["event"] for e in access_over_ssh(server, "alice", "--json")] == ["account_created", "ssh_key_added"]

    admin.ok("user", "export", "alice", "--out", str(out), "--reason", "alice asked for a copy of her data")
    disclosure = admin.ok("disclose", "alice", "--to", COURT, "--reason", ORDER, "--json")
    assert disclosure["name"] == "alice" and disclosure["to"] == COURT and disclosure["reason"] == ORDER
    assert f"no disclosure #{disclosure['id']}" in admin.fails(      # another account's disclosure opens nothing
        "user", "export", "bob", "--out", str(tmp_path / "bob.tar"), "--disclosure", str(disclosure["id"]))
    court_tar = tmp_path / "for-the-court.tar"
    admin.ok("user", "export", "alice", "--out", str(court_tar), "--disclosure", str(disclosure["id"]))
    admin.ok("restore", "alice", "/report.txt", "--reason", "ticket 12: restore the deleted report")
    admin.ok("purge", "alice", "/report.txt", "--yes")
    admin.ok("user", "passwd", "alice", "--password-stdin", input="new-alice-pw-1\nnew-alice-pw-1\n")

    mine = access_over_ssh(server, "alice", "--json")
    assert mine == admin.ok("access", "alice", "--json")              # the holder sees what the admin sees
    opened = [e for e in mine if e["event"] == "account_opened"]
    assert [e["detail"]["purpose"] for e in opened] == ["export", "export", "restore", "purge"]
    assert opened[0]["detail"]["reason"] == "alice asked for a copy of her data"
    assert opened[1]["detail"] == {"purpose": "export", "disclosure": disclosure["id"], "reason": ORDER}
    (disclosed,) = [e for e in mine if e["event"] == "disclosure_recorded"]
    assert disclosed["id"] == disclosure["id"] and disclosed["detail"] == {"to": COURT, "reason": ORDER}
    order = [e["event"] for e in mine]
    assert order.index("disclosure_recorded") < order.index("account_opened", order.index("disclosure_recorded"))
    for event in ("account_exported", "password_changed"):
        assert event in order, event
    assert [e["what"] for e in mine if e["event"] == "history_purged"] == ["purged history"]   # by the admin

    text = access_over_ssh(server, "alice")
    assert f"recorded a disclosure of your data to {COURT}; reason: {ORDER}" in text
    assert f"exported your files and account record, for disclosure #{disclosure['id']}; reason: {ORDER}" in text
    assert "restored a file or folder; reason: ticket 12" in text and "changed your password" in text

    # the export names the disclosure in the account's own record, too
    with tarfile.open(court_tar) as tar:
        record = json.loads(tar.extractfile("account.json").read())
    assert any(COURT in a["what"] for a in record["administrator_access"])

    # bob sees nothing of alice's record: only what was done to his own account
    theirs = access_over_ssh(server, "bob", "--json")
    assert {e["id"] for e in theirs} == before
    assert COURT not in json.dumps(theirs) and ORDER not in json.dumps(theirs)
    assert "no administrator action" not in access_over_ssh(server, "bob")  # his account_created is there
    p = server.ssh("coffer access alice", user="bob")
    assert p.returncode == 2 and b"usage: coffer access [--json]" in p.stderr

    # erasure takes the recipients and reasons typed for alice with it
    admin.ok("user", "erase", "alice", "--yes")
    left = json.dumps(admin.ok("audit", "--json"))
    assert COURT not in left and ORDER not in left and "alice asked" not in left


def test_private_account_export_needs_no_reason_but_is_recorded(server, tmp_path):
    admin = Admin.of(server.config)
    out = tmp_path / "carol.tar"
    admin.ok("user", "export", "carol", "--out", str(out), "--password-stdin", input="carol-pw-333\n")
    (opened,) = [e for e in admin.ok("access", "carol", "--json") if e["event"] == "account_opened"]
    assert opened["detail"] == {"purpose": "export"}
    assert "exported your files" in opened["what"]


def test_export_asks_for_the_reason_on_a_terminal(server, tmp_path):
    admin = Admin.of(server.config)
    out = tmp_path / "bob.tar"
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([ADMIN, "--config", str(server.config), "user", "export", "bob", "--out", str(out)],
                             stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.write(master, b"bob's subject access request\n")
        stdout, stderr = p.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 0, stderr
    assert b"Why is bob exported?" in stderr and out.exists()
    (opened,) = [e for e in admin.ok("access", "bob", "--json") if e["event"] == "account_opened"]
    assert opened["detail"] == {"purpose": "export", "reason": "bob's subject access request"}
