"""The filesystem API as a front-end sees it: versions, trash, snapshots,
restore, purge, exclusion, quota, atomic publish."""
import os
import time

import pytest

from providers.errors import (AlreadyExists, ChecksumMismatch, Conflict, DirectoryNotEmpty, InvalidPath, IsADirectory,
                              NotADirectory, NotFound, PermissionDenied, QuotaExceeded)


def test_write_read_and_overwrite_keeps_versions(alice):
    alice.mkdir("/docs")
    alice.write_bytes("/docs/a.txt", b"one")
    alice.write_bytes("/docs/a.txt", b"two!")
    assert alice.read_bytes("/docs/a.txt") == b"two!"
    vs = alice.versions("/docs/a.txt")
    assert [v.size for v in vs] == [4, 3] and vs[0].current and not vs[1].current
    listed = alice.list("/.coffer/versions/docs/a.txt")
    assert [e.size for e in listed] == [4, 3]
    assert alice.read_bytes(listed[1].path) == b"one"
    assert vs[0].author == "alice"


def test_root_never_lists_the_hidden_tree(alice):
    alice.write_bytes("/f", b"x")
    assert [e.name for e in alice.list("/")] == ["f"]
    assert {e.name for e in alice.list("/.coffer")} == {"versions", "trash", "snapshots"}


def test_hidden_tree_is_read_only(alice):
    alice.write_bytes("/f", b"x")
    for op in (lambda: alice.write_bytes("/.coffer/x", b"1"), lambda: alice.mkdir("/.coffer/versions/d"),
               lambda: alice.move("/f", "/.coffer/f"), lambda: alice.set_mtime("/.coffer/versions/f", 1)):
        with pytest.raises(PermissionDenied):
            op()
    assert alice.read_bytes("/f") == b"x"


def test_delete_goes_to_trash_and_restore_brings_it_back(alice):
    alice.makedirs("/p/q")
    alice.write_bytes("/p/q/f.bin", b"data")
    alice.delete("/p")
    assert not alice.exists("/p")
    stamps = alice.list("/.coffer/trash")
    assert len(stamps) == 1
    inside = alice.list(stamps[0].path + "/p/q")
    assert [e.name for e in inside] == ["f.bin"]
    alice.copy(stamps[0].path + "/p", "/p")            # restoring is copying out
    assert alice.read_bytes("/p/q/f.bin") == b"data"


def test_restore_by_version_and_by_time(alice):
    alice.write_bytes("/f", b"v1")
    t1 = time.time()
    time.sleep(0.01)
    alice.write_bytes("/f", b"v2")
    old = [v for v in alice.versions("/f") if not v.current][0]
    alice.restore("/f", version_id=old.id, to="/g")
    assert alice.read_bytes("/g") == b"v1"
    alice.restore("/f", at=t1 + 0.001)
    assert alice.read_bytes("/f") == b"v1"
    assert len(alice.versions("/f")) == 3              # restoring is itself a new version


def test_snapshot_shows_tree_as_it_was_across_moves_and_deletes(alice):
    alice.makedirs("/a")
    alice.write_bytes("/a/x", b"old")
    time.sleep(0.01)
    at = time.time()
    time.sleep(0.01)
    alice.move("/a", "/b")
    alice.write_bytes("/b/x", b"new")
    alice.write_bytes("/b/y", b"later")
    alice.delete("/b/x")
    from providers.vfs import stamp
    snap = "/.coffer/snapshots/" + stamp(int(at * 1e6))
    assert [e.name for e in alice.list(snap)] == ["a"]
    assert [e.name for e in alice.list(snap + "/a")] == ["x"]
    assert alice.read_bytes(snap + "/a/x") == b"old"


def test_purge_in_hidden_tree_removes_for_good(alice, storage):
    alice.write_bytes("/f", os.urandom(5000))
    alice.write_bytes("/f", os.urandom(5000))
    used = alice.quota().used
    old = alice.list("/.coffer/versions/f")[1]
    with pytest.raises(Conflict):
        alice.delete(alice.list("/.coffer/versions/f")[0].path)   # the current one
    alice.delete(old.path)
    assert len(alice.versions("/f")) == 1
    assert alice.quota().used < used
    alice.delete("/f")
    alice.delete("/.coffer/trash/" + alice.list("/.coffer/trash")[0].name)
    assert alice.list("/.coffer/trash") == []
    assert alice.quota().used == 0
    assert list(storage.blobs.names()) == []


