"""Two `coffer serve` nodes, each with two worker processes, on one
PostgreSQL database and one S3 bucket (SeaweedFS) are one server: what is
done through one is seen, refused or required through the other, over
either protocol, at the next request; and a worker killed mid-upload on
one leaves both serving the file's previous version, with the blobs of the
dead upload reclaimed by `coffer-admin gc`."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from admin_harness import ADMIN, FAST, toml_value
from backend import storage_options, stored_blobs
from test_workers import holder_of, wait_for, workers_of
from webdav_harness import ServeProcess, free_port, require_client

ACCOUNTS = {"alice": "alice-pw-1", "bob": "bob-pw-22"}
LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>node test</D:owner></D:lockinfo>')


class Node(ServeProcess):
    def __init__(self, folder: Path, name: str, storage: dict, master_key: Path):
        self.folder = folder / name
        self.folder.mkdir(parents=True)
        self.port, self.sftp_port = free_port(), free_port()
        self.log = self.folder / "server.log"
        sections = {
            "server": {"workers": 2},
            "storage": dict(storage, data_dir=str(self.folder / "var")),
            "security": dict(FAST, master_key_file=str(master_key), credential_cache_seconds=60),
            "webdav": {"host": "127.0.0.1", "port": self.port},
            "sftp": {"host": "127.0.0.1", "port": self.sftp_port},
        }
        self.config = self.folder / "coffer.toml"
        self.config.write_text("\n".join(f"[{n}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in b.items())
                                         for n, b in sections.items()))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def curl(self, *args: str, user: str = "alice", password: str | None = None, source: str = "127.0.0.1",
             headers: bool = False) -> tuple[str, bytes]:
        pw = ACCOUNTS.get(user, "x") if password is None else password
        cmd = ["curl", "-s", "-k", "--max-time", "30", "--interface", source, "-u", f"{user}:{pw}",
               "-w", "\n%{http_code}", *(["-i"] if headers else []), *args]
        out = subprocess.run(cmd, capture_output=True).stdout
        body, _, code = out.rpartition(b"\n")
        return code.decode(), body

    def sftp(self, user: str = "alice", password: str | None = None) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
        t = paramiko.Transport(("127.0.0.1", self.sftp_port))
        t.connect(username=user, password=ACCOUNTS[user] if password is None else password)
        return t, paramiko.SFTPClient.from_transport(t)


def admin(node: Node, *args: str, input: str = "") -> str:
    p = subprocess.run([ADMIN, "--config", str(node.config), *args], input=input, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture
def nodes(tmp_path):
    require_client("curl")
    storage = storage_options(tmp_path / "shared", blobs="s3", database="postgres")
    storage.pop("data_dir")
    master_key = tmp_path / "shared" / "master.key"
    a, b = Node(tmp_path, "a", storage, master_key), Node(tmp_path, "b", storage, master_key)
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(a.config))
    try:
        for name, pw in ACCOUNTS.items():
            st.accounts.create(name, pw)
    finally:
        st.close()
    with a, b:
        assert "ready (2 worker processes)" in a.output and "ready (2 worker processes)" in b.output
        yield a, b


def test_a_file_written_through_one_node_is_read_through_the_other(nodes, tmp_path):
    a, b = nodes
    data = os.urandom(300_000)
    src = tmp_path / "report.bin"
    src.write_bytes(data)
    assert a.curl("-T", str(src), f"{a.url}/report.bin")[0] == "201"           # WebDAV on A
    t, sftp = b.sftp()                                                          # SFTP on B
    with sftp.open("/report.bin", "rb") as f:
        assert f.read() == data
    with sftp.open("/back.bin", "wb") as f:
        f.write(data[::-1])
    t.close()
    code, body = a.curl(f"{a.url}/back.bin")
    assert (code, body) == ("200", data[::-1])


def test_a_lock_taken_on_one_node_holds_on_the_other(nodes, tmp_path):
    a, b = nodes
    body = tmp_path / "v.txt"
    body.write_bytes(b"v1")
    assert a.curl("-T", str(body), f"{a.url}/doc.txt")[0] == "201"
    code, head = a.curl("-X", "LOCK", "-H", "Timeout: Second-600", "-H", "Content-Type: application/xml",
                        "--data-binary", LOCK_BODY.decode(), f"{a.url}/doc.txt", headers=True)
    assert code == "200", head
    token = re.search(rb"Lock-Token: <([^>]+)>", head, re.I).group(1).decode()
    body.write_bytes(b"v2")
    assert b.curl("-T", str(body), f"{b.url}/doc.txt")[0] == "423"             # no token: refused on B
    assert b.curl("-X", "DELETE", f"{b.url}/doc.txt")[0] == "423"
    assert b.curl("-T", str(body), "-H", f"If: (<{token}>)", f"{b.url}/doc.txt")[0] == "204"
    assert b.curl("-X", "UNLOCK", "-H", f"Lock-Token: <{token}>", f"{b.url}/doc.txt")[0] == "204"
    body.write_bytes(b"v3")
    assert a.curl("-T", str(body), f"{a.url}/doc.txt")[0] == "204"             # unlocked on B: free on A
    assert a.curl(f"{a.url}/doc.txt")[1] == b"v3"


def test_grants_revocations_and_password_changes_on_one_node_apply_on_the_other(nodes, tmp_path):
    a, b = nodes
    assert a.curl("-X", "MKCOL", f"{a.url}/Team")[0] == "201"
    note = tmp_path / "n.txt"
    note.write_bytes(b"for bob")
    assert a.curl("-T", str(note), f"{a.url}/Team/note.txt")[0] == "201"
    assert b.curl(f"{b.url}/Shared/alice/Team/note.txt", user="bob")[0] == "404"    # warms B's cached login
    admin(a, "share", "grant", "alice", "/Team", "bob", "write")
    assert b.curl(f"{b.url}/Shared/alice/Team/note.txt", user="bob") == ("200", b"for bob")
    t, sftp = b.sftp("bob")
    assert sftp.open("/Shared/alice/Team/note.txt").read() == b"for bob"
    admin(a, "share", "revoke", "alice", "/Team", "bob")
    assert b.curl(f"{b.url}/Shared/alice/Team/note.txt", user="bob")[0] == "404"
    with pytest.raises(IOError):
        sftp.open("/Shared/alice/Team/note.txt").read()
    # bob's password changed on A: his old one fails on B, and his open SFTP connection there ends
    admin(a, "user", "passwd", "bob", "--password-stdin", input="bob-new-pw-3\nbob-new-pw-3\n")
    assert b.curl(f"{b.url}/", "-X", "PROPFIND", "-H", "Depth: 0", user="bob")[0] == "401"
    assert b.curl(f"{b.url}/", "-X", "PROPFIND", "-H", "Depth: 0", user="bob", password="bob-new-pw-3")[0] == "207"
    deadline = time.monotonic() + 10
    while t.is_active() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not t.is_active()


def test_failed_logins_on_both_nodes_are_counted_as_one(nodes):
    a, b = nodes
    for i in range(10):                                                          # alternating nodes
        node = a if i % 2 else b
        assert node.curl(f"{node.url}/", "-X", "PROPFIND", user=f"nobody{i}", password="guess",
                         source="127.0.0.9")[0] == "401"
    code, body = b.curl(f"{b.url}/", "-X", "PROPFIND", "-H", "Depth: 0", user="bob", source="127.0.0.9")
    assert code == "401" and b"too many failed logins" in body                   # banned on both
    assert a.curl(f"{a.url}/", "-X", "PROPFIND", "-H", "Depth: 0", user="bob", source="127.0.0.10")[0] == "207"


def test_a_worker_killed_mid_upload_leaves_the_old_version_and_gc_reclaims_its_blobs(nodes, tmp_path):
    a, b = nodes
    old = os.urandom(2_500_000)
    src = tmp_path / "big.bin"
    src.write_bytes(old)
    assert a.curl("-T", str(src), f"{a.url}/big.bin")[0] == "201"
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(a.config))
    try:
        before = set(stored_blobs(st.blobs))
        # a new version half sent to A over WebDAV, and another over SFTP
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        dav = ctx.wrap_socket(socket.create_connection(("127.0.0.1", a.port)))
        dav.sendall(b"PUT /big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\nAuthorization: Basic "
                    + base64.b64encode(f"alice:{ACCOUNTS['alice']}".encode()) + b"\r\n\r\n"
                    + os.urandom(4_000_000))
        t, sftp = a.sftp()
        f = sftp.open("/big.bin", "wb")
        f.write(os.urandom(3_000_000))
        f.flush()
        wait_for(lambda: len(set(stored_blobs(st.blobs)) - before) >= 3)     # its chunks are in the bucket
        workers = workers_of(a.proc.pid)
        victims = {holder_of(workers, a.port, dav.getsockname()[1]),
                   holder_of(workers, a.sftp_port, t.sock.getsockname()[1])}
        for pid in victims:
            os.kill(pid, signal.SIGKILL)                                   # mid-upload
        orphans = set(stored_blobs(st.blobs)) - before

        # B serves on, over both protocols, the old version
        assert b.curl(f"{b.url}/big.bin") == ("200", old)
        tb, sftp_b = b.sftp()
        assert sftp_b.open("/big.bin").read() == old
        tb.close()
        dav.close()
        t.close()
        # A's supervisor replaces what died, and A serves the old version too
        wait_for(lambda: len(w := workers_of(a.proc.pid)) == 2 and not victims & set(w))
        assert a.curl(f"{a.url}/big.bin") == ("200", old)

        # what the dead uploads left in the bucket, and only that, goes with gc
        report = json.loads(admin(b, "gc", "--grace", "0", "--json"))
        assert report["orphan_blobs_removed"] >= len(orphans) >= 3, report
        assert set(stored_blobs(st.blobs)) == before
        assert b.curl(f"{b.url}/big.bin") == ("200", old)
        new = os.urandom(1_000_000)
        src.write_bytes(new)
        assert b.curl("-T", str(src), f"{b.url}/big.bin")[0] == "204"
        assert a.curl(f"{a.url}/big.bin") == ("200", new)
    finally:
        st.close()
