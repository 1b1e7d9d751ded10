"""The login guard against a real `coffer serve`, with curl from several
loopback addresses (127.0.0.0/8 is all this machine): an attacker is
slowed and banned while the owner gets in, a success on the attacker's own
account resets nothing, concurrent guesses are counted before the hash,
and an unknown name, a wrong password and a disabled account are one answer
in one time.

The server hashes at bcrypt cost 10 here (not the tests' usual 4), so the
hash dominates a login's time as it does in production, and its verified
logins are cached for one second, so a later login checks the password again.
"""
import json
import re
import statistics
import subprocess
import threading
import time

import pytest

from admin_harness import ADMIN
from webdav_harness import CofferServer, require_client

pytestmark = [pytest.mark.clients]

ACCOUNTS = {name: f"{name}-password-1" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")}


class GuardServer(CofferServer):
    def __init__(self, folder):
        super().__init__(folder, accounts=ACCOUNTS, extra='[accounts]\nsession_addresses = "full"\n')
        text = self.config.read_text()
        text = text.replace("bcrypt_rounds = 4", "bcrypt_rounds = 10")
        self.config.write_text(text.replace("credential_cache_seconds = 60", "credential_cache_seconds = 1"))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    require_client("curl")
    with GuardServer(tmp_path_factory.mktemp("guard")) as s:
        yield s


def curl(srv, name, password, addr):
    """PROPFIND / as `name` from `addr`: (status, headers, body, seconds).
    The credentials go to curl on stdin, never in argv."""
    cmd = ["curl", "-sk", "-K", "-", "--interface", addr, "-X", "PROPFIND", "-H", "Depth: 0",
           "-o", "-", "-D", "/dev/stderr", "-w", "\n%{http_code} %{time_total}", srv.url]
    r = subprocess.run(cmd, input=f'user = "{name}:{password}"\n'.encode(), capture_output=True, timeout=60)
    body, _, tail = r.stdout.rpartition(b"\n")
    code, seconds = tail.split()
    headers = {k.lower(): v.strip() for k, _, v in
               (line.partition(":") for line in r.stderr.decode("latin-1").splitlines()[1:]) if v}
    return int(code), headers, body.decode(), float(seconds)


def audit_count(srv, addr) -> int:
    from providers import config
    from providers.storage import Storage
    from sqlalchemy import text
    st = Storage.open(config.load(srv.config))
    try:
        with st.db.read() as c:
            return c.execute(text("select count(*) from audit_events where event = 'login_failed' "
                                  "and client_addr = :a"), {"a": addr}).scalar()
    finally:
        st.close()


def admin(srv, *argv):
    r = subprocess.run([ADMIN, "--config", str(srv.config), *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_attacker_is_refused_while_the_owner_logs_in_from_another_address(srv):
    attacker, home = "127.0.0.2", "127.0.0.3"
    for _ in range(3):
        assert curl(srv, "bob", "guess-guess", attacker)[0] == 401
    code, headers, body, _ = curl(srv, "bob", ACCOUNTS["bob"], attacker)     # even the right one waits
    assert code == 401 and "too many failed logins" in body and headers["retry-after"] == "1"
    code, _, body, _ = curl(srv, "bob", ACCOUNTS["bob"], home)
    assert code == 207, body
    time.sleep(1.1)
    code, _, body, _ = curl(srv, "bob", ACCOUNTS["bob"], "127.0.0.33")     # any clean address, uncached
    assert code == 207, body


def test_a_success_on_the_attackers_own_account_does_not_reset_its_address(srv):
    """Policy: failures from one address count against it whatever account
    they name; ten in the window ban it (15 min, longer each time). An
    account that has logged in from that address before (a neighbour behind
    the same NAT, or the attacker's own) still gets in; another account
    new to that address waits for the ban to end, or for the administrator."""
    nat = "127.0.0.4"
    assert curl(srv, "carol", ACCOUNTS["carol"], nat)[0] == 207          # carol uses this address
    for i in range(5):
        assert curl(srv, f"nobody{i}", "guess-guess", nat)[0] == 401
    assert curl(srv, "alice", ACCOUNTS["alice"], nat)[0] == 207          # the attacker's own account
    for i in range(5, 10):
        assert curl(srv, f"nobody{i}", "guess-guess", nat)[0] == 401
    code, headers, body, _ = curl(srv, "nobody10", "guess-guess", nat)
    assert code == 401 and "too many failed logins" in body and int(headers["retry-after"]) > 800
    assert curl(srv, "dave", ACCOUNTS["dave"], nat)[0] == 401            # new to this address: waits
    time.sleep(1.1)                                                       # past the credential cache
    assert curl(srv, "carol", ACCOUNTS["carol"], nat)[0] == 207          # the neighbour keeps access
    assert curl(srv, "alice", ACCOUNTS["alice"], nat)[0] == 207
    shown = json.loads(admin(srv, "login", "show", "--address", nat, "--json"))
    assert shown["address"]["bans"] == 1 and shown["address"]["blocked_for_seconds"] > 800
    assert "removed 1" in admin(srv, "login", "clear", "--address", nat)
    assert curl(srv, "dave", ACCOUNTS["dave"], nat)[0] == 207


def test_twenty_concurrent_guesses_are_not_all_checked(srv):
    addr = "127.0.0.5"
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(curl(srv, "gina", "guess-guess", addr)[0]))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [401] * 20
    assert audit_count(srv, addr) == 3                  # the free guesses; the rest refused unchecked


def test_unknown_name_and_wrong_password_take_the_same_time(srv):
    wrong, unknown = [], []
    for k in range(15):
        addr = f"127.0.1.{k + 1}"                        # one guess of each per address: none is delayed
        first, second = ((wrong, "erin"), (unknown, f"nosuch{k}"))[::1 if k % 2 else -1]
        for times, name in (first, second):
            code, _, body, seconds = curl(srv, name, "guess-guess", addr)
            assert code == 401 and "too many" not in body
            times.append(seconds)
    print(f"median 401: wrong password {statistics.median(wrong) * 1000:.1f} ms, "
          f"unknown name {statistics.median(unknown) * 1000:.1f} ms")
    # skipping the hash answered in 3.5 against 240 ms; tests running beside this
    # one on two cores move these figures by a third, so the bound is 40 %
    w, u = statistics.median(wrong), statistics.median(unknown)
    assert abs(w - u) <= 0.4 * max(w, u), (wrong, unknown)


def test_a_disabled_account_with_its_password_gets_the_wrong_password_answer(srv):
    from providers import config
    from providers.storage import Storage
    from sqlalchemy import text
    st = Storage.open(config.load(srv.config))
    try:
        st.accounts.set_status("frank", "disabled")
    finally:
        st.close()
    disabled = curl(srv, "frank", ACCOUNTS["frank"], "127.0.0.6")
    wrong = curl(srv, "frank", "guess-guess", "127.0.0.7")
    unknown = curl(srv, "nosuchuser", "guess-guess", "127.0.0.8")
    assert disabled[0] == wrong[0] == unknown[0] == 401
    assert disabled[2] == wrong[2] == unknown[2]
    assert re.search("wrong user name or password", disabled[2])
    assert "disabled" not in disabled[2]