def test_purge_removes_live_file_versions_and_trash(alice):
    alice.write_bytes("/d/x", b"1") if alice.exists("/d") else None
    alice.mkdir("/d")
    alice.write_bytes("/d/x", b"1")
    alice.delete("/d/x")
    alice.write_bytes("/d/x", b"2")
    alice.purge("/d/x")
    assert not alice.exists("/d/x")
    assert alice.list("/.coffer/trash") == []


def test_excluded_files_keep_no_history(alice):
    for i in range(3):
        alice.write_bytes("/~$report.docx", b"lock %d" % i)
        alice.write_bytes("/report.docx", b"text %d" % i)
    assert len(alice.versions("/~$report.docx")) == 1
    assert len(alice.versions("/report.docx")) == 3


def test_pattern_changes_reach_an_open_session_at_its_next_write_or_copy(storage, alice):
    from providers import lifecycle
    for i in range(3):
        alice.write_bytes("/notes.bak", b"note %d" % i)
    lifecycle.change_exclusions(storage, "alice", add="*.bak")      # as coffer-admin does, from outside
    assert len(alice.versions("/notes.bak")) == 3                   # kept until the file's next write
    alice.write_bytes("/src", b"copied in")
    alice.copy("/src", "/notes.bak")                                # a copy onto it is a write too
    assert len(alice.versions("/notes.bak")) == 1
    alice.write_bytes("/notes.bak", b"again")
    assert len(alice.versions("/notes.bak")) == 1
    lifecycle.change_exclusions(storage, "alice", remove="*.bak")
    alice.write_bytes("/notes.bak", b"kept again")
    assert len(alice.versions("/notes.bak")) == 2


def test_drop_history_keeps_current_and_trash_versions_batch_by_batch(storage, alice, monkeypatch):
    from providers import lifecycle, purging
    from providers.meta import users as uq
    monkeypatch.setattr(purging, "DROP_BATCH", 2)
    for name in ("a.log", "b.log", "c.log", "d.log", "keep.txt"):
        for i in range(3):
            alice.write_bytes("/" + name, b"%s %d" % (name.encode(), i))
    alice.delete("/d.log")
    used = alice.quota().used
    pats, dropped = lifecycle.exclude_dropping_history(storage, alice, "*.log")
    assert "*.log" in pats and dropped["files"] == 4 and dropped["versions"] == 8
    assert 0 < dropped["freed_bytes"] == used - alice.quota().used
    for name in ("a.log", "b.log", "c.log"):
        assert [v.current for v in alice.versions("/" + name)] == [True]
        assert alice.read_bytes("/" + name) == b"%s 2" % name.encode()
    assert len(alice.versions("/keep.txt")) == 3
    assert len(alice.list("/.coffer/versions/d.log")) == 1           # the deleted file keeps its trash entry
    alice.restore("/d.log")
    assert alice.read_bytes("/d.log") == b"d.log 2"
    with storage.db.read() as c:
        events = uq.audit_events_list(c, alice.user.id, event="history_dropped")
    assert [e["detail"]["files"] for e in events] == [2, 2]          # one event per batch
    assert lifecycle.exclude_dropping_history(storage, alice, "*.log")[1]["files"] == 0   # run again: done


def test_quota_refuses_and_keeps_previous_version(storage):
    storage.accounts.create("small", "small-password", quota=200_000)
    v = storage.open_account("small", "small-password")
    v.write_bytes("/f", b"keep me")
    with pytest.raises(QuotaExceeded) as e:
        v.write_bytes("/f", os.urandom(300_000))
    assert "quota" in str(e.value)
    assert v.read_bytes("/f") == b"keep me"
    q = v.quota()
    assert q.limit == 200_000 and q.used == 4096 and q.available == q.limit - q.used   # a small file: one block
    # ints on every backend (PostgreSQL sums to NUMERIC): SFTP statvfs packs them
    assert type(q.used) is int and type(q.available) is int and type(storage.accounts.usage(v.user.id)) is int
    assert len(list(storage.blobs.names())) == 1        # the refused upload left nothing behind


def test_atomic_publish_and_abort(alice):
    alice.write_bytes("/f", b"old")
    w = alice.open_write("/f")
    w.write(b"new content")
    assert alice.read_bytes("/f") == b"old"             # readers see the old version until commit
    w.commit()
    assert alice.read_bytes("/f") == b"new content"
    w = alice.open_write("/g")
    w.write(os.urandom(3 * 1024 * 1024))
    w.abort()
    assert not alice.exists("/g")


