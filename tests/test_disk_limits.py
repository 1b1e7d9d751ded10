"""What one account may make the server hold outside its stored files: the
spools of files open for writing, dead properties, lock owners, small files,
listing cursors. Each against a real `coffer serve`, with a second account
that must not suffer."""
from __future__ import annotations

import os
import time

import paramiko
import pytest

from conftest import tmpfs
from sftp_harness import SftpServer

MiB = 1024 * 1024
TWO = {"alice": ("alice-pw-1", "managed"), "bob": ("bob-pw-22", "managed")}


def sftp_client(srv, user):
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", srv.port, username=user, password=srv.accounts[user][0], allow_agent=False,
              look_for_keys=False, timeout=30)
    return c, c.open_sftp()


def used_bytes(mount) -> int:
    """Bytes in use on a filesystem (spools are unlinked files: du misses them)."""
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def on_disk(srv, disk):
    """The server's data folder on `disk` (the harness puts it in its own folder)."""
    srv.config.write_text(srv.config.read_text().replace(str(srv.folder / "var"), str(disk / "var")))
    return srv


def test_r_plus_opens_of_a_sparse_file_take_no_disk_and_others_still_upload(tmp_path):
    """Six `r+` opens of a sparse 24 MiB file used to copy it whole into the
    spool each: 144 MiB on a 64 MiB disk, and the other account's upload
    failed. Now each holds only what it wrote."""
    with tmpfs(tmp_path / "disk", "64m") as disk:
        srv = on_disk(SftpServer(tmp_path / "srv", accounts=TWO), disk)
        with srv:
            ca, a = sftp_client(srv, "alice")
            cb, b = sftp_client(srv, "bob")
            try:
                with a.open("/sparse.bin", "w") as f:
                    f.seek(24 * MiB - 1)
                    f.write(b"\x01")
                assert a.stat("/sparse.bin").st_size == 24 * MiB
                before = used_bytes(disk)
                handles = []
                for i in range(6):
                    f = a.open("/sparse.bin", "r+")
                    f.seek(i * 4 * MiB + 17)
                    f.write(b"patch %d" % i)
                    f.flush()
                    handles.append(f)
                a.stat("/sparse.bin")                 # every write has been answered
                grown = used_bytes(disk) - before
                assert grown < 4 * MiB, f"six r+ handles made the disk use grow by {grown} bytes"
                payload = os.urandom(8 * MiB)
                with b.open("/upload.bin", "w") as f:
                    f.set_pipelined(True)
                    f.write(payload)
                assert b.stat("/upload.bin").st_size == len(payload)
                for f in handles:
                    f.close()
                with a.open("/sparse.bin", "r") as f:
                    assert f.stat().st_size == 24 * MiB
                    f.seek(24 * MiB - 1)
                    assert f.read(1) == b"\x01"
                    for i in range(6):       # published one after the other, each from the version it opened
                        f.seek(i * 4 * MiB + 10)
                        assert f.read(20) == bytes(7) + (b"patch 5" if i == 5 else bytes(7)) + bytes(6)
                with b.open("/upload.bin", "r") as f:
                    f.prefetch()
                    assert f.read() == payload
            finally:
                ca.close()
                cb.close()
        print(f"six r+ handles on a sparse 24 MiB file: disk +{grown} bytes")


