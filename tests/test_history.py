"""History by path and its safety from collaborators, in the filesystem API:
a file's versions survive delete and restore, `/.coffer/versions/<path>`
lists every file that has lived at the path, one version purges alone, and a
write collaborator cannot destroy the owner's history (moving out, a burst of
writes, filling the shared folder with old versions)."""
import hashlib
import os
import time

import pytest

from providers import lifecycle, meta, purging, retention
from providers.errors import Conflict, NotFound, PermissionDenied

S = "/Shared/owner/Projects"
DAY = retention.DAY


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listed(vfs, path):
    """SHA-256 of every version listed at /.coffer/versions<path>, newest first."""
    return [sha(vfs.read_bytes(e.path)) for e in vfs.list("/.coffer/versions" + path)]


@pytest.fixture
def pair(storage):
    storage.accounts.create("owner", "owner-password", quota=1_000_000)
    storage.accounts.create("writer", "writer-password")
    o, w = storage.open_account("owner", "owner-password"), storage.open_account("writer", "writer-password")
    o.makedirs("/Projects")
    o.write_bytes("/Projects/plan.txt", b"plan v1")
    o.write_bytes("/Projects/plan.txt", b"plan v2")
    o.share_grant("/Projects", "writer", "write")
    yield o, w
    o.close()
    w.close()


@pytest.fixture
def clock(monkeypatch):
    """Make the next writes happen at a chosen time (seconds ago)."""
    real = meta.now_us

    def at(ago_seconds):
        monkeypatch.setattr(meta, "now_us", lambda: real() - int(ago_seconds * 1e6))
    yield at
    monkeypatch.setattr(meta, "now_us", real)


def test_history_follows_the_path_through_delete_and_restore(alice):
    alice.mkdir("/docs")
    bodies = [b"first", b"second", b"third", b"over sftp"]
    for b in bodies:
        alice.write_bytes("/docs/r.txt", b)
    want = [sha(b) for b in reversed(bodies)]
    alice.delete("/docs/r.txt")
    assert listed(alice, "/docs/r.txt") == want                   # a deleted file's history stays at its path
    stamp = alice.list("/.coffer/trash")[0].path
    alice.copy(stamp + "/docs/r.txt", "/docs/r.txt")            # restore = copy out of the trash
    assert alice.read_bytes("/docs/r.txt") == b"over sftp"
    assert listed(alice, "/docs/r.txt") == want                   # the same file again, every version with it
    assert alice.list("/.coffer/trash") == []
    names = [e.path for e in alice.list("/.coffer/versions/docs/r.txt")]
    alice.delete(names[2])                                        # purges exactly that one
    assert listed(alice, "/docs/r.txt") == [w for i, w in enumerate(want) if i != 2]
    with pytest.raises(NotFound):
        alice.delete(names[2])
    with pytest.raises(Conflict):
        alice.delete(names[0])                                    # the current version: delete the file instead
    assert [v.current for v in alice.versions("/docs/r.txt")] == [True, False, False]


@pytest.mark.parametrize("how", ["move", "restore", "download-upload"])
def test_every_restore_brings_the_history_back(alice, how):
    for b in (b"1", b"22", b"333"):
        alice.write_bytes("/f.txt", b)
    alice.delete("/f.txt")
    trash = alice.list("/.coffer/trash")[0].path + "/f.txt"
    if how == "move":                                             # an SFTP rename, a WebDAV MOVE
        alice.move(trash, "/f.txt", overwrite=False)
        assert alice.list("/.coffer/trash") == []
    elif how == "restore":                                        # coffer-admin restore
        alice.restore("/f.txt")
    else:                                                         # a client without copy: get, then put
        alice.write_bytes("/f.txt", alice.read_bytes(trash))
    got = listed(alice, "/f.txt")
    assert got[-3:] == [sha(b"333"), sha(b"22"), sha(b"1")]
    assert len(got) == (4 if how == "download-upload" else 3)


def test_a_folder_comes_back_whole_and_a_file_replaced_at_its_path_is_listed_too(alice):
    alice.makedirs("/p/q")
    alice.write_bytes("/p/q/a", b"a1")
    alice.write_bytes("/p/q/a", b"a2")
    alice.delete("/p")
    alice.mkdir("/p")                                              # a new folder of the same name
    assert listed(alice, "/p/q/a") == [sha(b"a2"), sha(b"a1")]    # reached through the deleted one
    stamp = alice.list("/.coffer/trash")[0].path
    alice.copy(stamp + "/p", "/p")                                 # the new /p goes to the trash instead
    assert listed(alice, "/p/q/a") == [sha(b"a2"), sha(b"a1")]
    alice.write_bytes("/p/q/b", b"b1")
    alice.write_bytes("/p/q/tmp", b"new content")
    alice.move("/p/q/tmp", "/p/q/b")                               # an editor's save: rename over the file
    assert listed(alice, "/p/q/b") == [sha(b"new content"), sha(b"b1")]
    alice.move("/p/q/b", "/p/q/c")                                 # a rename takes the history along...
    assert listed(alice, "/p/q/c") == [sha(b"new content")]
    assert listed(alice, "/p/q/b") == [sha(b"b1")]                 # ...of that file only