def test_errors_for_bad_operations(alice):
    alice.mkdir("/d")
    alice.write_bytes("/d/f", b"x")
    with pytest.raises(AlreadyExists):
        alice.mkdir("/d")
    with pytest.raises(NotFound):
        alice.stat("/nope")
    with pytest.raises(NotADirectory):
        alice.list("/d/f")
    with pytest.raises(NotADirectory):
        alice.write_bytes("/d/f/g", b"x")
    with pytest.raises(IsADirectory):
        alice.write_bytes("/d", b"x")
    with pytest.raises(NotFound):
        alice.write_bytes("/missing/f", b"x")
    with pytest.raises(Conflict):
        alice.move("/d", "/d/inner")
    with pytest.raises(DirectoryNotEmpty):
        alice.rmdir("/d")
    with pytest.raises(InvalidPath):
        alice.write_bytes("/a/../b", b"x")
    with pytest.raises(AlreadyExists):
        alice.move("/d/f", "/d/f2", overwrite=False) if alice.write_bytes("/d/f2", b"y") else None


def test_move_overwrite_sends_target_to_trash(alice):
    alice.write_bytes("/a", b"A")
    alice.write_bytes("/b", b"B")
    alice.move("/a", "/b")
    assert alice.read_bytes("/b") == b"A" and not alice.exists("/a")
    stamp = alice.list("/.coffer/trash")[0].path
    assert alice.read_bytes(stamp + "/b") == b"B"


def test_copy_shares_content_without_new_storage(alice):
    alice.write_bytes("/big", os.urandom(2_000_000))
    used = alice.quota().used
    alice.mkdir("/dir")
    alice.copy("/big", "/dir/big2")
    alice.copy("/dir", "/dir2")
    assert alice.read_bytes("/dir2/big2") == alice.read_bytes("/big")
    assert alice.quota().used == used
    assert alice.hashes("/dir2/big2") == alice.hashes("/big")


def test_checksums_while_writing_and_verified(alice):
    import hashlib
    small, big = b"small file", os.urandom(2 * 1024 * 1024 + 5)
    alice.write_bytes("/small", small)        # small streams always get theirs
    assert alice.hashes("/small") == {a: hashlib.new(a, small).hexdigest() for a in ("md5", "sha1", "sha256")}
    with alice.open_write("/big", checksums=True) as w:
        w.write(big)
    assert alice.hashes("/big") == {a: hashlib.new(a, big).hexdigest() for a in ("md5", "sha1", "sha256")}
    with alice.open_write("/big2", expect={"sha1": hashlib.sha1(big).hexdigest().upper()}) as w:
        w.write(big)
    assert alice.hashes("/big2")["md5"] == hashlib.md5(big).hexdigest()
    # a client's checksum that does not match what arrived refuses the upload: nothing changes
    used = alice.quota().used
    for data in (big[:-1] + bytes([big[-1] ^ 0xFF]), b"short"):     # the last byte changed; cut short
        with pytest.raises(ChecksumMismatch, match="SHA1 checksum"):
            with alice.open_write("/big", expect={"sha1": hashlib.sha1(big).hexdigest()}) as w:
                w.write(data)
    assert alice.read_bytes("/big") == big
    assert len(alice.versions("/big")) == 1
    assert alice.quota().used == used


def test_unicode_names_nfc_nfd_same_file(alice):
    alice.write_bytes("/Cafe\u0301.txt", b"nfd")
    assert alice.read_bytes("/Caf\u00e9.txt") == b"nfd"
    assert [e.name for e in alice.list("/")] == ["Caf\u00e9.txt"]
    alice.write_bytes("/CASE", b"1")
    alice.write_bytes("/case", b"2")
    assert alice.read_bytes("/CASE") == b"1"