def test_spools_of_one_account_count_against_its_quota(tmp_path):
    """Unfinished random-access uploads are not stored yet, but what their
    spools hold may not exceed the room left in the account's quota."""
    with SftpServer(tmp_path / "srv", accounts=TWO, quotas={"alice": 8 * MiB}) as srv:
        ca, a = sftp_client(srv, "alice")
        cb, b = sftp_client(srv, "bob")
        try:
            with a.open("/base.txt", "w") as f:
                f.write(b"x" * 1000)
            first, second = a.open("/base.txt", "r+"), a.open("/base.txt", "r+")
            first.set_pipelined(True)
            second.set_pipelined(True)
            chunk = os.urandom(256 * 1024)
            for i in range(20):                       # 5 MiB into the first spool
                first.write(chunk)
            first.flush()
            assert first.stat().st_size == 5 * MiB     # FSTAT waits until the server has taken every write
            with pytest.raises(IOError) as e:         # 5 MiB more would exceed the 8 MiB quota: the
                for i in range(20):                   # refusal comes back during the writes or, at the
                    second.write(chunk)               # latest, at an FSTAT, which waits for them (paramiko's
                second.stat()                         # close ignores a refusal)
            assert "quota" in str(e.value).lower()
            second.close()
            first.close()                             # the first one still publishes
            assert a.stat("/base.txt").st_size == 5 * MiB, "".join(      # why the first one did not publish
                line for line in srv.log.read_text().splitlines(True)[-400:] if "CLOSE" in line or "WARN" in line
                or "ERROR" in line)
            with b.open("/bob.bin", "w") as f:         # another account is not affected
                f.set_pipelined(True)
                f.write(os.urandom(10 * MiB))
        finally:
            ca.close()
            cb.close()


def test_an_overlay_reads_and_publishes_what_was_written_over_the_old_version(alice):
    base = os.urandom(3 * MiB + 5)
    alice.write_bytes("/f", base)
    f = alice.open_random("/f")
    f.pwrite(MiB + 3, b"new")
    assert f.pread(MiB, 10) == base[MiB:MiB + 3] + b"new" + base[MiB + 6:MiB + 10]
    f.truncate(2 * MiB)                      # cut, then grow again: the cut part reads as zeros
    f.truncate(2 * MiB + 100)
    f.pwrite(2 * MiB + 50, b"tail")
    assert f.spool.written == 7
    f.commit()
    want = bytearray(base[:2 * MiB]) + bytes(100)
    want[MiB + 3:MiB + 6] = b"new"
    want[2 * MiB + 50:2 * MiB + 54] = b"tail"
    assert alice.read_bytes("/f") == bytes(want)


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def opendir(sftp, path: str) -> bytes:
    t, msg = sftp._request(paramiko.sftp.CMD_OPENDIR, path)
    return msg.get_binary()


def readdir(sftp, handle: bytes) -> list[str] | None:
    """One READDIR: the names it returned, None at the end."""
    try:
        t, msg = sftp._request(paramiko.sftp.CMD_READDIR, handle)
    except EOFError:
        return None
    names = []
    for _ in range(msg.get_int()):
        names.append(msg.get_text())
        msg.get_text()                                    # the long name
        paramiko.SFTPAttributes._from_msg(msg)
    return names


def test_open_folders_hold_a_cursor_not_the_listing(tmp_path):
    """40 OPENDIR handles on a folder of 5,000 entries each held a copy of
    the listing (1.75 MiB a handle); now a handle holds where it is, each
    READDIR reads a page, and every name comes exactly once, also while the
    folder changes."""
    names = {f"entry-{i:05d}-" + "x" * 60 for i in range(5000)}
    srv = SftpServer(tmp_path / "srv", accounts=TWO)
    srv.setup()
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config))
    v = st.open_account("alice", TWO["alice"][0])
    v.mkdir("/big")
    for n in names:
        v.mkdir("/big/" + n)
    st.close()
    srv.prepare = lambda: None
    with srv:
        c, a = sftp_client(srv, "alice")
        c2, a2 = sftp_client(srv, "alice")
        try:
            assert set(a.listdir("/big")) == names           # warm up: every name, once
            base = rss(srv.proc.pid)
            t0 = time.monotonic()
            handles = [opendir(a, "/big") for _ in range(40)]
            firsts = [readdir(a, h) for h in handles]
            took = time.monotonic() - t0
            grown = rss(srv.proc.pid) - base
            assert all(len(f) == 100 for f in firsts)
            assert grown < 12 * MiB, f"40 open folders grew the server by {grown / MiB:.1f} MiB"
            # read one handle to the end while another connection adds entries
            seen = list(firsts[0])
            added = set()
            while (page := readdir(a, handles[0])) is not None:
                seen += page
                if len(added) < 300:
                    for _ in range(30):
                        name = f"added-{len(added):03d}"
                        a2.mkdir("/big/" + name)
                        added.add(name)
            assert len(seen) == len(set(seen)), "a name came twice"
            assert names <= set(seen) <= names | added
            for h in handles[1:]:                            # the rest still list completely
                got = list(firsts[handles.index(h)])
                while (page := readdir(a, h)) is not None:
                    got += page
                assert sorted(got) == sorted(names | added)
        finally:
            c.close()
            c2.close()
    print(f"40 OPENDIR + READDIR on 5,000 entries: +{grown / MiB:.1f} MiB RSS, {took:.2f} s")


