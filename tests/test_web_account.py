"""My account and Connect, against a real `coffer serve` over HTTPS with
SFTP: changing plan (and a downgrade below what is stored refused),
cancelling and reinstating, the export download, asking for erasure and
withdrawing it, and the Connect page's fingerprints and rclone command
checked with the real tools. A second account watches each change."""
from __future__ import annotations

import html as htmllib
import io
import os
import re
import subprocess
import tarfile
import time

import pytest

from web_client import WebClient, core, signed_in
from webdav_harness import CofferServer, require_client

ALICE, BOB, CAROL, DAVE, ERIN = (("alice", "alice-pw-1"), ("bob", "bob-pw-22"), ("carol", "carol-pw-333"),
                                 ("dave", "dave-pw-4444"), ("erin", "erin-pw-55555"))
PLANS = "[accounts]\nplans = { tiny = 1000, basic = 10737418240, pro = 1099511627776 }\n[server]\nworkers = 1\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("acct"), tls=True, sftp=True, extra=PLANS,
                      accounts=dict([ALICE, BOB, CAROL, DAVE, ERIN])) as s:
        yield s




def text_of(html: bytes, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html.decode(), re.S)
    assert m, element_id
    return htmllib.unescape(m.group(1))


def test_plan_up_down_and_a_downgrade_refused(srv):
    first = os.urandom(10_000)
    srv.request("PUT", "/big.bin", body=first)                     # stored in 4 KiB blocks: 12 KiB
    srv.request("PUT", "/big.bin", body=os.urandom(5000))          # the first one becomes an old version
    srv.request("PUT", "/gone.bin", body=os.urandom(1500))
    srv.request("DELETE", "/gone.bin")                             # to the trash
    web = signed_in(srv, ALICE)
    status, _, html = web.get("/.web/account/")
    assert status == 200 and text_of(html, "plan") == "basic"
    assert [text_of(html, f"space-{k}") for k in ("files", "versions", "trash")] == ["8.2 KB", "12.3 KB", "4.1 KB"]
    assert text_of(html, "space-used") == "24.6 KB of 10.7 GB"
    status, headers, _ = web.post_form("/.web/account/", {"action": "plan", "plan": "pro"})
    assert status == 303 and headers["location"] == "/.web/account/?done=plan"
    assert core(srv, lambda st: (st.accounts.get("alice").plan, st.accounts.get("bob").plan)) == ("pro", "basic")
    status, _, html = web.post_form("/.web/account/", {"action": "plan", "plan": "tiny"})
    assert status == 409
    assert "The tiny plan holds 1.0 KB, but your files take 24.6 KB" in text_of(html, "account-error")
    assert b"Traceback" not in html and core(srv, lambda st: st.accounts.get("alice").plan) == "pro"
    status, _, html = web.post_form("/.web/account/", {"action": "plan", "plan": "gold"})
    assert status == 400 and b"Choose one of the plans listed" in html
    assert web.post_form("/.web/account/", {"action": "plan", "plan": "basic"})[0] == 303
    from providers import lifecycle
    events = core(srv, lambda st: lifecycle.audit_events(st, "alice", event="account_updated"))
    assert [(e["actor"], e["detail"]["fields"]) for e in events][-2:] == [("user", ["plan", "quota_bytes"])] * 2
    # without the form token, or from another site: nothing changes
    assert web.post_form("/.web/account/", {"action": "plan", "plan": "pro", "csrf": "forged"})[0] == 403
    _, _, page = web.get("/.web/account/")
    status, _, _ = web.send("POST", "/.web/account/", f"action=plan&plan=pro&csrf={web.csrf(page)}".encode(),
                            {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
    assert status == 403 and core(srv, lambda st: st.accounts.get("alice").plan) == "basic"
    bob = signed_in(srv, BOB)
    _, _, html = bob.get("/.web/account/")
    assert [text_of(html, f"space-{k}") for k in ("files", "versions", "trash")] == ["0 bytes"] * 3
    srv.request("PUT", "/big.bin", body=first)     # the old content again: its chunks are the current file's
    _, _, html = web.get("/.web/account/")
    assert [text_of(html, f"space-{k}") for k in ("files", "versions", "trash")] == ["12.3 KB", "8.2 KB", "4.1 KB"]


def reinstate(web, name, password):
    """Send the reinstate form, waiting as the login guard asks (failures
    before this one make it wait a few seconds)."""
    for _ in range(30):
        _, _, form = web.get("/.web/login/reinstate")
        status, headers, _ = web.post_form("/.web/login/reinstate", {"name": name, "password": password,
                                                                     "csrf": web.csrf(form)})
        if status != 429:
            return status, headers
        time.sleep(1)
    raise AssertionError("the login guard kept refusing")


def test_cancel_needs_the_password_then_reinstate(srv):
    web = signed_in(srv, CAROL)
    status, _, html = web.post_form("/.web/account/", {"action": "cancel", "password": "wrong-one"})
    assert status == 403 and b"The password is wrong; nothing was changed." in html
    assert core(srv, lambda st: st.accounts.get("carol").status) == "active"
    status, _, html = web.post_form("/.web/account/", {"action": "cancel", "password": CAROL[1]})
    assert status == 200 and b"Your account is cancelled" in html
    carol = core(srv, lambda st: st.accounts.get("carol"))
    assert carol.status == "cancelled" and text_of(html, "erase-date").startswith(
        time.strftime("%Y-%m-%d", time.gmtime(carol.erase_after_us / 1e6)))
    assert web.get("/.web/files/")[0] == 303                       # signed out
    assert srv.request("PROPFIND", "/", headers={"Depth": "0"}, user="bob")[0] == 207
    assert core(srv, lambda st: st.accounts.get("bob").status) == "active"
    status, _, _ = srv.request("PROPFIND", "/", headers={**srv.auth("carol", CAROL[1]), "Depth": "0"}, user=None)
    assert status == 401                                           # WebDAV refuses it, as before
    assert not sftp_lists(srv, CAROL) and sftp_lists(srv, BOB)     # SFTP too; bob goes on
    assert WebClient(srv).sign_in(*CAROL)[0] == 401                # and so does the sign-in
    again = WebClient(srv)
    status, _ = reinstate(again, "carol", "wrong-one")
    assert status == 401 and core(srv, lambda st: st.accounts.get("carol").status) == "cancelled"
    status, headers = reinstate(again, *CAROL)
    assert status == 303 and headers["location"] == "/.web/account/?done=reinstated"
    status, _, html = again.get(headers["location"])
    assert status == 200 and b"Your account is active again" in html
    carol = core(srv, lambda st: st.accounts.get("carol"))
    assert carol.status == "active" and carol.erase_after_us is None
    status, _, _ = srv.request("PROPFIND", "/", headers={**srv.auth("carol", CAROL[1]), "Depth": "0"}, user=None)
    assert status == 207 and sftp_lists(srv, CAROL)


def sftp_lists(srv, who) -> bool:
    """Whether `who` logs in over SFTP (paramiko) and lists the top folder."""
    import paramiko
    transport = paramiko.Transport(("127.0.0.1", srv.sftp_port))
    try:
        transport.connect()
        transport.auth_password(*who)
        paramiko.SFTPClient.from_transport(transport).listdir("/")
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        transport.close()


def _tar(body: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


def test_export_streams_the_accounts_own_data(srv):
    first, second, binned, bobs = os.urandom(200_000), b"second version", b"in the trash", b"bob's secret"
    srv.request("MKCOL", "/Exp")
    srv.request("PUT", "/Exp/report.txt", body=first)
    srv.request("PUT", "/Exp/report.txt", body=second)
    srv.request("PUT", "/Exp/old.txt", body=binned)
    srv.request("DELETE", "/Exp/old.txt")
    srv.request("PUT", "/bob-only.txt", body=bobs, user="bob")
    web = signed_in(srv, ALICE)
    status, headers, body = web.get("/.web/account/export")
    assert status == 200 and headers["content-type"] == "application/x-tar"
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers   # streamed
    assert "attachment" in headers["content-disposition"]
    files = _tar(body)
    assert files["files/Exp/report.txt"] == second and "README.txt" in files and "account.json" in files
    assert [v for k, v in files.items() if k.startswith("versions/Exp/report.txt/")] == [first]
    assert [v for k, v in files.items() if k.startswith("trash/") and k.endswith("/Exp/old.txt")] == [binned]
    assert not any("bob-only" in k for k in files) and bobs not in body
    from providers import lifecycle
    events = core(srv, lambda st: lifecycle.audit_events(st, "alice", event="account_exported"))
    assert events[-1]["actor"] == "user"
    bob = signed_in(srv, BOB)
    theirs = _tar(bob.get("/.web/account/export")[2])
    assert theirs["files/bob-only.txt"] == bobs and not any("Exp" in k for k in theirs)


def test_export_of_a_private_account(tmp_path):
    srv = CofferServer(tmp_path / "srv", tls=False, modes={"pat": "private"}, accounts={"pat": "pat-pw-1",
                       "bob": BOB[1]}, extra="[server]\nworkers = 1\n")
    with srv:
        srv.request("PUT", "/diary.txt", body=b"only pat reads this", user="pat")
        web = signed_in(srv, ("pat", "pat-pw-1"))
        status, _, body = web.get("/.web/account/export")
        assert status == 200 and _tar(body)["files/diary.txt"] == b"only pat reads this"
        bob = signed_in(srv, BOB)
        assert b"only pat reads this" not in bob.get("/.web/account/export")[2]


def test_erasure_request_then_withdraw(srv):
    web = signed_in(srv, DAVE)
    for action in ("cancel", "erase", "withdraw"):          # without the form token nothing happens
        assert web.post_form("/.web/account/", {"action": action, "password": DAVE[1], "csrf": "x" * 64})[0] == 403
    assert WebClient(srv).post_form("/.web/account/", {"action": "erase", "password": DAVE[1]}, csrf=False)[0] == 403
    dave = core(srv, lambda st: st.accounts.get("dave"))
    assert dave.status == "active" and dave.erase_after_us is None
    status, _, html = web.post_form("/.web/account/", {"action": "erase", "password": "wrong-one"})
    assert status == 403 and core(srv, lambda st: st.accounts.get("dave").erase_after_us) is None
    status, headers, _ = web.post_form("/.web/account/", {"action": "erase", "password": DAVE[1]})
    assert status == 303
    status, _, html = web.get(headers["location"])
    dave = core(srv, lambda st: st.accounts.get("dave"))
    assert dave.status == "active" and dave.erase_after_us is not None        # works until then
    due = time.strftime("%Y-%m-%d", time.gmtime(dave.erase_after_us / 1e6))
    assert due in text_of(html, "erasure-state") and b"withdraw-erasure" in html
    assert core(srv, lambda st: st.accounts.get("bob").erase_after_us) is None
    status, headers, _ = web.post_form("/.web/account/", {"action": "withdraw"})
    assert status == 303 and headers["location"] == "/.web/account/?done=withdrawn"
    dave = core(srv, lambda st: st.accounts.get("dave"))
    assert dave.erase_after_us is None and "erasure_request" not in dave.settings
    assert web.post_form("/.web/account/", {"action": "withdraw"})[0] == 409     # nothing left to withdraw


def test_an_erasure_request_is_carried_out_after_the_grace(srv):
    web = signed_in(srv, ERIN)
    assert web.post_form("/.web/account/", {"action": "erase", "password": ERIN[1]})[0] == 303
    due = core(srv, lambda st: st.accounts.get("erin").erase_after_us)
    from providers import lifecycle
    report = core(srv, lambda st: lifecycle.run_maintenance(st, now_us=due - 1, retention=False))
    assert report["accounts_erased"] == 0
    report = core(srv, lambda st: lifecycle.run_maintenance(st, now_us=due + 1, retention=False))
    assert report["accounts_erased"] == 1
    names = core(srv, lambda st: {u.name for u in st.accounts.list()})
    assert "erin" not in names and {"alice", "bob", "carol", "dave"} <= names
    receipt = core(srv, lambda st: lifecycle.receipts(st, report["receipts"][0]))[0]
    assert receipt["reason"] == "holder's request"


@pytest.mark.usefixtures("gpg_home")
def test_connect_page_fingerprints_and_rclone(srv, tmp_path):
    from providers import config
    from server import tls
    cfg = config.load(srv.config)
    web = signed_in(srv, ALICE)
    status, _, html = web.get("/.web/connect/")
    assert status == 200 and ALICE[1].encode() not in html
    shown = set(re.findall(r"SHA256:[A-Za-z0-9+/]+", html.decode()))
    ssh_dir = cfg.data_dir / "ssh"
    for pub in sorted(ssh_dir.glob("*.pub")):
        out = subprocess.run([require_client("ssh-keygen"), "-lf", str(pub)], capture_output=True, text=True,
                             check=True).stdout
        assert out.split()[1] in shown, out
    assert len(shown) == 3
    cert = tls.served_cert_file(cfg)
    out = subprocess.run([require_client("openssl"), "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
                         capture_output=True, text=True, check=True).stdout
    assert text_of(html, "tls-fingerprint") == out.strip().split("=", 1)[1]
    assert "ca.pem" in text_of(html, "local-ca")          # the local CA: say so, and how to trust it
    assert text_of(html, "dav-url") == srv.url
    assert text_of(html, "sftp-port") == str(srv.sftp_port) and "alice" in text_of(html, "restic-cmd")
    assert text_of(html, "windows-cmd") == f"net use Z: \\\\127.0.0.1@SSL@{srv.port}\\DavWWWRoot /user:alice *"
    rclone = text_of(html, "rclone-cmd")
    assert "alice" in rclone and ALICE[1] not in rclone
    srv.request("MKCOL", "/Connected")
    env = {**os.environ, "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
           "RCLONE_CA_CERT": str(tls.local_ca_file(cfg)), "HOME": str(tmp_path)}
    require_client("rclone")
    run = subprocess.run(["bash", "-ec", rclone], input=ALICE[1] + "\n", capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Connected" in run.stdout
    duplicity = text_of(html, "duplicity-cmd")
    assert duplicity.startswith("duplicity ~/Documents webdavs://alice@")
    require_client("duplicity")
    (tmp_path / "Documents").mkdir()
    (tmp_path / "Documents" / "note.txt").write_text("backed up with the command the page shows\n")
    run = subprocess.run(["bash", "-ec", duplicity + f" --ssl-cacert-file {tls.local_ca_file(cfg)} --archive-dir "
                          f"{tmp_path / 'archive'} --num-retries 1"], capture_output=True, text=True, timeout=300,
                         env={**env, "FTP_PASSWORD": ALICE[1], "PASSPHRASE": "duplicity-test-passphrase"})
    assert run.returncode == 0, run.stdout + run.stderr
    status, _, listing = srv.request("PROPFIND", "/duplicity/", headers={"Depth": "1"})
    assert status == 207 and b"duplicity-full" in listing
    bob = signed_in(srv, BOB)
    assert "bob" in text_of(bob.get("/.web/connect/")[2], "rclone-cmd")


def test_connect_address_from_the_config_or_the_request(srv):
    """`[mail] public_url` names the server when set; else the request's
    Host, unless it is no host name (then the address listened on)."""
    import dataclasses
    from providers import config
    from server.web_connect import base_url
    cfg = config.load(srv.config)
    assert base_url(cfg, {"HTTP_HOST": "files.example.org:8443"}) == "https://files.example.org:8443"
    assert base_url(cfg, {"HTTP_HOST": "evil<script>"}) == f"https://127.0.0.1:{srv.port}"
    named = dataclasses.replace(cfg, mail=dataclasses.replace(cfg.mail, public_url="https://dav.example.net/"))
    assert base_url(named, {"HTTP_HOST": "127.0.0.1:1"}) == "https://dav.example.net"
