"""`coffer-admin notify breach|news` through a real SMTP server on loopback."""
from __future__ import annotations

import email
import json
import re
import subprocess
import time

import pytest
from aiosmtpd.controller import Controller

from admin_harness import Admin
from test_session_records import ACCOUNTS, Node
from webdav_harness import CofferServer, free_port, require_client


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


def days_ago(days: float) -> int:
    return int((time.time() - days * 86400) * 1e6)


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
    a = Admin(tmp_path, mail={"smtp_host": "127.0.0.1", "smtp_port": ctl.port, "sender": "security@coffer.test",
                              "public_url": "https://files.coffer.test"})
    for name, mail in (("alice", "alice@example.org"), ("bob", "bob@example.org"), ("carol", ""),
                       ("dave", "dave@example.org"), ("erin", "erin@example.org"), ("frank", "frank@refused.example")):
        a.add_user(name, f"{name}-password", *(["--email", mail] if mail else []))
    st = a.storage()
    try:
        for name in ("alice", "carol", "frank"):            # active during the incident
            sid = st.sessions.start(st.accounts.get(name).id, "webdav", "192.0.2.1")
            st.sessions.end(sid)
        old = st.sessions.start(st.accounts.get("bob").id, "sftp", "192.0.2.2")   # long before it
        with st.db.write() as c:                          # as if it had run then: record and last activity
            from providers.meta.schema import session_records, users
            c.execute(session_records.update().where(session_records.c.id == old)
                      .values(started_us=days_ago(10), ended_us=days_ago(9)))
            c.execute(users.update().where(users.c.name == "bob").values(last_seen_us=days_ago(9)))
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


def test_breach_to_every_account_whatever_its_status(admin, smtp, tmp_path):
    _, inbox = smtp
    msg = str(tmp_path / "msg.txt")
    admin.ok("user", "cancel", "dave")                       # within its grace period: still reached
    p = admin("notify", "breach", "--all", "--message-file", msg, "--json")
    assert p.returncode == 3, p.stderr
    result = json.loads(p.stdout)
    assert result["notified"] == ["alice", "bob", "dave", "erin"]              # erin is disabled
    failed = {f["name"]: f["reason"] for f in result["failed"]}
    assert failed.keys() == {"carol", "frank"}
    assert "no email address" in failed["carol"] and "550" in failed["frank"] and "no such mailbox" in failed["frank"]
    assert inbox.to() == ["alice@example.org", "bob@example.org", "dave@example.org", "erin@example.org"]
    text = admin("notify", "breach", "--all", "--message-file", msg).stdout
    assert "NOT notified: carol: no email address on file" in text and "NOT notified: frank:" in text
    for wrong in (["--all", "--since", "1d"], ["--all", "--user", "bob"], ["--since", "1d", "--user", "bob"]):
        assert "one of --since" in admin.fails("notify", "breach", *wrong, "--message-file", msg)


