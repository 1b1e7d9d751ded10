"""Pack blobs: an upload's chunks share a few blob files, gc rewrites packs
that are mostly dead space, and reads, fsck and tampering behave as with a
blob per chunk."""
from __future__ import annotations

import os
import time

import pytest

from providers.blobs import LocalBlobStore
from providers.errors import IntegrityError
from providers.storage import Storage

from conftest import make_config

CHUNK = 4096


@pytest.fixture
def small(tmp_path, monkeypatch):
    """Storage with 4 KiB chunks and packs of four chunks, so a few hundred
    KiB span many packs."""
    monkeypatch.setattr(LocalBlobStore, "PACK_BYTES", 4 * CHUNK)
    cfg = make_config(tmp_path, blobs="local", storage={"chunk_size": CHUNK})
    st = Storage.open(cfg)
    st.accounts.create("alice", "alice-password")
    yield st, st.open_account("alice", "alice-password")
    st.close()


def blob_files(st):
    return {name: size for name, _, size in st.blobs.entries()}


def test_an_upload_fills_few_blobs_and_reads_back_across_them(small):
    st, v = small
    data = os.urandom(CHUNK * 40 + 123)
    v.write_bytes("/big.bin", data)
    files = blob_files(st)
    assert len(files) == 11                       # 41 chunks, four to a blob
    assert v.read_bytes("/big.bin") == data
    with v.open_read("/big.bin") as r:            # ranges that cross chunk and pack boundaries
        for off, n in ((0, 10), (CHUNK * 4 - 5, 10), (CHUNK * 7 + 3, CHUNK * 6), (len(data) - 50, 100)):
            r.seek(off)
            assert r.read(n) == data[off:off + n]


def leave_mostly_dead_packs(st, v):
    """Four packs with one live chunk each; returns what /keep.bin and
    /f.bin hold, and the bytes stored before."""
    keep = os.urandom(CHUNK * 16)
    v.write_bytes("/keep.bin", keep)
    first = os.urandom(CHUNK * 16)
    v.write_bytes("/f.bin", first)
    # three chunks of every four change: the first version's packs keep one live chunk each
    second = bytearray(first)
    for i in range(16):
        if i % 4:
            second[i * CHUNK:(i + 1) * CHUNK] = os.urandom(CHUNK)
    v.write_bytes("/f.bin", bytes(second))
    before = sum(blob_files(st).values())
    old = [e for e in v.list("/.coffer/versions/f.bin")][1]
    v.delete(old.path)                            # purge the first version: its packs are now mostly dead
    assert sum(blob_files(st).values()) == before  # purging alone frees no pack space
    st.COMPACT_MIN_BYTES = CHUNK
    return keep, bytes(second), before


def test_gc_rewrites_packs_that_are_mostly_dead(small):
    st, v = small
    keep, second, before = leave_mostly_dead_packs(st, v)
    report = st.gc(grace_seconds=0)
    assert report["packs_rewritten"] == 4
    assert report["bytes_reclaimed"] >= 12 * CHUNK
    assert sum(blob_files(st).values()) <= before - 12 * CHUNK
    assert v.read_bytes("/f.bin") == bytes(second)
    assert v.read_bytes("/keep.bin") == keep
    assert st.fsck()["damaged"] == []
    again = st.gc(grace_seconds=0)                # nothing left to rewrite
    assert again["packs_rewritten"] == 0 and again["orphan_blobs_removed"] == 0


def test_a_reader_goes_on_when_gc_moves_its_chunks(small):
    st, v = small
    data = os.urandom(CHUNK * 16)
    v.write_bytes("/f.bin", data)
    v.write_bytes("/f.bin", os.urandom(CHUNK * 15) + data[-CHUNK:])   # its last chunk stays in an old pack
    with v.open_read("/f.bin") as r:
        head = r.read(CHUNK)
        v.delete(v.list("/.coffer/versions/f.bin")[1].path)
        st.COMPACT_MIN_BYTES = CHUNK
        assert st.gc(grace_seconds=0)["packs_rewritten"] >= 1
        rest = r.read()
    assert head + rest == v.read_bytes("/f.bin")


def test_a_flipped_byte_inside_a_pack_names_only_its_file(small):
    st, v = small
    v.write_bytes("/a.bin", os.urandom(CHUNK * 4))
    b = os.urandom(CHUNK * 4)
    v.write_bytes("/b.bin", b)
    with st.db.read() as c:
        from sqlalchemy import select
        from providers.meta.schema import chunks
        rows = c.execute(select(chunks.c.blob_name, chunks.c.blob_offset).order_by(chunks.c.id)).all()
    name, offset = rows[2]                         # the third chunk of a.bin, inside its pack
    assert offset > 0
    path = st.blobs._path(name)
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        v.read_bytes("/a.bin")
    assert v.read_bytes("/b.bin") == b
    damaged = st.fsck()["damaged"]
    assert [d["files"] for d in damaged] == [["/a.bin"]]


def test_an_aborted_upload_leaves_no_pack(small):
    st, v = small
    w = v.open_write("/gone.bin")
    w.write(os.urandom(CHUNK * 30))
    w.abort()
    assert blob_files(st) == {}
    assert v.list("/") == []


