"""The turn: one short request at a time runs its Python code in a process.

The threads of a process share one interpreter lock, which a thread lets go
at every system call (a query, a send, a receive) and must win back after.
With many requests in flight on two cores, each of those calls handed the
lock to another request thread and back: 16 WebDAV connections on one
worker cost 27 context switches and 1.0-1.3 ms of CPU per PROPFIND, against
1 switch and 0.4 ms for one connection, and the worker answered fewer
requests with 16 connections than with one.

So a request thread takes the turn when its request starts (its head is
whole in the buffer: server/http_gate.py) and holds it while the request
only computes and reads the database in place. Before anything that may
wait, the network (a body still to receive, an answer the socket cannot
take at once), the disk (a sync), a write transaction (another writer may
hold it), a password hash or a pause, it leaves the turn, and the rest of
that request runs beside the others as before. Threads that are not request
threads (the selector, SFTP sessions, the periodic jobs) never take it.

No request keeps the others waiting for long:
- a request waits for the turn only while its holder is within its slice
  (SLICE_SECONDS from when it took the turn); past that, the waiting
  request goes on beside the holder (a listing of a large folder, or a
  holder stuck where nothing called `leave`, costs the others at most one
  slice);
- a request sending a long answer leaves the turn once its slice is over;
- no request waits more than WAIT_SECONDS for the turn in all.

The tests lengthen the slice through the environment
(COFFER_TURN_SLICE_SECONDS), so that a holder that waits without leaving
shows as seconds of delay.
"""
from __future__ import annotations

import os
import threading
import time

SLICE_SECONDS = float(os.environ.get("COFFER_TURN_SLICE_SECONDS", "0.01"))
WAIT_SECONDS = 5 * SLICE_SECONDS

_lock = threading.Lock()
_local = threading.local()
_taken_at = 0.0                 # when the present holder took the turn


def take() -> None:
    """A request starts on this thread: wait for the turn (see above)."""
    global _taken_at
    if getattr(_local, "held", False):
        return
    now = time.monotonic()
    deadline = now + WAIT_SECONDS
    while True:
        slice_left = _taken_at + SLICE_SECONDS - now
        if slice_left <= 0 and _lock.locked():      # its holder is past its slice: go on beside it
            _local.held = False
            return
        if _lock.acquire(timeout=max(0.0005, min(slice_left, deadline - now))):
            _taken_at = time.monotonic()
            _local.held = True
            return
        now = time.monotonic()
        if now >= deadline:
            _local.held = False
            return


def leave() -> None:
    """This thread is about to wait (or its request has ended): let the
    next request run. Harmless on a thread that does not hold the turn."""
    if getattr(_local, "held", False):
        _local.held = False
        _lock.release()


def held() -> bool:
    return getattr(_local, "held", False)


def overdue() -> bool:
    """Whether this thread holds the turn and its slice is over."""
    return getattr(_local, "held", False) and time.monotonic() - _taken_at > SLICE_SECONDS