def test_breach_window_reaches_accounts_whose_session_records_are_gone(tmp_path, smtp):
    """A real server, a password login over WebDAV (curl) and an SSH key
    login over SFTP (OpenSSH), then record retention deletes the session
    records: both accounts are still reached by a window that covers their
    activity, the one never seen is not, and no one by a window that ended
    before the accounts existed."""
    ctl, inbox = smtp
    srv = Node(tmp_path / "srv", accounts={**ACCOUNTS, "carol": "carol-pw-333"},
               more=f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {ctl.port}\nsender = "security@coffer.test"')
    key = tmp_path / "bob_ed25519"
    subprocess.run([require_client("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with srv:
        srv.admin("user", "key", "add", "bob", str(key.with_suffix(".pub")))
        assert srv.curl("alice", ACCOUNTS["alice"]) == 207
        r = subprocess.run([require_client("sftp"), "-b", "-", "-P", str(srv.sftp_port), "-i", str(key),
                            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", "bob@127.0.0.1"], input="ls\n",
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    for name in ("alice", "bob", "carol"):
        srv.admin("user", "set", name, "--email", f"{name}@example.org")
    assert srv.admin("user", "show", "bob", "--json")["last_login"] == "-"     # a key login is no password login
    short = srv.config.with_name("retention.toml")
    short.write_text(srv.config.read_text() + "session_record_days = 0\n")
    assert srv.admin("maintenance", "--no-retention", "--json", config=short)["session_records_purged"] == 2
    assert srv.admin("sessions", "--json") == []
    msg = tmp_path / "msg.txt"
    msg.write_text("Please change your password.\n")
    assert srv.admin("notify", "breach", "--since", "1h", "--message-file", str(msg), "--json") == {
        "notified": ["alice", "bob"], "failed": []}                       # carol never logged in
    assert inbox.to() == ["alice@example.org", "bob@example.org"]
    assert srv.admin("notify", "breach", "--since", "3d", "--until", "2d", "--message-file", str(msg),
                     "--json") == {"notified": [], "failed": []}          # created after that window


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
    p = down("notify", "news", "--message-file", str(tmp_path / "msg.txt"))
    assert p.returncode == 1 and "[mail] public_url" in p.stderr          # no link, no news


# -- news mail a person can trust: consent stated, one-click unsubscribe ----------------------------

def curl(*args) -> tuple[str, str]:
    """(HTTP status, body) of a curl request without credentials."""
    p = subprocess.run([require_client("curl"), "-ksS", "-w", "\n%{http_code}", *args], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    body, _, status = p.stdout.rpartition("\n")
    return status, body


def consent_of(admin, name: str) -> tuple[bool, str]:
    shown = admin.ok("user", "show", name)
    line = [ln for ln in shown.splitlines() if ln.startswith("news email:")]
    return admin.ok("user", "show", name, "--json")["email_consent"], line[0]


def test_news_carries_a_one_click_unsubscribe_link_that_works(tmp_path, smtp):
    ctl, inbox = smtp
    with CofferServer(tmp_path / "srv", accounts={}) as srv:
        with open(srv.config, "a") as f:
            f.write(f'\n[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {ctl.port}\nsender = "news@coffer.test"\n'
                    f'public_url = "https://127.0.0.1:{srv.port}/"\n')
        admin = Admin.of(srv.config)
        for name, answer in (("dave", "yes"), ("erin", "yes"), ("frank", "no")):
            admin.add_user(name, f"{name}-password", "--email", f"{name}@example.org", "--consent", answer)
        signup, line = consent_of(admin, "dave")
        assert signup is True and re.fullmatch(r"news email: yes since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
                                               r"\(when the account was created\)", line), line
        assert consent_of(admin, "frank")[1].startswith("news email: no since ")      # asked, and said no
        msg = tmp_path / "msg.txt"
        msg.write_text("Coffer now keeps 60 days of trash.\n")

        assert admin.ok("notify", "news", "--message-file", str(msg), "--json") == {
            "notified": ["dave", "erin"], "failed": []}
        mails = {rcpts[0]: m for rcpts, m in inbox.mails}
        links = {}
        for name in ("dave", "erin"):
            m = mails[f"{name}@example.org"]
            header = m["List-Unsubscribe"]
            link = rf"https://127\.0\.0\.1:{srv.port}/\.well-known/coffer/unsubscribe\?u=\d+&t=[\w-]{{43}}"
            assert re.fullmatch(f"<{link}>", header), header            # one line, not encoded words
            assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            links[name] = header[1:-1]
            body = m.get_payload(decode=True).decode()
            assert body.startswith("Coffer now keeps 60 days of trash.")
            assert "You receive this because you agreed to news by email on " in body
            assert "(when the account was created)" in body and links[name] in body
        assert links["dave"] != links["erin"]

        # a GET (a mail scanner, or the person) shows a form and changes nothing
        status, page = curl(links["dave"])
        assert status == "200" and '<form method="post"' in page and "<script" not in page
        assert consent_of(admin, "dave")[0] is True

        # forged and crossed links are refused and change nothing
        dave_id, dave_token = re.search(r"u=(\d+)&t=(.+)$", links["dave"]).groups()
        erin_id, erin_token = re.search(r"u=(\d+)&t=(.+)$", links["erin"]).groups()
        base = links["dave"].split("?")[0]
        forged = dave_token[:-2] + ("AA" if not dave_token.endswith("AA") else "BB")
        for query in (f"u={dave_id}&t={forged}", f"u={dave_id}&t={erin_token}", f"u={erin_id}&t={dave_token}",
                      f"u={dave_id}", f"u=0&t={dave_token}", f"u=abc&t={dave_token}"):
            for method in ("GET", "POST"):
                status, text = curl("-X", method, "-d", "List-Unsubscribe=One-Click", f"{base}?{query}")
                assert status == "403" and "not valid" in text, (query, method, status, text)
        assert consent_of(admin, "dave")[0] is True and consent_of(admin, "erin")[0] is True

        # the one-click POST a mail program sends withdraws consent, with its time and an audit event
        status, page = curl("-X", "POST", "-d", "List-Unsubscribe=One-Click", links["dave"])
        assert status == "200" and "no more news" in page
        now, line = consent_of(admin, "dave")
        assert now is False and re.fullmatch(r"news email: no since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
                                             r"\(with the unsubscribe link of a news email\)", line), line
        assert consent_of(admin, "erin")[0] is True
        events = admin.ok("audit", "--event", "news_consent_withdrawn", "--json")
        assert [(e["user"], e["actor"], e["address"]) for e in events] == [("dave", "user", "127.0.0.1")]
        status, page = curl("-X", "POST", links["dave"])                       # again: nothing more happens
        assert status == "200" and "already off" in page
        assert len(admin.ok("audit", "--event", "news_consent_withdrawn", "--json")) == 1

        inbox.mails.clear()
        assert admin.ok("notify", "news", "--message-file", str(msg), "--json")["notified"] == ["erin"]
        assert inbox.to() == ["erin@example.org"]

        # consent given again by the administrator is said so in the next mail
        admin.ok("user", "set", "dave", "--consent", "yes")
        inbox.mails.clear()
        admin.ok("notify", "news", "--message-file", str(msg))
        body = {r[0]: m for r, m in inbox.mails}["dave@example.org"].get_payload(decode=True).decode()
        assert "(recorded by an administrator)" in body