# -- dead properties and lock owners (WebDAV) --------------------------------------------------

QUOTA_BODY = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>'
              b'</D:prop></D:propfind>')


def proppatch(props: dict[str, bytes | None]) -> bytes:
    sets = "".join(f"<Z:{k}>{v.decode()}</Z:{k}>" for k, v in props.items() if v is not None)
    removes = "".join(f"<Z:{k}/>" for k, v in props.items() if v is None)
    body = '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:test:">'
    if sets:
        body += f"<D:set><D:prop>{sets}</D:prop></D:set>"
    if removes:
        body += f"<D:remove><D:prop>{removes}</D:prop></D:remove>"
    return (body + "</D:propertyupdate>").encode()


def statuses(body: bytes) -> dict[str, str]:
    """{property name: status code} of a PROPPATCH multistatus."""
    from lxml import etree
    out = {}
    for ps in etree.fromstring(body).iter("{DAV:}propstat"):
        code = ps.findtext("{DAV:}status").split()[1]
        for p in ps.find("{DAV:}prop"):
            out[etree.QName(p).localname] = code
    return out


def used(srv, user="alice") -> int:
    import re
    st, _, body = srv.request("PROPFIND", "/", body=QUOTA_BODY, headers={"Depth": "0"}, user=user)
    assert st == 207, body
    return int(re.search(rb"quota-used-bytes>(\d+)<", body).group(1))


@pytest.fixture(scope="module")
def dav(tmp_path_factory):
    from webdav_harness import CofferServer
    srv = CofferServer(tmp_path_factory.mktemp("dav"), tls=False,
                       accounts={"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-3"},
                       quotas={"carol": 1 * MiB})
    with srv:
        yield srv


def test_dead_properties_are_charged_and_limited(dav):
    assert dav.request("PUT", "/p.txt", body=b"x")[0] in (200, 201, 204)
    before = used(dav)
    st, _, body = dav.request("PROPPATCH", "/p.txt", body=proppatch({"a": b"v" * 1000, "b": b"w" * 2000}))
    assert st == 207 and set(statuses(body).values()) == {"200"}, body
    charged = used(dav) - before
    assert 3000 < charged < 3000 + 600, f"two properties of 3000 bytes were charged {charged}"
    # a value over the limit is refused with 507 for it, and the request changes nothing (424 for the rest)
    st, _, body = dav.request("PROPPATCH", "/p.txt", body=proppatch({"c": b"y" * 70_000, "a": None}))
    assert st == 207 and statuses(body) == {"c": "507", "a": "424"}, body
    assert b"65536" in body                                 # the message names the limit
    assert used(dav) - before == charged
    # removing gives the charge back
    st, _, body = dav.request("PROPPATCH", "/p.txt", body=proppatch({"a": None, "b": None}))
    assert st == 207 and set(statuses(body).values()) == {"200"}
    assert used(dav) == before


def test_too_many_properties_on_one_file_are_refused(dav):
    assert dav.request("PUT", "/many.txt", body=b"x")[0] in (200, 201, 204)
    st, _, body = dav.request("PROPPATCH", "/many.txt", body=proppatch({f"p{i}": b"1" for i in range(256)}))
    assert st == 207 and set(statuses(body).values()) == {"200"}
    st, _, body = dav.request("PROPPATCH", "/many.txt", body=proppatch({"one-more": b"1"}))
    assert statuses(body) == {"one-more": "507"} and b"256" in body


