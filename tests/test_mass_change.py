"""The mass-change guard against a simulated ransomware attack: a client
overwrites most of an account's files over WebDAV and deletes others over
SFTP within minutes. Everything of the account is kept for the hold
(retention and purges alike), the account holder and the operator get an
e-mail through a real SMTP listener, and an account next to it whose few
changes stay below the bar is thinned by retention as configured."""
import json
import os
import re
import subprocess
import time

import paramiko
import pytest

from admin_harness import ADMIN
from test_admin_notify import smtp  # noqa: F401  (the SMTP listener fixture)
from webdav_harness import CofferServer

pytestmark = pytest.mark.slow


def admin(srv, *args, input: str = ""):
    p = subprocess.run([ADMIN, "--config", str(srv.config), *args], input=input, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, (args, p.stderr)
    return json.loads(p.stdout) if "--json" in args else p.stdout


def versions(srv, user, path) -> int:
    status, _, body = srv.request("PROPFIND", f"/.coffer/versions{path}/", headers={"Depth": "1"}, user=user)
    assert status == 207
    return body.count(b"<D:href>") - 1


def trash_files(srv, user) -> int:
    """How many files the account's trash holds (a walk, Depth 1 at a time)."""
    count, todo = 0, ["/.coffer/trash/"]
    while todo:
        here = todo.pop()
        status, _, body = srv.request("PROPFIND", here, headers={"Depth": "1"}, user=user)
        assert status == 207
        for href in re.findall(rb"<D:href>([^<]+)</D:href>", body):
            href = href.decode()
            if href == here:
                continue
            if href.endswith("/"):
                todo.append(href)
            else:
                count += 1
    return count


def test_a_simulated_attack_over_webdav_and_sftp_is_held_and_reported(tmp_path, smtp):
    ctl, inbox = smtp
    extra = f"""
[retention]
min_age_days = 0
max_quota_share = 0.25
trash_days = 0
guard_min_files = 20
guard_share = 0.3

[mail]
smtp_host = "127.0.0.1"
smtp_port = {ctl.port}
sender = "coffer@coffer.test"
operator = "ops@coffer.test"
"""
    srv = CofferServer(tmp_path / "srv", tls=False, sftp=True, accounts={"alice": "alice-pw-1", "bob": "bob-pw-22"},
                       quotas={"alice": 2_000_000, "bob": 200_000}, extra=extra)
    with srv:
        admin(srv, "user", "set", "alice", "--email", "alice@example.org")
        originals = {f"/d/f{i:02}.doc": os.urandom(20_000) for i in range(40)}
        assert srv.request("MKCOL", "/d/")[0] == 201
        conn = srv.connection()
        for path, body in originals.items():
            assert srv.request("PUT", path, body=body, conn=conn)[0] == 201
        for i in range(10):
            assert srv.request("PUT", f"/b{i}.doc", body=os.urandom(10_000), user="bob")[0] == 201

        # the attack: 30 files overwritten with noise over WebDAV, 10 deleted over SFTP
        for path in list(originals)[:30]:
            assert srv.request("PUT", path, body=os.urandom(20_000), conn=conn)[0] == 204
        conn.close()
        t = paramiko.Transport(("127.0.0.1", srv.sftp_port))
        t.connect(username="alice", password="alice-pw-1")
        sftp = paramiko.SFTPClient.from_transport(t)
        for path in list(originals)[30:]:
            sftp.remove(path)
        t.close()
        # bob changes a few files: below the bar
        for i in range(6):
            assert srv.request("PUT", f"/b{i}.doc", body=os.urandom(10_000), user="bob")[0] == 204

        hold = admin(srv, "user", "hold", "alice", "--json")
        assert hold["held"] is True
        assert admin(srv, "user", "hold", "bob", "--json")["held"] is False
        deadline = time.monotonic() + 30
        while len(inbox.mails) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(r for rcpts, _ in inbox.mails for r in rcpts) == ["alice@example.org", "ops@coffer.test"]
        subject = inbox.mails[0][1]["Subject"]
        assert "alice" in subject and "kept" in subject
        events = admin(srv, "audit", "--user", "alice", "--json")
        assert any(e["event"] == "mass_change_held" for e in events)

        # the periodic job removes nothing of alice's, whatever the retention settings say
        report = admin(srv, "maintenance", "--json")
        assert report["errors"] == []
        assert all(versions(srv, "alice", p) == 2 for p in list(originals)[:30])
        assert trash_files(srv, "alice") == 10
        # nor can anyone purge meanwhile
        status, _, body = srv.request("DELETE", "/.coffer/trash/")
        assert status == 403 and b"hold" in body
        # every original is still there, to restore
        for path, body in list(originals.items())[:30]:
            status, _, listing = srv.request("PROPFIND", f"/.coffer/versions{path}/", headers={"Depth": "1"})
            hrefs = [h for h in listing.split(b"<D:href>")[2:]]
            got = [srv.request("GET", h.split(b"<")[0].decode())[2] for h in hrefs]
            assert body in got
        # bob's old versions were over his quota share: retention thinned them as configured
        assert sum(versions(srv, "bob", f"/b{i}.doc") for i in range(6)) < 12

        # the operator ends the hold: retention resumes
        admin(srv, "user", "hold", "alice", "--release")
        admin(srv, "maintenance")
        assert trash_files(srv, "alice") == 0
