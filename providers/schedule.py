"""The periodic jobs of a running server: one `Scheduler`, owned by `coffer serve`.

Every tick (a minute apart): erasures that are due or stalled and record
retention (providers/lifecycle.py `run_maintenance`), version and trash
retention for every account at most once an hour, and gc every
`[storage] gc_every_hours` on a thread of its own (rewriting packs can take
a while) — the first an hour after the server starts, so a server that
restarts often still gets one; never two at once. `coffer-admin
maintenance` and `coffer-admin gc` run the same jobs at once, for cron.
"""
from __future__ import annotations

import logging
import threading
import time

from .lifecycle import run_maintenance

log = logging.getLogger(__name__)

RETENTION_EVERY_SECONDS = 3600
GC_FIRST_AFTER_SECONDS = 3600


class Scheduler:
    def __init__(self, st):
        self.st = st
        self.last_retention = float("-inf")
        self.next_gc: float | None = None
        self.gc_thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> dict:
        """Run what is due at `now` (time.monotonic()); the report of the
        maintenance job, with gc_started."""
        now = time.monotonic() if now is None else now
        full = now - self.last_retention >= RETENTION_EVERY_SECONDS
        if full:
            self.last_retention = now
        report = run_maintenance(self.st, retention=full)
        report["gc_started"] = self.start_gc_when_due(now)
        return report

    def start_gc_when_due(self, now: float) -> bool:
        every = self.st.cfg.storage.gc_every_hours * 3600
        if every <= 0:
            return False
        if self.next_gc is None:
            self.next_gc = now + min(every, GC_FIRST_AFTER_SECONDS)
        if now < self.next_gc or (self.gc_thread is not None and self.gc_thread.is_alive()):
            return False
        self.next_gc = now + every
        self.gc_thread = threading.Thread(target=self._gc, name="coffer-gc", daemon=True)
        self.gc_thread.start()
        return True

    def _gc(self) -> None:
        st = self.st
        try:
            report = st.gc(grace_seconds=st.cfg.storage.gc_grace_seconds)
            log.info("gc: %s", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.items()))
        except Exception:
            log.exception("periodic gc failed; it runs again in %d hours, or run coffer-admin gc",
                          st.cfg.storage.gc_every_hours)

    def join(self, timeout: float | None = None) -> None:
        """Wait for a gc in progress (tests; a stopping server leaves it to its daemon thread)."""
        if self.gc_thread is not None:
            self.gc_thread.join(timeout)
