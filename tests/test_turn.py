"""The turn (providers/turn.py): request threads of one process take turns,
and none can keep the others waiting longer than a slice."""
from __future__ import annotations

import threading
import time

from providers import turn


def _take_timed():
    """take() on this thread: (whether it holds the turn, seconds waited)."""
    started = time.monotonic()
    turn.take()
    got = (turn.held(), time.monotonic() - started)
    turn.leave()
    return got


def _in_thread(fn):
    out = {}

    def run():
        out["value"] = fn()
    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_request_waits_for_a_short_holder_and_then_holds_the_turn():
    turn.take()
    assert turn.held()

    t, out = _in_thread(_take_timed)
    time.sleep(turn.SLICE_SECONDS / 4)
    turn.leave()                      # the holder's request ended within its slice
    t.join(5)
    held, waited = out["value"]
    assert held, "the waiting request did not get the turn when it was left"
    assert waited < turn.WAIT_SECONDS
    assert not turn.held()


def test_a_holder_past_its_slice_does_not_stop_the_others():
    turn.take()                       # a long listing that never waits on anything

    t, out = _in_thread(_take_timed)
    t.join(5)
    held, waited = out["value"]
    assert not held                   # it went on beside the holder
    assert waited < turn.SLICE_SECONDS + 0.05, f"waited {waited:.3f} s behind a holder past its slice"
    assert turn.overdue()             # the holder is told its slice is over (a long answer then leaves)
    turn.leave()
    assert not turn.held() and not turn.overdue()


def test_leave_on_a_thread_without_the_turn_does_nothing():
    turn.take()
    t, out = _in_thread(lambda: (turn.leave(), turn.held()))
    t.join(5)
    assert out["value"] == (None, False)
    assert turn.held()                # another thread's leave did not take this one's turn
    turn.leave()
