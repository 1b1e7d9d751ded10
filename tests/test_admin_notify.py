"""`coffer-admin notify breach|news` through a real SMTP server on loopback."""
from __future__ import annotations

import email
import time

import pytest
from aiosmtpd.controller import Controller

from admin_harness import Admin
from webdav_harness import free_port


class Inbox:
    def __init__(self):
        self.mails = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def to(self) -> list[str]:
        return sorted(r for rcpts, _ in self.mails for r in rcpts)


@pytest.fixture
def smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


@pytest.fixture
def admin(tmp_path, smtp):
    ctl, _ = smtp
    a = Admin(tmp_path, mail={"smtp_host": "127.0.0.1", "smtp_port": ctl.port, "sender": "security@coffer.test"})
    for name, mail in (("alice", "alice@example.org"), ("bob", "bob@example.org"), ("carol", ""),
                       ("dave", "dave@example.org"), ("erin", "erin@example.org"), ("frank", "frank@refused.example")):
        a.add_user(name, f"{name}-password", *(["--email", mail] if mail else []))
    st = a.storage()
    try:
        for name in ("alice", "carol", "frank"):            # active during the incident
            sid = st.sessions.start(st.accounts.get(name).id, "webdav", "192.0.2.1")
            st.sessions.end(sid)
        old = st.sessions.start(st.accounts.get("bob").id, "sftp", "192.0.2.2")   # long before it
        with st.db.write() as c:
            from providers.meta.schema import session_records
            c.execute(session_records.update().where(session_records.c.id == old)
                      .values(started_us=int((time.time() - 10 * 86400) * 1e6),
                              ended_us=int((time.time() - 9 * 86400) * 1e6)))
    finally:
        st.close()
    for name in ("dave", "erin"):
        a.ok("user", "set", name, "--consent", "yes")
    a.ok("user", "disable", "erin")
    (tmp_path / "msg.txt").write_text("We found that ... Please change your password.\n")
    return a


def test_breach_notifies_accounts_active_in_the_window(admin, smtp, tmp_path):
    _, inbox = smtp
    p = admin("notify", "breach", "--since", "1h", "--message-file", str(tmp_path / "msg.txt"), "--json")
    assert p.returncode == 3, p.stderr
    import json
    result = json.loads(p.stdout)
    assert result["notified"] == ["alice"]
    failed = {f["name"]: f["reason"] for f in result["failed"]}
    assert set(failed) == {"carol", "frank"}
    assert "no email address" in failed["carol"] and "550" in failed["frank"]
    assert inbox.to() == ["alice@example.org"]
    (_, msg), = inbox.mails
    assert msg["From"] == "security@coffer.test" and msg["To"] == "alice@example.org"
    assert msg["Subject"] == "Security notice about your Coffer account"
    assert "change your password" in msg.get_payload()
    events = admin.ok("audit", "--event", "breach_notified", "--json")
    assert [e["user"] for e in events] == ["alice"]
    # a window in the past reaches whoever was active then, and only them
    inbox.mails.clear()
    out = admin.ok("notify", "breach", "--since", "11d", "--until", "8d", "--message-file", str(tmp_path / "msg.txt"))
    assert "to 1 account(s): bob" in out and inbox.to() == ["bob@example.org"]


def test_breach_to_named_accounts_and_failures(admin, smtp, tmp_path):
    _, inbox = smtp
    msg = str(tmp_path / "msg.txt")
    r = admin.ok("notify", "breach", "--user", "bob", "--user", "erin", "--message-file", msg,
                 "--subject", "Incident 42", "--json")
    assert r == {"notified": ["bob", "erin"], "failed": []}          # security notices need no consent
    assert inbox.to() == ["bob@example.org", "erin@example.org"]
    assert all(m["Subject"] == "Incident 42" for _, m in inbox.mails)
    inbox.mails.clear()
    assert "no account named 'ghost'" in admin.fails("notify", "breach", "--user", "bob", "--user", "ghost",
                                                      "--message-file", msg)
    assert inbox.mails == []
    assert "--since" in admin.fails("notify", "breach", "--message-file", msg)
    assert "cannot read --message-file" in admin.fails("notify", "breach", "--since", "1d", "--message-file",
                                                       str(tmp_path / "missing.txt"))
    assert "before --since" in admin.fails("notify", "breach", "--since", "1d", "--until", "2d", "--message-file", msg)


def test_news_only_to_active_accounts_that_opted_in(admin, smtp, tmp_path):
    _, inbox = smtp
    msg = str(tmp_path / "msg.txt")
    assert admin.ok("notify", "news", "--message-file", msg, "--json") == {"notified": ["dave"], "failed": []}
    assert inbox.to() == ["dave@example.org"] and inbox.mails[0][1]["Subject"] == "News from Coffer"
    inbox.mails.clear()
    admin.ok("user", "set", "dave", "--consent", "no")
    assert admin.ok("notify", "news", "--message-file", msg, "--json") == {"notified": [], "failed": []}
    assert inbox.mails == []


def test_no_mail_server(tmp_path):
    (tmp_path / "msg.txt").write_text("hello")
    a = Admin(tmp_path)
    a.add_user("alice", "alice-password", "--email", "alice@example.org")
    assert "no mail server configured" in a.fails("notify", "news", "--message-file", str(tmp_path / "msg.txt"))
    down = Admin(tmp_path / "down", mail={"smtp_host": "127.0.0.1", "smtp_port": free_port()})
    down.add_user("alice", "alice-password", "--email", "alice@example.org")
    p = down("notify", "breach", "--user", "alice", "--message-file", str(tmp_path / "msg.txt"))
    assert p.returncode == 3 and "NOT notified: alice: the mail server could not be reached" in p.stdout
