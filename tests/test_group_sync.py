"""Small writes are durable before they are acknowledged, and concurrent
writers share their fsyncs (group commit) on SQLite."""
from __future__ import annotations

import os
import statistics
import threading
import time

from sqlalchemy import text

from providers.meta.db import Database


def test_each_write_is_synced_and_concurrent_writers_share_syncs(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    with db.write() as c:
        c.execute(text("CREATE TABLE t (n INTEGER)"))
    synced_files, real_fsync = [], os.fsync

    def slow_fsync(fd):                       # a disk that takes 30 ms per sync
        synced_files.append(os.readlink(f"/proc/self/fd/{fd}"))
        time.sleep(0.03)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    gs = db.group_sync
    before = gs.syncs
    for i in range(3):                        # one writer: every commit gets its own sync, before returning
        with db.write() as c:
            c.execute(text("INSERT INTO t VALUES (:n)"), {"n": i})
        assert gs.syncs == before + i + 1 and gs.done >= gs.requested
    assert all(f.endswith("g.db-wal") for f in synced_files)

    def writer(n):
        with db.write() as c:
            c.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    before = gs.syncs
    threads = [threading.Thread(target=writer, args=(100 + i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = gs.syncs - before
    assert 1 <= shared < 32 / 2, shared      # 32 commits, far fewer syncs
    assert gs.done == gs.requested            # every commit was covered by a sync when its writer returned
    with db.read() as c:
        assert c.execute(text("SELECT count(*) FROM t")).scalar() == 35
    db.dispose()


def _hold_in_child(db, go, held) -> int:
    """Fork a worker that holds a write transaction until told to commit."""
    pid = os.fork()
    if pid == 0:
        try:
            with db.write() as c:
                c.execute(text("INSERT INTO t VALUES (1)"))
                os.write(held[1], b"x")
                os.read(go[0], 1)
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.read(held[0], 1) == b"x"
    return pid


def test_writers_of_two_processes_wait_in_line_and_get_in_when_the_lock_is_free(tmp_path):
    """A forked worker opens the writers' lock file anew: while it holds a
    write transaction, the parent's writer waits for it, in line rather than
    in SQLite's sleeps that grow to 100 ms, and gets in as soon as the child
    commits."""
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    with db.write() as c:
        c.execute(text("CREATE TABLE t (n INTEGER)"))
    late = []
    for _ in range(5):
        go, held = os.pipe(), os.pipe()
        pid = _hold_in_child(db, go, held)
        waited = {}

        def writer():
            started = time.monotonic()
            with db.write() as c:
                waited["s"] = time.monotonic() - started
                c.execute(text("INSERT INTO t VALUES (2)"))
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.24)                           # SQLite alone would look again at 0.228 s, then 0.328 s
        assert "s" not in waited, "a writer got in while another process held a write transaction"
        released = time.monotonic()
        os.write(go[1], b"x")
        t.join(10)
        assert os.waitpid(pid, 0)[1] == 0
        late.append(time.monotonic() - released)
        for fd in (*go, *held):
            os.close(fd)
    assert statistics.median(late) < 0.04, f"writers got in {late} s after the lock was free"
    with db.read() as c:
        assert sorted(r[0] for r in c.execute(text("SELECT n FROM t"))) == [1] * 5 + [2] * 5
    with db.write():                               # re-entrant in a thread: a nested use does not hang
        with db.writers:
            pass
