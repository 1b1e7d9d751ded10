"""The Security page over HTTP, against a real `coffer serve` with SFTP:
two-step sign-in (enrol, the code after the password, a wrong, a replayed
and a spent code refused and throttled, recovery codes, the administrator's
reset), the password alone refused over WebDAV (curl) and SFTP (paramiko)
once TOTP is on while an app password works, app passwords and sessions
made and ended in the page, and a second account that can neither end nor
revoke what is not its own."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pyotp
import pytest

from web_client import WebClient, core, signed_in
from webdav_harness import CofferServer, require_client

ALICE, BOB, CAROL, DAVE, ERIN = (("alice", "alice-pw-1"), ("bob", "bob-pw-22"), ("carol", "carol-pw-333"),
                                 ("dave", "dave-pw-4444"), ("erin", "erin-pw-55555"))
FRANK = ("frank", "frank-pw-666666")
PAGE = "/.web/security/"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("sec"), tls=False, sftp=True, modes={"carol": "private"},
                      accounts=dict([ALICE, BOB, CAROL, DAVE, ERIN, FRANK]), extra="[server]\nworkers = 1\n") as s:
        yield s



def forgive(srv, name):
    """Clear the login guard's records of an account and of this address
    (a test's own failures must not leak into the next)."""
    core(srv, lambda st: (st.throttle.clear(name), st.throttle.clear(None, "127.0.0.1")))



def post(web, fields, csrf=None):
    if csrf is None:
        _, _, html = web.get(PAGE)
        csrf = web.csrf(html)
    return web.post_form(PAGE, dict(fields, csrf=csrf))


def text_of(html: bytes, element_id: str) -> str:
    m = re.search(rb'id="' + element_id.encode() + rb'"[^>]*>([^<]*)<', html)
    assert m, html[:3000]
    return m.group(1).decode().strip()


def enrol(srv, who) -> tuple[pyotp.TOTP, list[str], WebClient]:
    """Turn TOTP on in the page: (its generator, the recovery codes shown,
    the browser that did it, still signed in)."""
    web = signed_in(srv, who)
    status, headers, _ = post(web, {"action": "totp-begin"})
    assert status == 303
    status, _, html = web.get(PAGE)
    assert status == 200 and b'src="data:image/svg+xml' in html
    totp = pyotp.TOTP(text_of(html, "totp-secret"))
    status, _, html = post(web, {"action": "totp-confirm", "code": totp.now(), "password": "not-it"})
    assert status == 403 and b"wrong" in html
    status, _, html = post(web, {"action": "totp-confirm", "code": "000000" if totp.now() != "000000" else "111111",
                                 "password": who[1]})
    assert status == 400 and b"does not match" in html
    status, _, html = post(web, {"action": "totp-confirm", "code": totp.now(), "password": who[1]})
    assert status == 200, html[:2000]
    codes = [c.decode() for c in re.findall(rb"<li><code>([a-z0-9-]+)</code></li>", html)]
    assert len(codes) == 10 and len(set(codes)) == 10
    status, _, html = web.get(PAGE)            # carries on in its renewed session
    assert status == 200 and b"On since" in html and b"10 recovery code(s) left" in html
    return totp, codes, web


def code_step(srv, who, code) -> tuple[int, WebClient, bytes]:
    """Sign in with the password, then send `code` on the second form
    (or the sign-in's refusal)."""
    web = WebClient(srv)
    status, headers = web.sign_in(*who)
    if status != 200:                                                  # the guard refused the password step
        return status, web, b""
    assert "coffer_web" not in web.cookies                             # no session before the code
    status, headers, html = code_step_with(web, code, who[0])
    return status, web, html


def later(totp) -> str:
    """The next time step's code (the one just used cannot be used again)."""
    return totp.at(time.time() + 30)


def test_sign_in_asks_for_the_code(srv):
    totp, codes, _ = enrol(srv, ALICE)
    status, web, _ = code_step(srv, ALICE, "12345x")
    assert status == 401
    used = later(totp)
    status, web, _ = code_step(srv, ALICE, used)
    assert status == 303 and web.get(PAGE)[0] == 200
    status, _, html = code_step(srv, ALICE, used)                      # replayed
    assert status == 401 and b"already used" in html
    status, web, _ = code_step(srv, ALICE, codes[0].upper().replace("-", " "))   # typed loosely: still fine
    assert status == 303 and web.get(PAGE)[0] == 200
    assert b"9 recovery code(s) left" in web.get(PAGE)[2]
    status, _, _ = code_step(srv, ALICE, codes[0])                     # spent
    assert status == 401
    forgive(srv, "alice")
    # wrong codes count like wrong passwords: three free guesses, then the guard makes them wait
    answers = [code_step(srv, ALICE, "000001" if totp.now() != "000001" else "000002")[0] for _ in range(4)]
    assert answers[:3] == [401, 401, 401] and answers[3] == 429, answers
    forgive(srv, "alice")
    # the bob next door is not asked for any code
    assert signed_in(srv, BOB).get("/.web/files/")[0] == 200


def test_login_audit_names_the_second_factor(srv):
    from sqlalchemy import select
    from providers.meta.schema import audit_events, users

    def reasons(st):
        with st.db.read() as c:
            uid = c.execute(select(users.c.id).where(users.c.name == "alice")).scalar_one()
            rows = c.execute(select(audit_events.c.event, audit_events.c.detail)
                             .where(audit_events.c.user_id == uid)).all()
        return [(e, (d or {}).get("reason")) for e, d in rows]
    seen = core(srv, reasons)
    assert ("second_factor_enabled", None) in seen and ("login_failed", "second_factor") in seen
    assert ("recovery_code_used", None) in seen


def propfind(srv, user, password) -> int:
    """PROPFIND / with curl (the credentials on stdin, never argv)."""
    cmd = [require_client("curl"), "-s", "-K", "-", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PROPFIND",
           "-H", "Depth: 0", srv.url]
    r = subprocess.run(cmd, input=f'user = "{user}:{password}"\n'.encode(), capture_output=True, timeout=60)
    return int(r.stdout)


def sftp_login(srv, user, password) -> bool:
    sock = socket.create_connection(("127.0.0.1", srv.sftp_port), timeout=20)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=20)
        try:
            t.auth_password(user, password)
        except paramiko.AuthenticationException:
            return False
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.listdir("/")
        return True
    finally:
        t.close()


