"""Session records of a front-end: one per client connection and account.

A record lives in the database (`storage.sessions`: protocol, address,
start, end, bytes in and out, requests); this tracker only keeps the open
records' counters in memory, writes them to the record every
`update_seconds` while it is open, and once more when it ends. WebDAV keys a
record by client address, port and account and ends it after `idle_seconds`
without a request; SFTP keys it by connection and ends it when the
connection closes. A failure to write a record is logged and never stops
the session.
"""
from __future__ import annotations

import logging
import threading
import time

from providers.errors import StorageUnavailable

log = logging.getLogger(__name__)


class Record:
    """An open session record and its counters so far."""

    def __init__(self, sid: int | None):
        self.sid = sid                   # None: the record could not be written
        self.bytes_in = self.bytes_out = self.requests = 0
        self.last = self.written = time.monotonic()
        self.live: set = set()           # running parts (SFTP channels) whose counters are not added yet

    def totals(self) -> tuple[int, int, int]:
        live = list(self.live)
        return (self.bytes_in + sum(x.bytes_in for x in live), self.bytes_out + sum(x.bytes_out for x in live),
                self.requests + sum(x.requests for x in live))


class SessionTracker:
    def __init__(self, storage, protocol: str, *, idle_seconds: float | None = None, update_seconds: float = 60):
        self.st = storage
        self.protocol = protocol
        self.idle_seconds = idle_seconds
        self.update_seconds = update_seconds
        self._lock = threading.Lock()
        self._open: dict = {}            # key -> Record

    def start(self, key, user_id: int, addr) -> Record:
        """The open record for `key`, started now if there is none."""
        with self._lock:
            rec = self._open.get(key)
        if rec is not None:
            return rec
        sid = None
        try:
            sid = self.st.sessions.start(user_id, self.protocol, addr)
        except StorageUnavailable as e:      # the database is down: said once, no traceback
            log.warning("could not start a session record: %s", e)
        except Exception:
            log.exception("could not start a session record")
        rec = Record(sid)
        with self._lock:
            kept = self._open.setdefault(key, rec)
        if kept is not rec:              # another request of this connection won the race
            self._write_end(rec)
        return kept

    def adopt(self, key, sid: int | None) -> Record:
        """The open record for `key`: the one started already as `sid`."""
        rec = Record(sid)
        with self._lock:
            kept = self._open.setdefault(key, rec)
        if kept is not rec:
            self._write_end(rec)
        return kept

    def add(self, rec: Record, bytes_in: int, bytes_out: int, requests: int = 1, part=None) -> None:
        """Count a request, or the totals of a part that has ended (see `follow`)."""
        with self._lock:
            rec.bytes_in += bytes_in
            rec.bytes_out += bytes_out
            rec.requests += requests
            rec.last = time.monotonic()
            rec.live.discard(part)

    def follow(self, rec: Record, part) -> None:
        """Count `part`'s own counters (bytes_in, bytes_out, requests) in the
        record's interim totals until it ends and `add` adds them."""
        with self._lock:
            rec.live.add(part)

    def end(self, key) -> None:
        with self._lock:
            rec = self._open.pop(key, None)
        if rec is not None:
            self._write_end(rec)

    def sweep(self, everything: bool = False) -> None:
        """End idle records (all of them with `everything`); write the totals
        of records not written for `update_seconds`."""
        now = time.monotonic()
        with self._lock:
            done = [k for k, r in self._open.items()
                    if everything or (self.idle_seconds is not None and now - r.last > self.idle_seconds)]
            ended = [self._open.pop(k) for k in done]
            due = [r for r in self._open.values() if r.sid is not None and now - r.written > self.update_seconds]
            totals = []
            for r in due:
                r.written = now
                totals.append((r.sid, r.totals()))
        for rec in ended:
            self._write_end(rec)
        for sid, counts in totals:
            try:
                self.st.sessions.update(sid, *counts)
            except StorageUnavailable as e:      # the database is down: said once, no traceback
                log.warning("could not update a session record: %s", e)
            except Exception:
                log.exception("could not update a session record")

    def _write_end(self, rec: Record) -> None:
        if rec.sid is None:
            return
        with self._lock:
            counts = rec.totals()
        try:
            self.st.sessions.end(rec.sid, *counts)
        except StorageUnavailable as e:      # the database is down: said once, no traceback
            log.warning("could not end a session record: %s", e)
        except Exception:
            log.exception("could not end a session record")
