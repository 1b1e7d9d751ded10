"""The login guard and Storage.login, with an injected clock: who is slowed,
who is banned, who still gets in, and that every refusal reads alike.

Policy under test (defaults: 3 free guesses per account and address, an
address banned at 10 failures in 15 minutes, an account protected at 10):
an attacker's address is slowed on the account it guesses and banned after
ten failures anywhere; the owner, from an address with no bad record or one
it has logged in from before, always has the right password checked.
"""
import dataclasses
import threading

import bcrypt
import pytest
from sqlalchemy import text

from providers import lifecycle
from providers.errors import AuthenticationFailed, Throttled
from providers.storage import WRONG_LOGIN, Storage
from providers.throttle import Throttle, address_of

ATTACKER, VICTIM_HOME, NAT, ELSEWHERE = "203.0.113.9", "198.51.100.7", "192.0.2.1", "198.51.100.99"


class Clock:
    def __init__(self):
        self.us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.us

    def sleep(self, seconds: float) -> None:
        self.us += int(seconds * 1_000_000)

    def advance(self, seconds: float) -> None:
        self.us += int(seconds * 1_000_000)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def st(cfg, clock):
    s = Storage.open(cfg)
    s.throttle = Throttle(s.db, s.cfg, s.master.subkey("throttle"), clock=clock, sleep=clock.sleep)
    for name in ("victim", "mallory", "ann", "ben"):
        s.accounts.create(name, f"{name}-password")
    yield s
    s.close()


def login(st, name, password, addr):
    st.open_account(name, password, client_addr=addr, protocol="webdav").close()


def refused(st, name, password, addr) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as e:
        login(st, name, password, addr)
    return e.value


def test_attacker_is_slowed_while_the_victim_logs_in_from_elsewhere(st, clock):
    for _ in range(3):
        assert not isinstance(refused(st, "victim", "guess", ATTACKER), Throttled)
    e = refused(st, "victim", "victim-password", ATTACKER)       # even the right one waits now
    assert isinstance(e, Throttled) and e.retry_after == 1
    login(st, "victim", "victim-password", VICTIM_HOME)           # the owner is not refused
    for _ in range(12):                                           # guesses keep coming, one per delay
        clock.advance(getattr(refused(st, "victim", "guess", ATTACKER), "retry_after", 0))
    login(st, "victim", "victim-password", VICTIM_HOME)
    login(st, "victim", "victim-password", ELSEWHERE)             # a fresh address too


def test_delays_double_up_to_the_cap_and_the_window_forgets(st, clock):
    waits = []
    for _ in range(3):
        refused(st, "victim", "guess", ATTACKER)
    for _ in range(5):
        e = refused(st, "victim", "guess", ATTACKER)
        assert isinstance(e, Throttled)
        waits.append(e.retry_after)
        clock.advance(e.retry_after)
        assert not isinstance(refused(st, "victim", "guess", ATTACKER), Throttled)
    assert waits == [1, 2, 4, 8, 16]
    clock.advance(901)                                            # past login_window_seconds
    login(st, "victim", "victim-password", ATTACKER)


def test_an_address_is_banned_after_ten_failures_on_any_names(st, clock):
    for i in range(10):
        refused(st, f"nobody{i}", "guess", ATTACKER)
    e = refused(st, "ann", "ann-password", ATTACKER)
    assert isinstance(e, Throttled) and 899 <= e.retry_after <= 900
    clock.advance(900)
    login(st, "ann", "ann-password", ATTACKER)                    # the ban ends
    for i in range(10):
        refused(st, f"other{i}", "guess", ATTACKER)
    assert isinstance(e := refused(st, "ben", "ben-password", ATTACKER), Throttled)
    assert e.retry_after > 1700                                   # a second ban lasts twice as long