def test_protocols_refuse_the_password_alone(srv):
    assert propfind(srv, *DAVE) == 207 and sftp_login(srv, *DAVE)
    totp, _, web = enrol(srv, DAVE)
    status, _, html = post(web, {"action": "app-create", "label": "laptop", "scope": "full"})
    assert status == 200, html[:2000]
    secret = text_of(html, "new-app-password")
    assert propfind(srv, *DAVE) == 401
    assert not sftp_login(srv, *DAVE)
    log = srv.log.read_text()
    assert "two-step sign-in on, so its password alone is refused over webdav" in log
    assert "two-step sign-in on, so its password alone is refused over sftp" in log
    forgive(srv, "dave")
    assert propfind(srv, "dave", secret) == 207 and sftp_login(srv, "dave", secret)
    assert propfind(srv, *BOB) == 207 and sftp_login(srv, *BOB)         # another account: unaffected
    status, _ = WebClient(srv).sign_in("dave", secret)                # the pages take password and code
    assert status == 401 and "app passwords are for devices" in srv.log.read_text()
    forgive(srv, "dave")
    status, _, html = web.get(PAGE)
    assert b"laptop" in html and b'id="session-records"' in html and b"webdav" in html and b"sftp" in html
    # turning it off takes the password and a code; then the password alone works everywhere again
    status, _, html = post(web, {"action": "totp-disable", "password": DAVE[1], "code": ""})
    assert status == 400
    status, _, html = post(web, {"action": "totp-disable", "password": "wrong-one", "code": later(totp)})
    assert status == 403 and propfind(srv, *DAVE) == 401
    forgive(srv, "dave")
    status, _, _ = post(web, {"action": "totp-disable", "password": DAVE[1], "code": later(totp)})
    assert status == 303
    assert propfind(srv, *DAVE) == 207 and sftp_login(srv, *DAVE)
    assert signed_in(srv, DAVE).get(PAGE)[0] == 200