def test_ranges_and_hashes(alice):
    import hashlib
    data = os.urandom(3 * 1024 * 1024 + 123)
    alice.write_bytes("/r", data)
    with alice.open_read("/r") as r:
        r.seek(1024 * 1024 - 10)
        assert r.read(100) == data[1024 * 1024 - 10:1024 * 1024 + 90]
        assert b"".join(r.iter_range(len(data) - 50)) == data[-50:]
    # a large file written without asking for checksums has none until asked; then they are kept
    assert alice.hashes("/r") == {}
    assert alice.hashes("/r", compute=("md5",)) == {"md5": hashlib.md5(data).hexdigest()}
    assert alice.hashes("/r", compute=("sha1", "sha256")) == {
        "md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest()}
    assert alice.hashes("/r")["sha1"] == hashlib.sha1(data).hexdigest()
    # sequential reads of every size (the blob store is told what comes next), and a jump back
    for size in (1000, 65536, 300_000, 1024 * 1024, 5 * 1024 * 1024):
        with alice.open_read("/r") as r:
            assert b"".join(iter(lambda: r.read(size), b"")) == data
            r.seek(17)
            assert r.read(1024 * 1024) == data[17:17 + 1024 * 1024]


def test_random_writes_out_of_order_and_resume(alice):
    data = os.urandom(5 * 1024 * 1024)
    f = alice.open_random("/r", truncate=True)
    blocks = list(range(0, len(data), 32768))
    for i in range(0, len(blocks), 8):                 # arrive shuffled within a window
        for off in reversed(blocks[i:i + 8]):
            f.pwrite(off, data[off:off + 32768])
    f.commit()
    assert alice.read_bytes("/r") == data
    f = alice.open_random("/r")                         # resume: overwrite the tail
    f.pwrite(len(data) - 5, b"HELLO!")
    f.commit()
    assert alice.read_bytes("/r") == data[:-5] + b"HELLO!"
    f = alice.open_random("/r")
    f.truncate(10)
    assert f.pread(0, 20) == data[:10]
    f.commit()
    assert alice.read_bytes("/r") == data[:10]


def test_dedup_many_versions_of_a_large_file_cost_little(alice):
    size = 16 * 1024 * 1024
    data = bytearray(os.urandom(size))
    for i in range(7):
        off = (i * 977_123) % (size - 65536)
        data[off:off + 65536] = os.urandom(65536)
        alice.write_bytes("/big", bytes(data))
    assert alice.read_bytes("/big") == bytes(data)
    assert alice.quota().used < 2 * size


def test_retention_thins_old_versions(alice, storage):
    from providers import retention
    day = retention.DAY
    now = 1_000 * day
    times = [now - m * 60_000_000 for m in range(0, 50)]            # every minute for 50 min
    times += [now - h * retention.HOUR for h in range(2, 30)]        # hourly
    times += [now - d * day - 5 for d in range(2, 400)]              # daily for > a year
    keep = retention.thin(times, now, retention.Policy())
    ages = sorted((now - times[i]) // day for i in keep)
    assert 0 in keep and all(times[i] >= now - 365 * day for i in keep)
    assert set(range(50)) <= keep                                   # the last hour: every version
    assert len(keep - set(range(1, 50))) <= 100                     # max_versions counts the older ones
    assert len([a for a in ages if a > 30]) < 60                     # weekly after a month
    assert retention.over_share([(1, 1, 60), (2, 2, 60)], 200, retention.Policy()) == [1]


def test_expire_empties_old_trash(alice):
    alice.write_bytes("/f", b"x")
    alice.delete("/f")
    assert alice.expire(now_us=int((time.time() + 31 * 86400) * 1e6))["trash"] == 1
    assert alice.list("/.coffer/trash") == []


def test_mtime_mode_and_props(alice):
    alice.write_bytes("/f", b"x", mtime=1_000_000)
    assert alice.stat("/f").mtime == 1_000_000
    alice.set_mtime("/f", 2_000_000.5)
    alice.set_mode("/f", 0o100640)
    e = alice.stat("/f")
    assert e.mtime == 2_000_000.5 and e.mode == 0o640
    alice.set_props("/f", {"{urn:x}color": b"<x:color>red</x:color>"})
    assert alice.get_props("/f") == {"{urn:x}color": b"<x:color>red</x:color>"}
    alice.set_props("/f", {"{urn:x}color": None})
    assert alice.get_props("/f") == {}


def test_many_sessions_creating_one_name_at_once(storage):
    """Eight sessions make the same new folder and upload the same new file
    at the same moment (rclone's parallel transfers do): one folder is made
    and the others hear it exists; every upload lands as a version. On
    PostgreSQL, check-then-insert raced and the losers got unique-index errors."""
    import threading
    from collections import Counter
    storage.accounts.create("many", "many-password")
    sessions = [storage.open_account("many", "many-password") for _ in range(8)]
    outcomes = Counter()

    def attempt(fn):
        try:
            fn()
            outcomes["ok"] += 1
        except AlreadyExists:
            outcomes["exists"] += 1
        except Exception as e:                    # anything else is the bug
            outcomes[type(e).__name__] += 1

    for i in range(5):
        threads = [threading.Thread(target=attempt, args=(lambda v=v, i=i: v.mkdir(f"/d{i}"),)) for v in sessions]
        threads += [threading.Thread(target=attempt, args=(lambda v=v, i=i, k=k: v.write_bytes(
            f"/f{i}.txt", b"same bytes %d" % (k % 2)),)) for k, v in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert outcomes == {"ok": 5 + 40, "exists": 35}, outcomes
    for i in range(5):
        assert len(sessions[0].versions(f"/f{i}.txt")) == 8
    for v in sessions:
        v.close()
