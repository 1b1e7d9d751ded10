"""Exclusion patterns reaching sessions already open, against one real
`coffer serve` with two worker processes (WebDAV and SFTP): alice keeps a
WebDAV keep-alive connection and a paramiko SFTP session open while
`coffer-admin exclude` changes her patterns; her next writes of a matching
file over both keep no old versions, while bob's same-named files keep
theirs; in alice's folder shared with bob her patterns apply to bob's
writes too; `--drop-history` purges what her matching files had kept and her
used space goes down; removing the pattern brings history back for the next
writes. A private account's drop needs its password, and says so."""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import paramiko
import pytest
from admin_harness import Admin
from webdav_harness import CofferServer, free_port

ACCOUNTS = {"alice": ("alice-pw-1", "managed"), "bob": ("bob-pw-22", "managed"),
            "carol": ("carol-pw-333", "private")}
BOX = "Shared/alice/Box"          # alice's folder, shared with bob (write)
SIZE = 60_000                 # distinct random content: each old version holds chunks of its own


class Server(CofferServer):
    """`coffer serve` with WebDAV (plain HTTP on loopback) and SFTP, two
    workers, and no default exclusion patterns (so `*.tmp` starts with history)."""

    def __init__(self, folder: Path):
        super().__init__(folder, tls=False, accounts={n: pw for n, (pw, _) in ACCOUNTS.items()},
                         extra="[server]\nworkers = 2\n\n[retention]\nexclude = []\n")
        self.sftp_port = free_port()
        text = self.config.read_text()
        assert "[sftp]\nenabled = false" in text              # the harness's WebDAV-only config: SFTP on
        self.config.write_text(text.replace("[sftp]\nenabled = false",
                                            f'[sftp]\nhost = "127.0.0.1"\nport = {self.sftp_port}'))

    def create_accounts(self):
        from providers import config
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            for name, (pw, mode) in ACCOUNTS.items():
                st.accounts.create(name, pw, mode=mode)
            alice = st.open_account("alice", ACCOUNTS["alice"][0])
            alice.mkdir("/Box")
            alice.share_grant("/Box", "bob", "write")
        finally:
            st.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("exclusion-live")) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server):
    """The installed coffer-admin on the server's own config."""
    return Admin.of(server.config)


class Dav:
    """One account over one WebDAV keep-alive connection (the cached session)."""

    def __init__(self, server: Server, user: str):
        self.server, self.user = server, user
        self.conn = server.connection()

    def request(self, method, path, body=None, headers=None):
        status, _, data = self.server.request(method, path, body=body, headers=headers, user=self.user,
                                              conn=self.conn)
        return status, data

    def put(self, path) -> None:
        status, data = self.request("PUT", path, os.urandom(SIZE))
        assert status in (200, 201, 204), (path, status, data[:200])

    def versions(self, name) -> list[str]:
        status, data = self.request("PROPFIND", f"/.coffer/versions/{name}/", headers={"Depth": "1"})
        assert status == 207, (name, status, data[:300])
        hrefs = [unquote(h.decode()) for h in re.findall(rb"<(?:\w+:)?href>([^<]*)</", data)]
        base = name.rsplit("/", 1)[-1]
        return [h for h in hrefs[1:] if h.rstrip("/").rsplit("/", 1)[-1].endswith("_" + base)]

    def close(self):
        self.conn.close()


class Sftp:
    """One account over one SFTP session (paramiko)."""

    def __init__(self, server: Server, user: str):
        self.ssh = paramiko.SSHClient()
        self.ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.ssh.connect("127.0.0.1", server.sftp_port, username=user, password=ACCOUNTS[user][0],
                         look_for_keys=False, allow_agent=False, timeout=30)
        self.sftp = self.ssh.open_sftp()

    def put(self, path) -> None:
        with self.sftp.open(path, "wb") as f:
            f.write(os.urandom(SIZE))

    def versions(self, name) -> list[str]:
        return self.sftp.listdir(f"/.coffer/versions/{name}")

    def close(self):
        self.ssh.close()


def used(admin, name) -> int:
    return admin.ok("user", "show", name, "--json")["used_bytes"]


def written(client, name, times) -> list[str]:
    for _ in range(times):
        client.put("/" + name)
    return client.versions(name)