def ids_of(srv, name, what):
    from sqlalchemy import select
    from providers.meta.schema import app_passwords, users, web_sessions
    table = {"apps": app_passwords, "sessions": web_sessions}[what]

    def read(st):
        with st.db.read() as c:
            uid = c.execute(select(users.c.id).where(users.c.name == name)).scalar_one()
            return [r[0] for r in c.execute(select(table.c.id).where(table.c.user_id == uid))]
    return core(srv, read)


def test_app_passwords_open_devices_not_the_pages(srv):
    """Without two-step sign-in too, a backup app password works over
    WebDAV but does not sign in to the pages, where it would carry every
    right of the account; the account's own password still does."""
    web = signed_in(srv, FRANK)
    status, _, html = post(web, {"action": "app-create", "label": "nightly", "scope": "backup"})
    assert status == 200, html[:2000]
    secret = text_of(html, "new-app-password")
    assert propfind(srv, "frank", secret) == 207
    status, _ = WebClient(srv).sign_in("frank", secret)
    assert status == 401
    forgive(srv, "frank")
    assert signed_in(srv, FRANK).get(PAGE)[0] == 200
    assert propfind(srv, *ERIN) == 207                        # another account: unaffected


def test_one_account_cannot_end_or_revoke_anothers(srv):
    """Erin posts bob's session and app password ids: nothing of bob's ends."""
    bob1, bob2 = signed_in(srv, BOB), signed_in(srv, BOB)
    status, _, html = post(bob1, {"action": "app-create", "label": "backup job", "scope": "backup"})
    assert status == 200
    bob_secret = text_of(html, "new-app-password")
    alice = signed_in(srv, ERIN)
    for sid in ids_of(srv, "bob", "sessions"):
        status, _, _ = post(alice, {"action": "session-end", "id": str(sid)})
        assert status == 404
    for aid in ids_of(srv, "bob", "apps"):
        status, _, _ = post(alice, {"action": "app-revoke", "id": str(aid)})
        assert status == 404
    assert bob1.get(PAGE)[0] == 200 and bob2.get(PAGE)[0] == 200
    assert propfind(srv, "bob", bob_secret) == 207
    # a forged form: no token, a wrong one, another site's
    before = len(ids_of(srv, "erin", "apps"))
    status, _, _ = alice.post_form(PAGE, {"action": "app-create", "label": "evil", "scope": "full"}, csrf=False)
    assert status == 403
    status, _, _ = post(alice, {"action": "app-create", "label": "evil", "scope": "full"}, csrf="0" * 64)
    assert status == 403
    _, _, html = alice.get(PAGE)
    status, _, _ = alice.send("POST", PAGE, f"action=app-create&label=evil&scope=full&csrf={alice.csrf(html)}"
                              .encode(), {"Content-Type": "application/x-www-form-urlencoded",
                                          "Origin": "http://evil.example"})
    assert status == 403 and len(ids_of(srv, "erin", "apps")) == before
    # bob ends his other session in the page: that browser is signed out at its next request
    _, _, html = bob1.get(PAGE)
    others = re.findall(rb'value="session-end">\s*<input type="hidden" name="id" value="(\d+)"', html)
    assert len(others) == len(ids_of(srv, "bob", "sessions")) - 1 >= 1         # all but this one
    for sid in others:
        status, headers, _ = post(bob1, {"action": "session-end", "id": sid.decode()})
        assert status == 303
    status, headers, _ = bob2.get(PAGE)
    assert status == 303 and headers["location"].startswith("/.web/login")
    assert bob1.get(PAGE)[0] == 200
    # and revokes his app password: refused from then on; his page carries on
    aid = ids_of(srv, "bob", "apps")[0]
    status, _, _ = post(bob1, {"action": "app-revoke", "id": str(aid)})
    assert status == 303 and bob1.get(PAGE)[0] == 200
    assert propfind(srv, "bob", bob_secret) == 401
    forgive(srv, "bob")


