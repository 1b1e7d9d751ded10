"""Small files are kept in the database with their version (one commit,
no blob file per file), and nothing else changes for anyone: they read
back, dedup, share, copy, purge, erase and check like any file; a second
account's files are untouched by what the first does; damage is found by
fsck; gc sweeps an orphaned one (as a crash in an older release could leave
a blob) only after its grace."""
from __future__ import annotations

import os
import time

from sqlalchemy import func, select, update

from backend import damage, database_values
from providers import small_blobs
from providers.meta.schema import small_blobs as small_rows

SMALL, BIG = os.urandom(3000), os.urandom(400_000)


def rows(storage) -> int:
    with storage.db.read() as c:
        return c.execute(select(func.count()).select_from(small_rows)).scalar_one()


def test_small_files_live_in_the_database_and_read_back_for_each_account(storage, alice):
    storage.accounts.create("bob", "bob-password")
    bob = storage.open_account("bob", "bob-password")
    blobs_before = {n for n, _ in storage.blobs.inner.names()}
    alice.write_bytes("/a.txt", SMALL)
    alice.write_bytes("/copy-of-a.txt", SMALL)               # the same content: one stored chunk
    bob.write_bytes("/b.txt", SMALL)                         # another account: its own, under its own key
    alice.write_bytes("/big.bin", BIG)
    assert rows(storage) == 2
    assert len({n for n, _ in storage.blobs.inner.names()} - blobs_before) == 1     # the big file's only
    assert alice.read_bytes("/a.txt") == alice.read_bytes("/copy-of-a.txt") == bob.read_bytes("/b.txt") == SMALL
    assert alice.read_bytes("/big.bin") == BIG
    with alice.open_read("/a.txt") as f:                     # ranges too
        f.seek(1000)
        assert f.read(10) == SMALL[1000:1010]
    assert storage.fsck()["damaged"] == []
    assert SMALL not in b"".join(raw for _, raw in database_values(storage))  # encrypted like any chunk


def test_purge_and_erasure_remove_small_files_at_once_and_spare_the_others(storage, alice):
    from providers import lifecycle
    storage.accounts.create("bob", "bob-password")
    bob = storage.open_account("bob", "bob-password")
    alice.write_bytes("/a.txt", SMALL)
    alice.write_bytes("/keep.txt", b"alice keeps this")
    bob.write_bytes("/b.txt", b"bob's own")
    stored = {n for n, _ in storage.blobs.names() if small_blobs.is_small(n)}
    alice.purge("/a.txt")
    assert rows(storage) == 2 and alice.read_bytes("/keep.txt") == b"alice keeps this"
    gone = stored - {n for n, _ in storage.blobs.names()}
    assert len(gone) == 1
    lifecycle.erase(storage, "alice")
    assert rows(storage) == 1 and bob.read_bytes("/b.txt") == b"bob's own"


def test_a_shared_folder_and_a_copy_keep_reading_after_the_source_goes(storage, alice):
    storage.accounts.create("bob", "bob-password")
    bob = storage.open_account("bob", "bob-password")
    alice.mkdir("/Team")
    alice.write_bytes("/Team/plan.txt", SMALL)
    alice.share_grant("/Team", "bob", "write")
    bob.copy("/Shared/alice/Team/plan.txt", "/mine.txt")             # into bob's own key domain
    alice.purge("/Team/plan.txt")
    assert bob.read_bytes("/mine.txt") == SMALL
    assert storage.fsck()["damaged"] == []


def test_damage_is_found_and_an_orphan_waits_for_the_grace(storage, alice):
    alice.write_bytes("/a.txt", SMALL)
    alice.write_bytes("/b.txt", b"intact")
    name = next(n for n, _ in storage.blobs.names()
                if small_blobs.is_small(n) and len(storage.blobs.get(n)) > 1000)      # a.txt's, the longer one
    damage(storage.blobs, name, 100)
    damaged = storage.fsck()["damaged"]
    assert len(damaged) == 1 and alice.read_bytes("/b.txt") == b"intact"

    orphan = small_blobs.new_name()
    with storage.db.write() as c:
        small_blobs.insert_rows(c, [dict(name=orphan, data=b"left behind", created_us=int(time.time() * 1e6))])
    storage.gc()
    assert storage.blobs.exists(orphan)                      # young: could be an upload in flight
    with storage.db.write() as c:
        c.execute(update(small_rows).where(small_rows.c.name == orphan).values(created_us=0))
    assert storage.gc()["orphan_blobs_removed"] == 1 and not storage.blobs.exists(orphan)
    assert alice.read_bytes("/b.txt") == b"intact"
