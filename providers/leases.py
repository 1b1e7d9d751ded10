"""Leases: one process among every worker and node runs a periodic job.

A lease has a holder (host:pid:random) and an expiry on the holders' clock.
The holder renews it each time it works; when it stops renewing (it died,
or its node lost the database), another process takes the lease once it has
expired, at most `ttl` seconds later. A lease also keeps its job's timetable
(`state`), so a process that takes it over neither repeats nor skips work.
"""
from __future__ import annotations

import os
import secrets
import socket
import time

from .meta import leases as q


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(self, db, clock=time.time):
        self.db = db
        self.clock = clock

    def take(self, name: str, holder: str, ttl: float, now: float | None = None) -> tuple[bool, str | None]:
        """(True, holder) when `holder` holds `name` for `ttl` more seconds;
        else (False, who holds it)."""
        with self.db.write() as c:
            return q.take(c, name, holder, self.clock() if now is None else now, ttl)

    def give_up(self, name: str, holder: str) -> None:
        with self.db.write() as c:
            q.give_up(c, name, holder)

    def state(self, name: str) -> dict:
        with self.db.read() as c:
            r = q.row(c, name)
        return dict(r["state"] or {}) if r else {}

    def save_state(self, name: str, state: dict) -> None:
        with self.db.write() as c:
            q.save_state(c, name, state)

    def holder(self, name: str, now: float | None = None) -> str | None:
        """Who holds `name` now (None: nobody, or an expired holder)."""
        with self.db.read() as c:
            r = q.row(c, name)
        now = self.clock() if now is None else now
        return r["holder"] if r and r["holder"] and r["expires"] > now else None