def test_behind_one_address_a_neighbour_who_logged_in_before_keeps_access(st, clock):
    """Policy: one account's failures slow only that account from the shared
    address. If the address as a whole is banned (ten failures), accounts
    that logged in from it before (trusted for login_trust_days) still
    get in; an account new to that address waits out the ban."""
    login(st, "ann", "ann-password", NAT)
    for _ in range(3):
        refused(st, "ben", "wrong", NAT)
    login(st, "ann", "ann-password", NAT)                         # ben's failures do not touch ann
    for i in range(7):
        refused(st, f"nobody{i}", "guess", NAT)
    assert isinstance(refused(st, "victim", "victim-password", NAT), Throttled)   # banned: new here
    login(st, "ann", "ann-password", NAT)                         # trusted pair passes the ban
    assert isinstance(refused(st, "mallory", "mallory-password", NAT), Throttled)


def test_success_on_the_attackers_own_account_resets_nothing_for_others(st, clock):
    for i in range(5):
        refused(st, f"target{i}", "guess", ATTACKER)
        login(st, "mallory", "mallory-password", ATTACKER)
    for i in range(5):
        refused(st, f"target{i}", "guess2", ATTACKER)
        login(st, "mallory", "mallory-password", ATTACKER)
    assert isinstance(refused(st, "victim", "victim-password", ATTACKER), Throttled)
    login(st, "mallory", "mallory-password", ATTACKER)            # its own trusted account still opens
    for _ in range(2):
        refused(st, "victim", "guess", VICTIM_HOME)
    login(st, "victim", "victim-password", VICTIM_HOME)           # a success clears only its own pair
    for _ in range(3):
        refused(st, "victim", "guess", VICTIM_HOME)
    assert isinstance(refused(st, "victim", "guess", VICTIM_HOME), Throttled)


def test_a_protected_account_gives_untrusted_addresses_one_guess(st, clock):
    login(st, "victim", "victim-password", VICTIM_HOME)
    for i in range(10):                                           # a spread attack: one guess per address
        refused(st, "victim", "guess", f"203.0.113.{100 + i}")
    refused(st, "victim", "guess", "203.0.113.200")               # a new address: one guess
    assert isinstance(refused(st, "victim", "victim-password", "203.0.113.200"), Throttled)
    for _ in range(2):                                            # the owner's own address keeps its allowance
        refused(st, "victim", "typo", VICTIM_HOME)
    login(st, "victim", "victim-password", VICTIM_HOME)
    login(st, "victim", "victim-password", ELSEWHERE)             # and a clean address is checked


def test_safe_networks_are_never_banned_as_a_whole(cfg, clock):
    st = Storage.open(cfg.replace(security=dataclasses.replace(cfg.security, login_safe_networks=("192.0.2.0/24",))))
    st.throttle = Throttle(st.db, st.cfg, st.master.subkey("throttle"), clock=clock, sleep=clock.sleep)
    try:
        st.accounts.create("ann", "ann-password")
        for i in range(15):
            refused(st, f"nobody{i}", "guess", NAT)
        login(st, "ann", "ann-password", NAT)
        for _ in range(3):
            refused(st, "ann", "guess", NAT)
        assert isinstance(refused(st, "ann", "guess", NAT), Throttled)     # per-account delays still apply
    finally:
        st.close()