def test_patterns_reach_open_sessions_and_drop_history(server, admin):
    a_dav, a_sftp, b_dav, b_sftp = Dav(server, "alice"), Sftp(server, "alice"), Dav(server, "bob"), Sftp(server, "bob")
    try:
        # history before any pattern; the sessions are open (and cached) from here on
        assert len(written(a_dav, "a.tmp", 2)) == 2
        assert len(written(a_sftp, "b.tmp", 2)) == 2
        assert len(written(a_sftp, "kept.tmp", 3)) == 3           # not written again until --drop-history
        assert len(written(a_dav, "old.log", 3)) == 3
        assert len(written(a_dav, "plain.txt", 2)) == 2
        assert len(written(b_dav, "a.tmp", 2)) == 2
        assert len(written(b_sftp, "b.tmp", 2)) == 2
        assert len(written(b_dav, "old.log", 2)) == 2
        assert len(written(b_dav, BOX + "/s.tmp", 2)) == 2      # bob writes in alice's shared folder
        assert len(written(b_sftp, BOX + "/old.log", 2)) == 2

        text = admin.ok("exclude", "alice", "add", "*.tmp")
        assert "open sessions included" in text and "--drop-history" in text

        # alice's next writes over both open sessions keep no old versions: the ones kept go too
        assert len(written(a_dav, "a.tmp", 1)) == 1
        assert len(written(a_sftp, "b.tmp", 1)) == 1
        assert len(written(a_dav, "new.tmp", 2)) == 1
        assert len(written(a_sftp, "new2.tmp", 2)) == 1
        assert len(written(a_dav, "plain.txt", 1)) == 3          # other names keep history
        assert len(a_sftp.versions("kept.tmp")) == 3              # not written since: untouched so far
        # bob's same names are his own: his patterns did not change
        assert len(written(b_dav, "a.tmp", 1)) == 3
        assert len(written(b_sftp, "b.tmp", 1)) == 3
        # in alice's shared folder her patterns rule, for bob's open session too
        assert len(written(b_dav, BOX + "/s.tmp", 1)) == 1

        # --drop-history: what matching files kept goes at once, the space with it
        before = used(admin, "alice")
        bob_before = used(admin, "bob")
        r = admin.ok("exclude", "alice", "add", "*.log", "--drop-history", "--yes", "--json")
        assert "*.log" in r["patterns"] and "*.tmp" in r["patterns"]
        assert r["dropped"]["files"] == 2 and r["dropped"]["versions"] == 3     # her home and her shared folder
        assert r["dropped"]["freed_bytes"] >= 3 * SIZE
        assert len(a_dav.versions("old.log")) == 1
        assert len(b_sftp.versions(BOX + "/old.log")) == 1
        assert len(b_dav.versions("old.log")) == 2                # bob's own history stays
        r = admin.ok("exclude", "alice", "add", "*.tmp", "--drop-history", "--yes", "--json")   # already listed
        assert r["dropped"]["versions"] == 2 and r["patterns"].count("*.tmp") == 1
        assert len(a_sftp.versions("kept.tmp")) == 1
        after = used(admin, "alice")
        assert before - after >= 5 * SIZE, (before, after)
        assert used(admin, "bob") == bob_before
        events = admin.ok("audit", "--user", "alice", "--event", "history_dropped", "--json")
        assert [e["detail"]["versions"] for e in events] == [3, 2]
        assert all(e["actor"] == "admin" for e in events)

        # the pattern removed: history again from the next writes, on the same open sessions
        text = admin.ok("exclude", "alice", "remove", "*.tmp")
        assert "keep history again" in text
        assert len(written(a_dav, "a.tmp", 2)) == 3
        assert len(written(a_sftp, "b.tmp", 1)) == 2
        assert len(written(a_dav, "old.log", 1)) == 1             # still excluded
    finally:
        for client in (a_dav, a_sftp, b_dav, b_sftp):
            client.close()


def test_drop_history_of_a_private_account_needs_its_password(server, admin):
    s = Sftp(server, "carol")
    try:
        assert len(written(s, "draft.bak", 3)) == 3
        reason = admin.fails("exclude", "carol", "add", "*.bak", "--drop-history", "--yes")
        assert "private" in reason and "--password-stdin" in reason and "without --drop-history" in reason
        assert "*.bak" not in admin.ok("exclude", "carol", "list", "--json")["patterns"]     # nothing changed
        assert "--yes" in admin.fails("exclude", "carol", "add", "*.bak", "--drop-history")
        assert "goes with add" in admin.fails("exclude", "carol", "remove", "*.bak", "--drop-history")
        assert "wrong password" in admin.fails("exclude", "carol", "add", "*.bak", "--drop-history", "--yes",
                                               "--password-stdin", input="wrong-password\n")
        assert "*.bak" not in admin.ok("exclude", "carol", "list", "--json")["patterns"]
        r = admin.ok("exclude", "carol", "add", "*.bak", "--drop-history", "--yes", "--password-stdin", "--json",
                     input=ACCOUNTS["carol"][0] + "\n")
        assert r["dropped"] == {"files": 1, "versions": 2, "freed_bytes": r["dropped"]["freed_bytes"]}
        assert r["dropped"]["freed_bytes"] >= 2 * SIZE
        assert len(s.versions("draft.bak")) == 1
        assert len(written(s, "draft.bak", 1)) == 1                # and the open session sees the pattern
        assert len(written(s, "notes.old", 2)) == 2
        assert "*.old" in admin.ok("exclude", "carol", "add", "*.old", "--json")["patterns"]   # no password needed
        assert len(written(s, "notes.old", 1)) == 1
    finally:
        s.close()
