"""The periodic jobs run in one process among all workers and nodes, and
another takes them over when that one dies, neither repeating nor skipping."""
from __future__ import annotations

import time

from admin_harness import Admin
from providers.schedule import LEASE_SECONDS, Scheduler


def test_one_holder_runs_the_jobs_and_another_takes_over_when_it_stops(storage):
    storage.accounts.create("alice", "alice-password")
    a, b = Scheduler(storage, holder="node-a:1:x"), Scheduler(storage, holder="node-b:2:y")
    first = a.tick(now=1000)
    assert first["retention_accounts"] == 1                      # a runs the hourly retention
    assert b.tick(now=1010) == {"held_by": "node-a:1:x"}          # b, on another node, does not
    assert a.tick(now=1060)["retention_accounts"] == 0            # a renews; retention not due yet
    assert b.tick(now=1060 + LEASE_SECONDS - 1) == {"held_by": "node-a:1:x"}
    # a stops ticking (killed): once its lease has run out, b goes on where a stopped
    taken = b.tick(now=1060 + LEASE_SECONDS + 1)
    assert "held_by" not in taken and taken["retention_accounts"] == 0     # not repeated: run at 1000
    assert a.tick(now=1060 + LEASE_SECONDS + 5) == {"held_by": "node-b:2:y"}
    assert b.tick(now=1000 + 3600)["retention_accounts"] == 1     # and not skipped: due an hour after a's
    assert storage.leases.holder("maintenance", now=1000 + 3600) == "node-b:2:y"


def test_gc_runs_once_at_a_time_across_processes_and_admin_waits_its_turn(storage, tmp_path):
    a, b = Scheduler(storage, holder="node-a:1:x"), Scheduler(storage, holder="node-b:2:y")
    assert not a.start_gc_when_due(0.0)                          # the first gc is due an hour after start
    assert not b.start_gc_when_due(10.0)                         # the timetable is shared
    taken, _ = storage.leases.take("gc", "node-c:3:z", LEASE_SECONDS, now=3600.0)   # a gc running elsewhere
    assert taken
    assert not a.start_gc_when_due(3600.0)
    storage.leases.give_up("gc", "node-c:3:z")
    assert a.start_gc_when_due(3601.0)
    a.join(60)
    assert not b.start_gc_when_due(3602.0)                       # done: the next one is a day later
    assert storage.leases.holder("gc", now=3603.0) is None       # given back when it finished


def test_admin_gc_refuses_while_a_server_runs_one(tmp_path):
    admin = Admin(tmp_path)
    st = admin.storage()
    try:
        st.leases.take("gc", "node-a:1:x", LEASE_SECONDS, now=time.time())
        line = admin.fails("gc")
        assert "a gc is running already, in node-a:1:x" in line
        st.leases.give_up("gc", "node-a:1:x")
        assert "orphan_blobs_removed" in admin.ok("gc", "--json")
        assert st.leases.holder("gc") is None                     # admin gave it back
    finally:
        st.close()