def test_concurrent_guesses_are_counted_before_the_hash(st, monkeypatch):
    st.throttle.clock = __import__("providers").meta.now_us           # real time: real threads
    import time
    st.throttle.sleep = time.sleep
    checks = []
    real = bcrypt.checkpw

    def counting(pw, hashed):
        checks.append(1)
        time.sleep(0.05)                                          # a slower hash widens the race
        return real(pw, hashed)
    monkeypatch.setattr(bcrypt, "checkpw", counting)
    outcomes = []

    def guess(pw):
        try:
            login(st, "victim", pw, ATTACKER)
            outcomes.append("ok")
        except Throttled:
            outcomes.append("throttled")
        except AuthenticationFailed:
            outcomes.append("wrong")
    threads = [threading.Thread(target=guess, args=("guess",)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checks) == 3 and outcomes.count("wrong") == 3 and outcomes.count("throttled") == 17
    # the owner's client opening eight connections at once from a fresh address: all get in
    checks.clear()
    outcomes.clear()
    threads = [threading.Thread(target=lambda: (login(st, "ann", "ann-password", NAT), outcomes.append("ok")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["ok"] * 8


def test_unknown_wrong_disabled_and_cancelled_get_one_answer(st):
    st.accounts.set_status("ben", "disabled")
    lifecycle.cancel(st, "mallory")
    answers = {
        "unknown": refused(st, "nosuchname", "whatever1", VICTIM_HOME),
        "wrong": refused(st, "ann", "not-it-at-all", ELSEWHERE),
        "disabled": refused(st, "ben", "ben-password", NAT),
        "cancelled": refused(st, "mallory", "mallory-password", ATTACKER),
    }
    assert {str(e) for e in answers.values()} == {WRONG_LOGIN}
    assert {type(e) for e in answers.values()} == {AuthenticationFailed}
    reasons = [e["detail"]["reason"] for e in lifecycle.audit_events(st, event="login_failed")]
    assert sorted(reasons) == ["cancelled", "disabled", "password", "unknown"]


def test_an_unknown_name_is_checked_against_a_hash_of_the_configured_cost(st, monkeypatch):
    seen = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: (seen.append(h), real(pw, h))[1])
    refused(st, "nosuchname", "whatever1", ELSEWHERE)
    refused(st, "ann", "whatever1", ELSEWHERE)
    assert len(seen) == 2 and seen[0][:7] == seen[1][:7] == b"$2b$04$"   # conftest FAST: cost 4
    assert seen[0] != seen[1]


def test_erasure_removes_the_accounts_records_with_every_address(st, clock):
    for addr in (ATTACKER, NAT, ELSEWHERE):
        refused(st, "victim", "guess", addr)
    key = st.throttle.account_key("victim")
    count = text("select count(*) from throttle where account = :k or key = :k")
    with st.db.read() as c:
        assert c.execute(count, {"k": key}).scalar() == 4          # the account and its 3 pairs
    lifecycle.erase(st, "victim")
    with st.db.read() as c:
        assert c.execute(count, {"k": key}).scalar() == 0


def test_records_live_only_as_long_as_they_hold_something(st, clock):
    """A clean login leaves the trusted pair only; a failure's address
    record goes once the window and the longest ban are over; the pair goes
    when its trust ends."""
    rows = text("select count(*), max(trusted_until_us) from throttle")
    login(st, "ann", "ann-password", NAT)
    with st.db.read() as c:
        n, trusted = c.execute(rows).one()
    assert n == 1 and trusted == clock() + 30 * 86400 * 1_000_000
    refused(st, "ben", "guess", NAT)
    with st.db.read() as c:
        assert c.execute(rows).one()[0] == 4                     # + the address, ben, ben at that address
    clock.advance(86400 + 1)
    assert st.throttle.prune() == 3
    clock.advance(30 * 86400)
    assert st.throttle.prune() == 1
    with st.db.read() as c:
        assert c.execute(rows).one()[0] == 0


def test_the_administrator_can_see_and_lift_a_ban(st, clock):
    for i in range(10):
        refused(st, f"nobody{i}", "guess", ATTACKER)
    shown = st.throttle.status(addr=ATTACKER)
    assert shown["address"]["blocked_for_seconds"] == 900 and shown["address"]["bans"] == 1
    assert st.throttle.clear(addr=ATTACKER) == 1
    login(st, "ann", "ann-password", ATTACKER)


def test_ipv6_hosts_count_by_their_64():
    assert address_of("2001:db8:1:2:aaaa::1") == address_of("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_of(None) == "local"
