"""The periodic jobs of a running server: one `Scheduler` per worker process.

Every tick (a minute apart): erasures that are due or stalled and record
retention (providers/lifecycle.py `run_maintenance`), version and trash
retention for every account at most once an hour, and gc every
`[storage] gc_every_hours` on a thread of its own (rewriting packs can take
a while) — the first an hour after the service starts, so one that restarts
often still gets one. `coffer-admin maintenance` and `coffer-admin gc` run
the same jobs at once, for cron.

Of all worker processes on all nodes, only the holder of the "maintenance"
lease (providers/leases.py) ticks; gc runs under a lease of its own, renewed
while it works, so never two at once (`coffer-admin gc` takes it too). Both
timetables (the last retention, the next gc) live in the lease, so a process
that takes over after its holder died (within `LEASE_SECONDS`) goes on
where it stopped.
"""
from __future__ import annotations

import logging
import threading
import time

from .leases import holder_id
from .lifecycle import run_maintenance

log = logging.getLogger(__name__)

RETENTION_EVERY_SECONDS = 3600
GC_FIRST_AFTER_SECONDS = 3600
LEASE_SECONDS = 180                   # a dead holder's jobs resume elsewhere this soon (ticks are 60 s apart)
GC_RENEW_SECONDS = 60


class Scheduler:
    def __init__(self, st, holder: str | None = None, clock=time.time):
        self.st = st
        self.holder = holder or holder_id()
        self.clock = clock
        self.gc_thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> dict:
        """Run what is due at `now` when this process holds the maintenance
        lease; the report of the maintenance job, with gc_started (or
        {"held_by": holder} when another process holds it)."""
        now = self.clock() if now is None else now
        taken, by = self.st.leases.take("maintenance", self.holder, LEASE_SECONDS, now)
        if not taken:
            return {"held_by": by}
        state = self.st.leases.state("maintenance")
        full = now - state.get("last_retention", float("-inf")) >= RETENTION_EVERY_SECONDS
        report = run_maintenance(self.st, retention=full)
        if full:
            state["last_retention"] = now
            self.st.leases.save_state("maintenance", state)
        report["gc_started"] = self.start_gc_when_due(now)
        return report

    def start_gc_when_due(self, now: float) -> bool:
        every = self.st.cfg.storage.gc_every_hours * 3600
        if every <= 0:
            return False
        state = self.st.leases.state("gc")
        if "next" not in state:
            state["next"] = now + min(every, GC_FIRST_AFTER_SECONDS)
            self.st.leases.save_state("gc", state)
        if now < state["next"] or (self.gc_thread is not None and self.gc_thread.is_alive()):
            return False
        taken, by = self.st.leases.take("gc", self.holder, LEASE_SECONDS, now)
        if not taken:
            log.info("gc is due but %s is running one", by)
            return False
        state["next"] = now + every
        self.st.leases.save_state("gc", state)
        self.gc_thread = threading.Thread(target=self._gc, name="coffer-gc", daemon=True)
        self.gc_thread.start()
        return True

    def _gc(self) -> None:
        st = self.st
        done = threading.Event()
        renewer = threading.Thread(target=self._renew_gc, args=(done,), name="coffer-gc-lease", daemon=True)
        renewer.start()
        try:
            report = st.gc(grace_seconds=st.cfg.storage.gc_grace_seconds)
            log.info("gc: %s", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.items()))
        except Exception:
            log.exception("periodic gc failed; it runs again in %d hours, or run coffer-admin gc",
                          st.cfg.storage.gc_every_hours)
        finally:
            done.set()
            renewer.join()
            try:
                st.leases.give_up("gc", self.holder)
            except Exception:
                log.exception("could not give up the gc lease; it expires in %d s", LEASE_SECONDS)

    def _renew_gc(self, done: threading.Event) -> None:
        while not done.wait(GC_RENEW_SECONDS):
            try:
                self.st.leases.take("gc", self.holder, LEASE_SECONDS)
            except Exception:
                log.exception("could not renew the gc lease")

    def join(self, timeout: float | None = None) -> None:
        """Wait for a gc in progress (tests; a stopping server leaves it to its daemon thread)."""
        if self.gc_thread is not None:
            self.gc_thread.join(timeout)