def test_purging_the_newest_version_of_a_deleted_file(alice):
    for b in (b"x1", b"x2"):
        alice.write_bytes("/x", b)
    alice.delete("/x")
    newest = alice.list("/.coffer/versions/x")[0].path
    alice.delete(newest)                                           # allowed: the file is deleted
    trash = alice.list("/.coffer/trash")[0].path + "/x"
    assert alice.read_bytes(trash) == b"x1"                        # the trash entry holds the one before
    alice.delete(alice.list("/.coffer/versions/x")[0].path)
    assert alice.list("/.coffer/trash") == []                      # nothing left of it
    with pytest.raises(NotFound):
        alice.list("/.coffer/versions/x")


def test_snapshots_do_not_show_a_restored_file_while_it_was_deleted(alice):
    alice.write_bytes("/s", b"s")
    time.sleep(0.01)
    alice.delete("/s")
    time.sleep(0.01)
    during = time.time()
    time.sleep(0.01)
    alice.restore("/s")
    at = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(during)) + f".{int(during * 1e6) % 1_000_000:06d}Z"
    assert [e.name for e in alice.list("/.coffer/snapshots/" + at)] == []
    assert alice.read_bytes("/s") == b"s"


def test_audit_records_purges(storage, alice):
    for b in (b"1", b"2", b"3"):
        alice.write_bytes("/a", b)
    alice.delete(alice.list("/.coffer/versions/a")[-1].path)
    alice.delete("/a")
    alice.delete("/.coffer/trash")
    events = [e for e in lifecycle.audit_events(storage, "alice") if e["event"] == "history_purged"]
    assert [(e["detail"]["from"], e["detail"]["versions"]) for e in events] == [("versions", 1), ("trash", 2)]
    alice.write_bytes("/b", b"b")
    alice.delete("/b")
    alice.expire(now_us=int((time.time() + 31 * 86400) * 1e6))
    [e] = lifecycle.audit_events(storage, "alice", event="retention_purged")
    assert e["detail"]["trash"] == 1 and e["actor"] == "system"


# -- collaborators ------------------------------------------------------------------------------

def test_a_collaborator_moving_a_file_out_leaves_the_owner_every_version(storage, pair):
    o, w = pair
    w.write_bytes(S + "/plan.txt", b"plan v3")
    w.move(S + "/plan.txt", "/mine.txt")
    assert w.read_bytes("/mine.txt") == b"plan v3"
    assert listed(w, "/mine.txt") == [sha(b"plan v3")]               # the collaborator gets a copy, no history
    w.delete(w.list("/.coffer/versions/mine.txt")[0].path.rsplit("/", 1)[0])   # purge their copy for good
    assert not w.exists("/mine.txt")
    assert not o.exists("/Projects/plan.txt")
    want = [sha(b"plan v3"), sha(b"plan v2"), sha(b"plan v1")]
    assert listed(o, "/Projects/plan.txt") == want                   # the owner's history is whole
    trash = [e for e in o.list("/.coffer/trash")]
    assert o.read_bytes(trash[0].path + "/Projects/plan.txt") == b"plan v3"
    with pytest.raises(PermissionDenied):
        w.delete(w.list("/.coffer/versions" + S + "/plan.txt")[-1].path)   # and they cannot purge it there
    o.restore("/Projects/plan.txt")
    assert listed(o, "/Projects/plan.txt") == want
    [e] = lifecycle.audit_events(storage, "writer", event="share_moved_out")
    assert e["detail"]["owner"] == o.user.id


def test_a_collaborator_moving_a_folder_out_leaves_the_owner_the_folder(pair):
    o, w = pair
    o.makedirs("/Projects/sub")
    o.write_bytes("/Projects/sub/a", b"a1")
    o.write_bytes("/Projects/sub/a", b"a2")
    w.move(S + "/sub", "/sub")
    assert w.read_bytes("/sub/a") == b"a2" and len(w.list("/.coffer/versions/sub/a")) == 1
    assert listed(o, "/Projects/sub/a") == [sha(b"a2"), sha(b"a1")]


def test_the_owner_moving_out_of_their_own_shared_folder_keeps_the_history(pair):
    o, _ = pair
    o.move("/Projects/plan.txt", "/plan.txt")
    assert listed(o, "/plan.txt") == [sha(b"plan v2"), sha(b"plan v1")]
    assert o.list("/.coffer/trash") == []


