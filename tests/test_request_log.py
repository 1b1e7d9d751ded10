"""An operator sees what the server does: one log line per WebDAV request and
per SFTP operation, with method or operation, status, time and the session
record's id, but never a file name (logs outlive an erasure)."""
from __future__ import annotations

import re

import paramiko
import pytest

from sftp_harness import SftpServer
from webdav_harness import CofferServer

pytestmark = pytest.mark.slow

NAME = "Quarterly-secret-plan"


def log_after_ready(srv) -> str:
    return srv.log.read_text(errors="replace").split("coffer: ready", 1)[-1]


def test_one_line_per_webdav_request(tmp_path):
    with CofferServer(tmp_path) as srv:
        conn = srv.connection()
        assert srv.request("PUT", f"/{NAME}.txt", body=b"x" * 1000, conn=conn)[0] == 201
        assert srv.request("GET", f"/{NAME}.txt", conn=conn)[0] == 200
        conn.close()
        assert srv.request("PROPFIND", "/", headers={"Depth": "1"})[0] == 207
        assert srv.request("GET", f"/{NAME}.txt", user="bob")[0] == 404      # another account: not there
        assert srv.request("GET", "/", user=None, headers=srv.auth("alice", "wrong-password"))[0] == 401
    text = log_after_ready(srv)
    lines = [ln for ln in text.splitlines() if ".access:" in ln]
    assert len(lines) == 5, text
    put, get, propfind, other, refused = lines
    assert re.search(r"PUT 201 in=1000 out=\d+ [\d.]+ms session=\d+$", put), put
    assert re.search(r"GET 200 in=0 out=1000 ", get), get
    assert " PROPFIND 207 " in propfind and " GET 404 " in other
    assert re.search(r"GET 401 in=0 out=\d+ [\d.]+ms session=-$", refused), refused
    assert put.rsplit("session=", 1)[1] == get.rsplit("session=", 1)[1]      # one connection, one record
    assert NAME not in text and "alice" not in "\n".join(lines)


def test_one_line_per_sftp_operation(tmp_path):
    with SftpServer(tmp_path) as srv:
        t = paramiko.Transport(("127.0.0.1", srv.port))
        try:
            t.connect(username="bob", password=srv.accounts["bob"][0])
            sftp = paramiko.SFTPClient.from_transport(t)
            with sftp.open(f"{NAME}.txt", "wb") as f:
                f.write(b"y" * 5000)
            sftp.mkdir(f"{NAME}-folder")
            sftp.rename(f"{NAME}.txt", f"{NAME}-folder/{NAME}.txt")
            assert sftp.listdir(f"{NAME}-folder") == [f"{NAME}.txt"]
            with pytest.raises(IOError):
                sftp.remove(f"{NAME}-missing")
            sftp.close()
        finally:
            t.close()
    text = log_after_ready(srv)
    ops = re.findall(r"sftp\[c\d+ session=\d+\] (\w+) (\w+) [\d.]+ms", text)
    names = [op for op, _ in ops]
    assert names[:4] == ["OPEN", "CLOSE", "MKDIR", "RENAME"], text
    assert ("OPENDIR", "ok") in ops and ("REMOVE", "NotFound") in ops
    assert "READ" not in names and "WRITE" not in names and "STAT" not in names
    assert NAME not in text