def test_a_property_flood_stops_at_the_account_limit_and_the_quota(dav):
    """Values of 60 KB, 15 a request: the account's properties stop at 16 MiB
    (an account without a quota); with a 1 MiB quota they stop at the quota."""
    value = b"z" * 60_000
    for user, limit in (("bob", 16 * MiB), ("carol", 1 * MiB)):
        for name in ("/f.txt", "/g.txt"):             # 15 x 15 properties each, below the per-file limit
            assert dav.request("PUT", name, body=b"x", user=user)[0] in (200, 201, 204)
        refused = None
        for r in range(30):
            body = proppatch({f"r{r}v{i}": value for i in range(15)})
            st, _, answer = dav.request("PROPPATCH", "/f.txt" if r < 15 else "/g.txt", body=body, user=user)
            if set(statuses(answer).values()) != {"200"}:
                refused = answer
                break
        assert refused is not None, f"{user}: 30 x 900 KB of properties were all accepted"
        assert "507" in statuses(refused).values()
        total = used(dav, user)
        assert total <= limit, f"{user}: {total} bytes charged, over the {limit} limit"
        assert total > limit - 16 * 61_000
    # another account still works
    assert dav.request("PUT", "/after.bin", body=os.urandom(MiB), user="alice")[0] in (200, 201, 204)


LOCK_BODY = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             '<D:locktype><D:write/></D:locktype><D:owner>{}</D:owner></D:lockinfo>')


def test_a_lock_owner_over_4_kib_is_refused(dav):
    st, _, body = dav.request("LOCK", "/locked.txt", body=LOCK_BODY.format("x" * 5000).encode(),
                              headers={"Timeout": "Second-60"})
    assert st == 413 and b"4096" in body, (st, body)
    st, headers, _ = dav.request("LOCK", "/locked.txt", body=LOCK_BODY.format("mailto:alice@example.org").encode(),
                                 headers={"Timeout": "Second-60"})
    assert st in (200, 201), st
    assert dav.request("UNLOCK", "/locked.txt", headers={"Lock-Token": headers["lock-token"]})[0] == 204


def test_properties_charge_follows_copies_trash_and_purge(alice):
    alice.write_bytes("/d.txt", b"data")
    base = alice.quota().used
    alice.set_props("/d.txt", {"{urn:x}a": b"<a>" + b"1" * 500 + b"</a>"})
    one = alice.quota().used - base
    assert one > 500
    alice.copy("/d.txt", "/e.txt")
    assert alice.quota().used - base == 2 * one
    alice.delete("/e.txt")                                  # in the trash it is still stored
    assert alice.quota().used - base == 2 * one
    alice.purge("/e.txt")
    assert alice.quota().used - base == one
    alice.st.gc(grace_seconds=0)                            # gc recomputes usage with the properties
    assert alice.quota().used - base == one


def test_small_files_are_charged_the_blocks_they_take(tmp_path):
    """300 files of 8 bytes took 300 blob files and were charged 7.3 KiB;
    each chunk is now charged its stored size rounded up to a 4 KiB block."""
    with SftpServer(tmp_path / "srv", accounts=TWO) as srv:
        c, a = sftp_client(srv, "alice")
        try:
            for i in range(300):
                with a.open(f"/s{i}.txt", "w") as f:
                    f.write(b"%08d" % i)
        finally:
            c.close()
    from providers import config
    from providers.storage import Storage
    cfg = config.load(srv.config)
    storage = Storage.open(cfg)
    try:
        charged = storage.accounts.usage(storage.accounts.get("alice").id)
    finally:
        storage.close()
    on_disk = sum(p.stat().st_blocks * 512 for p in cfg.blob_dir.rglob("*") if p.is_file())
    assert on_disk <= charged, f"300 small files take {on_disk} bytes of blob files but are charged {charged}"
    assert charged == 300 * 4096
    print(f"300 files of 8 bytes: blob files {on_disk} bytes, charged {charged}")
