"""Small writes are durable before they are acknowledged, and concurrent
writers share their fsyncs (group commit) on SQLite."""
from __future__ import annotations

import os
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