def test_gc_spares_the_packs_of_an_upload_older_than_its_grace(small, monkeypatch):
    """An upload that outlasts gc's grace period keeps its early packs fresh,
    so a gc run meanwhile (from cron, say) takes nothing it still needs."""
    from providers.blobs import LocalPack
    st, v = small
    data = os.urandom(CHUNK * 24)
    w = v.open_write("/long.bin")
    w.write(data[:CHUNK * 12])
    w._drain()
    early = blob_files(st)
    assert len(early) == 3
    two_hours_ago = time.time() - 7200
    for name in early:                               # as if written two hours ago
        os.utime(st.blobs._path(name), (two_hours_ago, two_hours_ago))
    monkeypatch.setattr(LocalPack, "KEEPALIVE", 0.0)  # the upload goes on long after
    w.write(data[CHUNK * 12:])
    w._drain()
    assert st.gc(grace_seconds=3600)["orphan_blobs_removed"] == 0
    w.commit()
    assert v.read_bytes("/long.bin") == data
    assert st.fsck()["damaged"] == []


def test_the_server_runs_gc_an_hour_after_it_starts_then_every_day(small):
    """`coffer serve`'s timer: no one has to remember a cron job for the
    space of thinned versions and the leftovers of a crash to come back."""
    from providers.schedule import Scheduler
    st, v = small
    scheduler = Scheduler(st)                      # the server has just started
    keep, second, before = leave_mostly_dead_packs(st, v)
    st.blobs.put("ab" * 16, b"left by a crash")
    two_hours_ago = time.time() - 7200
    os.utime(st.blobs._path("ab" * 16), (two_hours_ago, two_hours_ago))

    def gc_at(clock):
        started = scheduler.start_gc_when_due(clock)
        if started:
            scheduler.join(60)
        return started

    assert not gc_at(0.0)
    assert not gc_at(3599.0)
    assert st.blobs.exists("ab" * 16)
    assert gc_at(3600.0)
    assert not st.blobs.exists("ab" * 16)
    assert sum(blob_files(st).values()) <= before - 12 * CHUNK
    assert v.read_bytes("/f.bin") == second and v.read_bytes("/keep.bin") == keep
    assert not gc_at(3700.0)                      # the next one a day later
    assert gc_at(3600.0 + 86400)
    assert st.fsck()["damaged"] == []


def test_the_server_timer_leaves_gc_to_cron_when_told(tmp_path):
    from providers.schedule import Scheduler
    st = Storage.open(make_config(tmp_path, blobs="local", storage={"gc_every_hours": 0}))
    try:
        scheduler = Scheduler(st)
        assert not any(scheduler.start_gc_when_due(clock) for clock in (0.0, 3600.0, 1e9))
    finally:
        st.close()


def test_an_upload_is_on_disk_before_it_is_published(small, monkeypatch):
    """Every blob an upload wrote is flushed (fdatasync), and the folders
    it was created in (fsync), before the version is published; nothing
    syncs the whole filesystem, so unrelated writes elsewhere on the disk
    do not hold the upload up."""
    from providers import blobs as blobs_module
    st, v = small
    events = []

    def recorder(kind, real):
        def call(fd):
            events.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
            return real(fd)
        return call

    monkeypatch.setattr(blobs_module.os, "fdatasync", recorder("data", os.fdatasync))
    monkeypatch.setattr(blobs_module.os, "fsync", recorder("full", os.fsync))
    monkeypatch.setattr(blobs_module.os, "sync", lambda: events.append(("everything", "")))
    publish = v.publish
    monkeypatch.setattr(v, "publish", lambda w: (events.append(("publish", "")), publish(w))[1])
    data = os.urandom(CHUNK * 10)
    v.write_bytes("/f.bin", data)
    monkeypatch.undo()
    packs = {str(st.blobs._path(name)) for name in blob_files(st)}
    assert len(packs) == 3
    # on SQLite the published metadata is synced right after (the WAL, by group commit)
    at = events.index(("publish", ""))
    wal = [i for i, (kind, p) in enumerate(events) if p.endswith("-wal")]
    if st.db.is_sqlite:
        assert wal and wal[-1] > at
    events = [e for e in events if not e[1].endswith("-wal")]
    assert events[-1] == ("publish", "")
    before = events[:-1]
    assert {p for kind, p in before if kind == "data"} == packs
    folders = {p for kind, p in before if kind == "full"}
    for p in packs:
        assert os.path.dirname(p) in folders and os.path.dirname(os.path.dirname(p)) in folders
    assert all(kind != "everything" for kind, _ in events)
    assert v.read_bytes("/f.bin") == data


def test_a_folder_entry_is_synced_once_then_only_the_new_file_and_its_folder(tmp_path, monkeypatch):
    """A blob in a fan-out folder made just now syncs the folders above it;
    the next blob there syncs only itself and its folder (two syncs fewer
    per small upload), and a folder never synced in this process is synced."""
    from providers import blobs as blobs_module
    store = blobs_module.LocalBlobStore(tmp_path / "blobs")
    synced = []
    real = os.fsync
    monkeypatch.setattr(blobs_module.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                               real(fd))[1])
    first, second = "abcd" + "0" * 28, "abcd" + "1" * 28
    store.put(first, b"one")
    store.sync([first])
    leaf = str(tmp_path / "blobs" / "ab" / "cd")
    assert synced == [leaf, str(tmp_path / "blobs" / "ab"), str(tmp_path / "blobs")]
    synced.clear()
    store.put(second, b"two")
    store.sync([second])
    assert synced == [leaf]
    synced.clear()
    other = blobs_module.LocalBlobStore(tmp_path / "blobs")      # another process: it knows nothing yet
    third = "abcd" + "2" * 28
    other.put(third, b"three")
    other.sync([third])
    assert synced == [leaf, str(tmp_path / "blobs" / "ab"), str(tmp_path / "blobs")]