def test_a_burst_of_collaborator_writes_evicts_none_of_the_owners_versions(pair, clock):
    o, w = pair
    for days in (20, 3, 2, 1):
        clock(days * 86400)
        o.write_bytes("/Projects/plan.txt", f"owner {days} days ago".encode())
    clock(0)
    before = listed(o, "/Projects/plan.txt")
    for i in range(110):                                              # more than max_versions (100)
        w.write_bytes(S + "/plan.txt", b"burst %d" % i)
    after = listed(o, "/Projects/plan.txt")
    assert after[:110] == [sha(b"burst %d" % i) for i in reversed(range(110))]
    assert after[110:] == before
    o.expire()                                                         # the periodic job: still there
    assert listed(o, "/Projects/plan.txt")[110:] == before
    later = int((time.time() + 2 * 3600) * 1e6)                        # two hours on, the hourly tier thins
    o.expire(now_us=later)                      # the burst (and v1, v2 of the same hour) to the hour's newest
    assert listed(o, "/Projects/plan.txt") == after[:2] + before[2:]


def test_old_versions_in_a_shared_folder_never_thin_the_owners_other_files(storage, pair, clock):
    o, w = pair
    # the minimum age that spares young versions from quota pressure is off here (tested below)
    storage.accounts.update(o.user.name, settings={"retention": {"min_age_days": 0}})
    o.expire = lambda: purging.expire_account(storage, storage.accounts.get(o.user.name))
    owner_bodies = [os.urandom(60_000) for _ in range(5)]
    for i, b in enumerate(owner_bodies):
        clock((10 - i) * 86400)
        o.write_bytes("/notes.bin", b)
    clock(0)
    for _ in range(6):
        w.write_bytes(S + "/big.bin", os.urandom(60_000))
    # old versions: 4 x 60 kB at home, 5 x 60 kB in the shared folder: above half of the 1 MB quota
    # together, below it each
    counts = o.expire()
    assert counts["over_quota_share"] == 0
    assert listed(o, "/notes.bin") == [sha(b) for b in reversed(owner_bodies)]
    assert len(listed(o, "/Projects/big.bin")) == 6
    for _ in range(4):                                                 # the shared folder alone over half
        w.write_bytes(S + "/big.bin", os.urandom(60_000))
    assert o.expire()["over_quota_share"] > 0
    assert listed(o, "/notes.bin") == [sha(b) for b in reversed(owner_bodies)]
    assert len(listed(o, "/Projects/big.bin")) < 10


def test_quota_pressure_never_removes_versions_younger_than_the_minimum_age(storage, pair):
    """A collaborator (or ransomware) writing large new versions fills the
    quota share of old versions; the week-old and younger ones stay."""
    o, w = pair
    for _ in range(12):
        w.write_bytes(S + "/big.bin", os.urandom(60_000))
    counts = o.expire()
    assert counts["over_quota_share"] == 0
    assert len(listed(o, "/Projects/big.bin")) == 12
    later = int((time.time() + 8 * 86400) * 1e6)          # a week on, they may go
    assert o.expire(now_us=later)["versions"] > 0


def test_collaborators_see_deleted_files_only_from_when_they_joined(storage, pair):
    o, w = pair
    o.write_bytes("/Projects/before.txt", b"secret draft")
    o.delete("/Projects/before.txt")
    storage.accounts.create("late", "late-password")
    late = storage.open_account("late", "late-password")
    o.share_grant("/Projects", "late", "read")
    o.write_bytes("/Projects/after.txt", b"seen")
    o.delete("/Projects/after.txt")
    names = {e.name for e in late.list("/.coffer/versions" + S)}
    assert "after.txt" in names and "before.txt" not in names
    with pytest.raises(NotFound):
        late.list("/.coffer/versions" + S + "/before.txt")
    assert "before.txt" in {e.name for e in w.list("/.coffer/versions" + S)}   # the earlier one saw it live
    assert listed(o, "/Projects/before.txt") == [sha(b"secret draft")]


def test_a_versions_folder_lists_deleted_files_page_by_page_too(alice):
    """SFTP reads a folder a page at a time: a versions folder must list the
    deleted files' histories there too, as the whole listing does."""
    alice.mkdir("/d")
    for i in range(7):
        alice.write_bytes(f"/d/f{i}.txt", b"v%d" % i)
    alice.delete("/d/f2.txt")
    alice.delete("/d/f5.txt")
    whole = sorted(e.name for e in alice.list("/.coffer/versions/d"))
    paged, cursor = [], None
    while True:
        page, cursor = alice.list_page("/.coffer/versions/d", cursor, limit=3)
        paged += [e.name for e in page]
        if cursor is None:
            break
    assert whole == [f"f{i}.txt" for i in range(7)]
    assert sorted(paged) == whole and len(paged) == len(whole)
