"""Worker processes of `coffer serve`: one per core, sharing the listening sockets.

The supervisor is the process `coffer serve` started. It has set up what is
made once (the database schema, the certificate, the SSH host keys, the
listening sockets) and runs no thread of its own, so forking is safe. Each
worker opens its own database connections and serves WebDAV and SFTP on the
inherited sockets; the kernel gives each new connection to one of them.
Nothing a worker keeps in memory is needed by another: logins, locks, the
login guard, session limits and the periodic jobs' lease are in the
database.

A worker that dies is replaced (its connections are lost; an upload in
flight leaves the previous version, and gc reclaims its blobs; `on_death`
lets `coffer serve` close its session records). One that
dies within `QUICK_DEATH_SECONDS` of starting, `GIVE_UP_AFTER` times in a
row, stops the server: something is wrong that a restart will not fix.
SIGTERM or SIGINT stops the workers (each finishes within its stop timeout)
and then the supervisor.
"""
from __future__ import annotations

import logging
import mmap
import os
import signal
import time

log = logging.getLogger(__name__)

QUICK_DEATH_SECONDS = 10
GIVE_UP_AFTER = 5
STOP_WAIT_SECONDS = 20
RESTART_PAUSE_SECONDS = 1


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def _die_with_parent() -> None:
    """A worker whose supervisor was killed outright (SIGKILL) gets SIGTERM
    (Linux), rather than serving on as an orphan nobody can stop by PID."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_detached(fn) -> int:
    """Run `fn()` in a short-lived child process, for work that may block
    (a database that does not answer) and that the supervisor must not wait
    for. The supervisor reaps it with its workers."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            fn()
            status = 0
        except BaseException:
            log.exception("a supervisor's helper process failed")
        finally:
            logging.shutdown()
            os._exit(status)
    return pid


class StopSignals:
    """SIGTERM and SIGINT, waited for by the main thread. They stay blocked
    and `wait` takes them with sigtimedwait: a Python handler that sets an
    Event can deadlock when it interrupts the main thread inside that same
    Event's wait (it did, now and then, on a stop right after the start)."""

    SIGNALS = {signal.SIGTERM, signal.SIGINT}

    def __init__(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)    # threads started later inherit it
        self.stopped = False

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True once a stop signal has come."""
        if not self.stopped and signal.sigtimedwait(self.SIGNALS, timeout) is not None:
            self.stopped = True
        return self.stopped

    def is_set(self) -> bool:
        return self.stopped


class Loads:
    """How many connections each worker holds, in memory shared by the
    workers (made before they fork), so that the listening socket's
    connections are shared among them: a worker that holds more than the
    least loaded one lets a new connection wait for the others a moment
    (server/http_gate.py). Each worker writes only its own slot; a slot of
    a dead worker is zeroed for its replacement."""

    def __init__(self, count: int):
        self._counts = memoryview(mmap.mmap(-1, count * 8)).cast("q")

    def set(self, slot: int, n: int) -> None:
        self._counts[slot] = n

    def least_of_others(self, slot: int) -> int:
        return min(n for i, n in enumerate(self._counts) if i != slot)


class Supervisor:
    def __init__(self, count: int, work, on_death=None):
        """`work(slot, stop: StopSignals) -> exit status` runs in each worker;
        `on_death(pid)`, in the supervisor, after a worker died and its
        replacement has started (it must not block: see run_detached)."""
        self.count, self.work, self.on_death = count, work, on_death
        self.children: dict[int, tuple[int, float]] = {}      # pid -> (slot, started)
        self.quick_deaths = 0
        self.loads = Loads(count)

    def _spawn(self, slot: int) -> None:
        self.loads.set(slot, 0)
        pid = os.fork()                                   # TERM and INT are blocked (see run): none is lost
        if pid == 0:                                      # the worker
            status = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                _die_with_parent()
                status = self.work(slot, StopSignals()) or 0
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        self.children[pid] = (slot, time.monotonic())
        log.info("worker %d started (pid %d)", slot, pid)

    def run(self, ready: str = "") -> int:
        """Start the workers, print `ready`, and supervise until SIGTERM/SIGINT."""
        watched = StopSignals.SIGNALS | {signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        for slot in range(self.count):
            self._spawn(slot)
        if ready:
            print(ready, flush=True)
        status = 0
        while True:
            got = signal.sigtimedwait(watched, 1.0)
            if got is not None and got.si_signo in StopSignals.SIGNALS:
                break
            if self._reap_and_replace():
                status = 1
                break
        self._stop_all()
        return status

    def _reap_and_replace(self) -> bool:
        """Replace dead workers; True when they keep dying at once."""
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return False
            slot, started = self.children.pop(pid, (None, 0.0))
            if slot is None:
                continue
            lived = time.monotonic() - started
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
            if self.quick_deaths >= GIVE_UP_AFTER:
                log.error("worker %d (pid %d) %s, %d workers in a row died within %d s of starting: "
                          "stopping the server; the log above says why", slot, pid, describe(st),
                          self.quick_deaths, QUICK_DEATH_SECONDS)
                return True
            log.error("worker %d (pid %d) %s after %.0f s; starting another", slot, pid, describe(st), lived)
            if lived < QUICK_DEATH_SECONDS:
                time.sleep(RESTART_PAUSE_SECONDS)
            self._spawn(slot)
            if self.on_death is not None:
                self.on_death(pid)

    def _stop_all(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
            else:
                self.children.pop(pid, None)
        for pid in list(self.children):
            log.warning("worker pid %d did not stop within %d s: killed", pid, STOP_WAIT_SECONDS)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.children.clear()
