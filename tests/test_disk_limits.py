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
            for i in range(20):                       # 5 MiB more would exceed the 8 MiB quota
                second.write(chunk)
            second.set_pipelined(False)               # the next write waits for its answer (paramiko's
            with pytest.raises(IOError) as e:         # close ignores a refusal)
                second.write(b"more")
            assert "quota" in str(e.value).lower()
            second.close()
            first.close()                             # the first one still publishes
            assert a.stat("/base.txt").st_size == 5 * MiB
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
    v = st.login("alice", TWO["alice"][0])
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