def ssh_key(srv, name) -> paramiko.PKey:
    """A new Ed25519 key registered for the account (as `coffer-admin user key add` does)."""
    from providers.sshkeys import SSHKeys
    path = srv.folder / f"{name}_key"
    subprocess.run([require_client("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    core(srv, lambda st: SSHKeys(st.db, st.accounts).add(name, path.with_suffix(".pub").read_text()))
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def test_private_account_and_the_administrators_reset(srv):
    """A private account's secret opens only with its key (opened by the
    password at sign-in); its SSH key and password still log in over SFTP;
    the administrator's reset turns TOTP off, and the holder reads that on
    the page."""
    totp, codes, _ = enrol(srv, CAROL)
    status, web, _ = code_step(srv, CAROL, later(totp))
    assert status == 303 and web.get("/.web/files/")[0] == 200
    # over SFTP her password alone is refused, but her key followed by her password is two factors
    forgive(srv, "carol")
    assert not sftp_login(srv, *CAROL)
    forgive(srv, "carol")
    key = ssh_key(srv, "carol")
    sock = socket.create_connection(("127.0.0.1", srv.sftp_port), timeout=20)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=20)
        assert t.auth_publickey("carol", key) == ["password"]
        t.auth_password("carol", CAROL[1])
        assert isinstance(paramiko.SFTPClient.from_transport(t).listdir("/"), list)     # logged in
    finally:
        t.close()
    admin = Path(sys.executable).with_name("coffer-admin")
    shown = subprocess.run([str(admin), "--config", str(srv.config), "user", "show", "carol", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["two_step_sign_in"] is True, shown.stderr
    r = subprocess.run([str(admin), "--config", str(srv.config), "user", "totp-reset", "carol"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "two-step sign-in turned off" in r.stdout, r.stderr
    web = signed_in(srv, CAROL)
    _, _, html = web.get(PAGE)
    assert b"turned off your two-step sign-in" in html and b'id="totp-begin"' in html


def test_the_code_may_reach_any_worker_and_is_used_once(tmp_path):
    """With two workers and a new connection for every request, the code's
    request reaches either worker, and each sign-in works; a session ended
    in the page is refused by both workers at once. A sign-in whose
    waiting cookie is gone starts again from the password; the waiting
    sign-in is used once."""
    with CofferServer(tmp_path, tls=False, accounts=dict([ALICE]), extra="[server]\nworkers = 2\n") as two:
        _, codes, first = enrol(two, ALICE)
        browsers = []
        for code in codes[:4]:
            status, web, html = code_step(two, ALICE, code)
            assert status == 303, html[:2000]
            assert web.get(PAGE)[0] == 200
            browsers.append(web)
        # the first browser ends every other session: each is refused on both workers from then on
        _, _, html = first.get(PAGE)
        others = re.findall(rb'value="session-end">\s*<input type="hidden" name="id" value="(\d+)"', html)
        assert len(others) == 4
        for sid in others:
            assert post(first, {"action": "session-end", "id": sid.decode()})[0] == 303
        for web in browsers:
            assert {web.get(PAGE)[0] for _ in range(4)} == {303}
        assert first.get(PAGE)[0] == 200
        web = WebClient(two)
        assert web.sign_in(*ALICE)[0] == 200
        waiting = web.cookies.pop("coffer_signin_code")
        status, _, html = code_step_with(web, codes[4])
        assert status == 401 and b"waited too long" in html and b'id="password"' in html
        web.cookies["coffer_signin_code"] = waiting
        assert code_step_with(web, codes[5], name="bob")[0] == 401      # it is alice's sign-in, nobody else's
        web.cookies["coffer_signin_code"] = waiting
        assert code_step_with(web, codes[5])[0] == 303
        web.cookies["coffer_signin_code"] = waiting
        assert code_step_with(web, codes[6])[0] == 401
        assert core(two, lambda st: st.web_sessions.waiting(waiting)) is None


def code_step_with(web, code, name="alice"):
    """Send `code` on the second form of the sign-in this browser began."""
    _, _, html = web.get("/.web/login")
    return web.post_form("/.web/login", {"step": "code", "name": name, "code": code, "csrf": web.csrf(html)})


def test_a_private_account_asked_again_on_another_worker_gives_no_second_code(tmp_path):
    """A private account's key lives in the worker that signed it in; another
    worker asks for the password again (server/web.py). The session already
    gave its code, so the password alone carries on there."""
    with CofferServer(tmp_path, tls=False, accounts=dict([CAROL]), modes={"carol": "private"},
                      extra="[server]\nworkers = 2\n") as two:
        def turn_on(st):
            vfs = st.open_account(*CAROL, protocol="test")
            try:
                secret = st.totp.begin(vfs.user.id, vfs.keys.user_key)
                return st.totp.confirm(vfs.user.id, vfs.keys.user_key, pyotp.TOTP(secret).now())
            finally:
                vfs.close()
        codes = core(two, turn_on)
        status, web, _ = code_step(two, CAROL, codes[0])
        assert status == 303
        asked = 0
        for _ in range(12):                         # new connections: both workers answer
            status, headers, _ = web.get("/.web/files/")
            if status == 303:
                assert "again=1" in headers["location"]
                asked += 1
                assert web.sign_in(*CAROL)[0] == 303              # no code form
            else:
                assert status == 200
        assert asked >= 1
        assert WebClient(two).sign_in(*CAROL)[0] == 200          # a new browser is still asked for a code


# -- the TOTP core, in process ------------------------------------------------------------

def test_codes_drift_one_step_and_never_replay(storage, alice):
    from providers import crypto
    from providers.totp import SecondFactors
    now = [1_800_000_000.0]
    totp = SecondFactors(storage.db, b"p" * 32, clock=lambda: now[0])
    uid, key = alice.user.id, alice.keys.user_key
    gen = pyotp.TOTP(totp.begin(uid, key))
    assert totp.check(uid, key, gen.at(now[0])) is None                  # not on before it is confirmed
    codes = totp.confirm(uid, key, gen.at(now[0]))
    assert totp.check(uid, key, gen.at(now[0])) is None                  # the confirming code is spent
    assert totp.check(uid, key, gen.at(now[0] + 30)) == "code"           # the next step's: a fast clock
    now[0] += 120
    assert totp.check(uid, key, gen.at(now[0] - 30)) == "code"           # a slow clock: one step behind
    assert totp.check(uid, key, gen.at(now[0] - 60)) is None             # two steps behind: too old
    assert totp.check(uid, key, gen.at(now[0] + 60)) is None             # two steps ahead: refused
    assert totp.check(uid, key, gen.at(now[0])) == "code"
    assert totp.check(uid, key, gen.at(now[0] - 30)) is None             # an earlier step after a later one
    assert totp.check(uid, key, codes[3]) == "recovery" and totp.check(uid, key, codes[3]) is None
    assert totp.recovery_left(uid) == 9
    # the secret is sealed with the account's key, bound to its row: not in clear, and not movable
    from sqlalchemy import select, update
    from providers.meta.schema import totp as table
    with storage.db.read() as c:
        sealed = bytes(c.execute(select(table.c.secret_enc).where(table.c.user_id == uid)).scalar_one())
    assert gen.secret.encode() not in sealed and crypto.is_bound(sealed)
    storage.accounts.create("bob", "bob-password")
    bob = storage.open_account("bob", "bob-password")
    try:
        totp.begin(bob.user.id, key)                                       # sealed with alice's key...
        with storage.db.write() as c:                                      # ...and moved onto bob's row
            c.execute(update(table).where(table.c.user_id == bob.user.id).values(secret_enc=sealed))
        with pytest.raises(Exception, match="TOTP secret failed authentication"):
            totp.pending_secret(bob.user.id, key)
    finally:
        bob.close()
