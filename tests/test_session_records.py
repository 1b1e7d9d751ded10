"""Session records and audit events keep of a client's address only what
`[accounts] session_addresses` allows, and records close when the process
that wrote them dies.

Real `coffer serve` processes with WebDAV and SFTP on; logins with curl
(credentials on stdin) and paramiko from 127.0.0.1; the database is read
directly, and `coffer-admin sessions` shows what it holds. A whole server
is killed with SIGKILL (process group) and started again: its records are
closed at once, at their last activity, marked cut short, while another
node's on the same database are left alone, alive or dead; the periodic job
ends a dead node's records after ten minutes. (One worker killed alone:
tests/test_workers.py.)
"""
from __future__ import annotations

import contextlib
import json
import subprocess

import paramiko
import pytest
from sqlalchemy import select, update

from admin_harness import ADMIN
from backend import database_values
from providers import config
from providers.lifecycle import run_maintenance
from providers.meta.schema import metadata, session_records
from providers.storage import Storage
from test_workers import wait_for
from webdav_harness import CofferServer, free_port, require_client

pytestmark = pytest.mark.slow

ACCOUNTS = {"alice": "alice-pw-1", "bob": "bob-pw-22"}
LOOPBACK = "127.0.0.1"


class Node(CofferServer):
    """`coffer serve` with WebDAV and SFTP, in a process group of its own.
    `shared`: another node whose database, blobs and keys this one uses."""

    own_group = True

    def __init__(self, folder, *, policy: str = "none", node: str = "", workers: int = 1,
                 shared: "Node | None" = None, more: str = "", accounts: dict | None = None):
        super().__init__(folder, accounts=accounts or ACCOUNTS, tls=False, extra=(
            f'{more}\n[server]\nworkers = {workers}\nnode_name = "{node}"\n'
            f'[accounts]\nsession_addresses = "{policy}"\n'))
        self.sftp_port = free_port()
        text = self.config.read_text().replace("[sftp]\nenabled = false", f"[sftp]\nport = {self.sftp_port}")
        if shared is not None:                 # the other node's [storage], this node's ports and name
            mine, theirs = text.split("[security]", 1), shared.config.read_text().split("[security]", 1)
            text = theirs[0] + "[security]" + mine[1]
        self.config.write_text(text)
        self.shared = shared
        self.prepared = False

    def prepare(self) -> None:
        if not self.prepared and self.shared is None:
            self.create_accounts()
        self.prepared = True

    def curl(self, user: str, password: str, *args: str) -> int:
        """A PROPFIND / (or `args`) with curl; the credentials go on stdin."""
        require_client("curl")
        r = subprocess.run(["curl", "-s", "-K", "-", "-o", "/dev/null", "-w", "%{http_code}", "--interface",
                            LOOPBACK, "-X", "PROPFIND", "-H", "Depth: 0", *args, self.url],
                           input=f'user = "{user}:{password}"\n'.encode(), capture_output=True, timeout=60)
        return int(r.stdout)

    def sftp(self, user: str, password: str) -> paramiko.Transport:
        t = paramiko.Transport((LOOPBACK, self.sftp_port))
        t.connect(username=user, password=password)
        paramiko.SFTPClient.from_transport(t).listdir("/")
        return t

    def admin(self, *argv: str, config=None):
        r = subprocess.run([ADMIN, "--config", str(config or self.config), *argv], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if "--json" in argv else r.stdout

    @contextlib.contextmanager
    def storage(self):
        st = Storage.open(config.load(self.config))
        try:
            yield st
        finally:
            st.close()

    def rows(self, table: str) -> list[dict]:
        with self.storage() as st, st.db.read() as c:
            return [dict(r) for r in c.execute(select(metadata.tables[table])).mappings()]

    def execute(self, statement) -> None:
        with self.storage() as st, st.db.write() as c:
            c.execute(statement)

    def maintain(self) -> dict:
        """The periodic job's record part, run now (as the lease holder would)."""
        with self.storage() as st:
            return run_maintenance(st, retention=False)

    def stored_values(self) -> bytes:
        with self.storage() as st:
            return b"\n".join(raw for _, raw in database_values(st))


# -- what is kept of an address --------------------------------------------------------------------

@pytest.mark.parametrize("policy,kept", [("full", LOOPBACK), ("truncated", "127.0.0.0/24"), ("none", None)])
def test_records_keep_what_the_policy_allows_of_the_address(tmp_path, policy, kept):
    with Node(tmp_path, policy=policy) as srv:
        assert srv.curl("alice", ACCOUNTS["alice"]) == 207
        assert srv.curl("bob", "wrong-password") == 401
        srv.sftp("bob", ACCOUNTS["bob"]).close()
        with pytest.raises(paramiko.AuthenticationException):
            srv.sftp("alice", "wrong-password")
        sessions = wait_for(lambda: len(s := srv.rows("session_records")) == 2 and s)
        failed = [e for e in srv.rows("audit_events") if e["event"] == "login_failed"]
        guard = srv.admin("login", "show", "--address", LOOPBACK, "--json")
    assert guard["address"]["failures"] == 2                     # the guard counts per address all the same
    assert sorted(s["protocol"] for s in sessions) == ["sftp", "webdav"]
    assert len(failed) == 2
    assert {s["client_addr"] for s in sessions} | {e["client_addr"] for e in failed} == {kept}
    stored = srv.stored_values()
    assert (LOOPBACK.encode() in stored) == (policy == "full")  # nowhere else either (the guard keeps hashes)
    listed = srv.admin("sessions", "--json")
    assert [r["address"] for r in listed] == [kept] * 2
    assert [r["user"] for r in listed if r["protocol"] == "sftp"] == ["bob"]
    assert (kept or "-") in srv.admin("sessions", "--user", "alice")
    assert {e["address"] for e in srv.admin("audit", "--event", "login_failed", "--json")} == {kept}


# -- records of dead processes ------------------------------------------------------------------------

def open_records(srv, node: str) -> dict[int, dict]:
    return {r["id"]: r for r in srv.rows("session_records") if r["node"] == node and r["ended_us"] is None}


def test_a_killed_server_closes_its_records_on_start_and_leaves_other_nodes_alone(tmp_path):
    a = Node(tmp_path / "a", node="node-a", workers=2)
    b = Node(tmp_path / "b", node="node-b", shared=a)
    a.start()
    b.start()
    clients = []
    try:
        dav = a.connection()                                 # a WebDAV session, kept alive, on node a
        dav.request("PROPFIND", "/", headers={**a.auth("alice"), "Depth": "0"})
        resp = dav.getresponse()
        resp.read()
        assert resp.status == 207
        clients += [a.sftp("bob", ACCOUNTS["bob"]), b.sftp("alice", ACCOUNTS["alice"])]
        before = wait_for(lambda: len(r := open_records(a, "node-a")) == 2 and r)
        assert {r["protocol"] for r in before.values()} == {"webdav", "sftp"}
        (b_id,) = open_records(a, "node-b")

        a.kill_group()
        assert open_records(b, "node-a") == before           # SIGKILL wrote nothing: still open
        a.start()
        after = {r["id"]: r for r in a.rows("session_records")}
        for sid, old in before.items():                      # closed at once, at the last activity seen
            assert after[sid]["ended_us"] == old["seen_us"] and after[sid]["cut_short"] is True
        assert after[b_id]["ended_us"] is None and not after[b_id]["cut_short"]   # node b's, alive
        shown = {r["id"]: r for r in a.admin("sessions", "--json")}
        assert all(shown[sid]["cut_short"] and shown[sid]["ended"] for sid in before)
        assert not shown[b_id]["cut_short"] and shown[b_id]["ended"] is None
        assert a.admin("sessions").count("(cut short)") == 2

        b.kill_group()                                       # another node's dead records: not a's to close
        a.stop()
        a.start()
        assert open_records(a, "node-b").keys() == {b_id}
        clients.append(a.sftp("bob", ACCOUNTS["bob"]))
        (live_id,) = wait_for(lambda: open_records(a, "node-a"))
        long_ago = open_records(a, "node-b")[b_id]["seen_us"] - 11 * 60 * 1_000_000
        a.execute(update(session_records).where(session_records.c.id == b_id).values(seen_us=long_ago))
        report = a.maintain()                                # as if node b had died eleven minutes ago
        assert report["session_records_ended"] == 1
        after = {r["id"]: r for r in a.rows("session_records")}
        assert after[b_id]["ended_us"] == long_ago and after[b_id]["cut_short"] is True
        assert after[live_id]["ended_us"] is None            # node a's live record goes on
    finally:
        for t in clients:
            t.close()
        a.stop()
        b.stop()
    kept = a.rows("session_records")                         # retention: cut-short records go like any other
    assert all(r["ended_us"] is not None for r in kept) and sum(r["cut_short"] for r in kept) == 3
    short = a.config.with_name("retention.toml")
    short.write_text(a.config.read_text() + "session_record_days = 0\n")
    report = a.admin("maintenance", "--no-retention", "--json", config=short)
    assert report["session_records_purged"] == len(kept)
    assert a.rows("session_records") == []


class _DatabaseDown:
    """Storage whose database is away: every session write fails the way a
    restarted PostgreSQL makes it fail."""
    class sessions:
        @staticmethod
        def _down(*_):
            from providers.errors import StorageUnavailable
            raise StorageUnavailable("the database is not available (terminating connection); try again shortly")
        start = update = end = _down


def test_a_database_away_costs_records_a_warning_line_each_and_no_traceback(caplog):
    """Two clients keep working while their records cannot be written; the
    log says so in one line per write, without a traceback an operator
    would take for a bug."""
    from server.sessions import SessionTracker
    tracker = SessionTracker(_DatabaseDown(), "webdav", idle_seconds=0, update_seconds=0)
    with caplog.at_level("WARNING", logger="server.sessions"):
        first = tracker.start(("127.0.0.1", 1, 1), 1, "127.0.0.1")
        second = tracker.start(("127.0.0.1", 2, 2), 2, "127.0.0.1")
        tracker.add(first, 10, 20)
        tracker.add(second, 30, 40)
        tracker.sweep(everything=True)
    assert first is not second and first.sid is None and second.sid is None
    assert (first.bytes_in, second.bytes_out) == (10, 40)
    lines = [r for r in caplog.records if r.name == "server.sessions"]
    assert [r.getMessage().split(":")[0] for r in lines] == ["could not start a session record"] * 2
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in lines)
