"""The login guard: whose password is checked, and when.

Scored like the well-known defenders (SFTPGo's, fail2ban's), with the state in
the database so that every process and node sees the same records, each under
a keyed hash (no address or name is stored in clear). Three records:

- **the address** (IPv4 as is, IPv6 by its /64): failed logins from it within
  `login_window_seconds`, against any account, unknown names and disabled
  accounts included. At `login_block_after` the address is banned for
  `login_block_seconds`; each further ban within `login_block_max_seconds`
  lasts twice as long, up to that. Its successes lower nothing but their
  own reservation. `login_safe_networks` are never banned as a whole.
- **the pair** (account, address): that address's failures on that account.
  The first `login_failures_before_delay` are free; each guess after that
  waits 1 s, 2 s, 4 s … up to `login_max_delay_seconds`, one at a time. A
  success clears the pair and trusts it for `login_trust_days`: a trusted
  pair (the owner's usual address) passes an address ban and the account's
  protection, until it fails `login_failures_before_delay` times itself.
- **the account**: failures on it from every address. From
  `login_protect_after` on, an address it does not trust gets one free guess
  on it instead of `login_failures_before_delay`.

No record refuses the right password from an address with no bad record, and
no failure of one address touches another's standing. Each attempt is counted
before the password is checked (a reservation, taken back if it succeeds), so
concurrent guesses cannot all pass a threshold: one that finds the free
guesses held by attempts still in flight waits for their answer (a few
seconds at most). Unknown names count as wrong passwords, so the guard's
answers never tell which names exist.

What is kept, whatever `[accounts] session_addresses` says (the guard needs
the full address to count per address): keyed hashes only. An address's
record lives while it holds failures in the window or a ban, and `prune`
deletes it once untouched for the longest of the window and the longest ban;
a pair's record lives while it trusts (`login_trust_days` from the last
success); a success deletes records it leaves holding nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass

from . import meta, turn
from .accounts import normalize_name
from .errors import Throttled
from .meta import users as q

WAIT_SECONDS = 5.0            # longest an attempt waits for the answers of others in flight
POLL_SECONDS = 0.05
STALE_US = 60_000_000         # a reservation unanswered this long was lost (its process died)
SECOND = 1_000_000


@dataclass(frozen=True)
class Attempt:
    account: str            # the record keys
    address: str
    pair: str
    safe: bool              # the address is in login_safe_networks


def address_of(addr: str | None) -> str:
    """The address as the guard counts it: IPv4 as is, IPv4-mapped IPv6 as
    IPv4, other IPv6 by its /64 (one host usually holds a whole /64)."""
    if not addr:
        return "local"
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Throttle:
    def __init__(self, db: meta.Database, cfg, secret: bytes, clock=meta.now_us, sleep=time.sleep):
        self.db, self.cfg, self.secret = db, cfg.security, secret
        self.clock, self.sleep = clock, sleep
        self.safe = [ipaddress.ip_network(n, strict=False) for n in self.cfg.login_safe_networks]

    def _key(self, kind: str, value: str) -> str:
        return hmac.new(self.secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:40]

    def attempt(self, name: str, addr: str | None) -> Attempt:
        where = address_of(addr)
        try:
            safe = any(ipaddress.ip_address(where.split("/")[0]) in n for n in self.safe)
        except ValueError:
            safe = False
        name = normalize_name(name)
        return Attempt(self._key("user", name), self._key("addr", where),
                       self._key("pair", f"{name}\x00{where}"), safe)

    def account_key(self, name: str) -> str:
        """The key of the account's record; its pairs carry it too (erasure
        deletes by it)."""
        return self.attempt(name, None).account

    # -- a login ---------------------------------------------------------------------------
    def reserve(self, name: str, addr: str | None) -> Attempt:
        """Count one attempt before its password is checked, or raise
        Throttled. Pair with `succeeded` or `failed`."""
        att = self.attempt(name, addr)
        deadline = self.clock() + int(WAIT_SECONDS * SECOND)
        while True:
            now = self.clock()
            with self.db.write() as c:
                a, p, u = self._lock(c, att, now)
                verdict, until = self._decide(a, p, u, att, now)
                if verdict == "go":
                    free = self._free(p, u, now)
                    for row in (a, p, u):
                        row["failures"] += 1
                        row["pending"] += 1
                    if p["failures"] >= free:
                        p["blocked_until_us"] = now + self._delay_us(p["failures"] - free)
                    for row in (a, p, u):
                        q.throttle_save(c, row)
                    return att
                if verdict == "ban":
                    until = self._ban(a, now)
                    q.throttle_save(c, a)
            if verdict == "wait" and now < deadline:
                turn.leave()
                self.sleep(POLL_SECONDS)
                continue
            raise Throttled(until - now)

    def succeeded(self, att: Attempt) -> None:
        """The password was right: take back this attempt's count, and clear
        and trust the pair. The address's other failures stay."""
        now = self.clock()
        with self.db.write() as c:
            a, p, u = self._lock(c, att, now)
            for row in (a, u):
                row["failures"] = max(0, row["failures"] - 1)
                row["pending"] = max(0, row["pending"] - 1)
            p["pending"] = max(0, p["pending"] - 1)
            p.update(failures=p["pending"], window_start_us=now, blocked_until_us=None,
                     trusted_until_us=now + self.cfg.login_trust_days * 86400 * SECOND)
            for row in (a, p, u):
                if _holds_nothing(row, now):     # a clean login leaves only the trusted pair behind
                    q.throttle_delete(c, [row["key"]])
                else:
                    q.throttle_save(c, row)

    def first_step(self, att: Attempt) -> None:
        """The password was right and a second factor is still to come: take
        back this attempt's count only. The pair is neither cleared nor
        trusted until the code checks out (`succeeded`), so the password
        cannot be used to wipe out the failures of wrong codes."""
        now = self.clock()
        with self.db.write() as c:
            for row in self._lock(c, att, now):
                row["failures"] = max(0, row["failures"] - 1)
                row["pending"] = max(0, row["pending"] - 1)
                q.throttle_save(c, row)

    def failed(self, att: Attempt) -> None:
        """The attempt failed (its count stands): the pair's wait runs from
        now (a slow check must not use it up), and the address is banned if
        it has reached login_block_after."""
        now = self.clock()
        with self.db.write() as c:
            a, p, u = self._lock(c, att, now)
            for row in (a, p, u):
                row["pending"] = max(0, row["pending"] - 1)
            free = self._free(p, u, now)
            if p["failures"] >= free:
                p["blocked_until_us"] = now + self._delay_us(p["failures"] - free)
            if a["failures"] >= self.cfg.login_block_after and not att.safe:
                self._ban(a, now)
            for row in (a, p, u):
                q.throttle_save(c, row)

    # -- the administrator's view ------------------------------------------------------------
    def status(self, name: str | None = None, addr: str | None = None) -> dict:
        """What the guard holds on an account and/or an address, as the
        administrator asks for it by name (the records are keyed hashes)."""
        now = self.clock()
        out = {}
        with self.db.read() as c:
            for label, key in self._admin_keys(name, addr).items():
                row = q.throttle_rows(c, [key]).get(key)
                if row is None:
                    continue
                row = self._fresh(row, now)
                out[label] = {"failures": row["failures"],
                              "blocked_for_seconds": max(0, -(-((row["blocked_until_us"] or now) - now) // SECOND)),
                              "bans": row["bans"],
                              "trusted": bool(row["trusted_until_us"] and row["trusted_until_us"] > now)}
        return out

    def clear(self, name: str | None = None, addr: str | None = None) -> int:
        """Forget what the guard holds on an account (with all its pairs)
        and/or an address. Returns the number of records removed."""
        keys = self._admin_keys(name, addr)
        account = keys.get("account") if name and not addr else None
        with self.db.write() as c:
            return q.throttle_delete(c, list(keys.values()), account=account)

    def prune(self) -> int:
        """Drop records nobody touched for longer than any of them matters."""
        now = self.clock()
        keep_us = max(self.cfg.login_window_seconds, self.cfg.login_block_max_seconds) * SECOND
        with self.db.write() as c:
            return q.throttle_prune(c, now - keep_us, now)

    # -- internals -----------------------------------------------------------------------
    def _admin_keys(self, name: str | None, addr: str | None) -> dict:
        att = self.attempt(name or "", addr)
        keys = {}
        if name:
            keys["account"] = att.account
        if addr:
            keys["address"] = att.address
        if name and addr:
            keys["pair"] = att.pair
        return keys

    def _lock(self, c, att: Attempt, now: int):
        rows = q.throttle_lock(c, {att.account: att.account, att.address: None, att.pair: att.account}, now)
        return (self._fresh(rows[att.address], now), self._fresh(rows[att.pair], now),
                self._fresh(rows[att.account], now))

    def _fresh(self, row: dict, now: int) -> dict:
        """The record as of now: lost reservations dropped (they stay counted
        as failures), failures outside the window forgotten, and bans long
        past forgotten."""
        row = dict(row)
        if row["pending"] and now - row["updated_us"] > STALE_US:
            row["pending"] = 0
        if now - row["window_start_us"] > self.cfg.login_window_seconds * SECOND:
            row.update(failures=row["pending"], window_start_us=now)
        if row["bans"] and (row["blocked_until_us"] or 0) + self.cfg.login_block_max_seconds * SECOND < now:
            row["bans"] = 0
        row["updated_us"] = now
        return row

    def _trusted(self, p: dict, now: int) -> bool:
        return (p["trusted_until_us"] or 0) > now and p["failures"] < self.cfg.login_failures_before_delay

    def _free(self, p: dict, u: dict, now: int) -> int:
        """Guesses the pair may make before each one waits."""
        if not self._trusted(p, now) and u["failures"] >= self.cfg.login_protect_after:
            return 1
        return self.cfg.login_failures_before_delay

    def _decide(self, a: dict, p: dict, u: dict, att: Attempt, now: int) -> tuple[str, int]:
        """('go', _), ('wait', _) while attempts in flight hold the free
        guesses, ('refuse', until) or ('ban', _): refuse and ban the address."""
        if not att.safe and not self._trusted(p, now):
            if (a["blocked_until_us"] or 0) > now:
                return "refuse", a["blocked_until_us"]
            if a["failures"] >= self.cfg.login_block_after:
                return ("wait" if a["pending"] else "ban"), now + SECOND
        if p["failures"] >= self._free(p, u, now):
            if p["pending"]:
                return "wait", now + SECOND
            if (p["blocked_until_us"] or 0) > now:
                return "refuse", p["blocked_until_us"]
        return "go", now

    def _delay_us(self, step: int) -> int:
        return min(2 ** min(step, 30), self.cfg.login_max_delay_seconds) * SECOND

    def _ban(self, a: dict, now: int) -> int:
        """Ban the address (a banned address has no score); returns the end."""
        a["bans"] += 1
        seconds = min(self.cfg.login_block_seconds * 2 ** min(a["bans"] - 1, 30), self.cfg.login_block_max_seconds)
        a.update(blocked_until_us=now + seconds * SECOND, failures=0)
        return a["blocked_until_us"]


def _holds_nothing(row: dict, now: int) -> bool:
    """A record with no failure, reservation, ban or trust: nothing to keep."""
    return (not row["failures"] and not row["pending"] and not row["bans"]
            and (row["blocked_until_us"] or 0) <= now and (row["trusted_until_us"] or 0) <= now)
