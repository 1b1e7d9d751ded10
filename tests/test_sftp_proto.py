"""The SFTP request loop in-process: raw packets in, replies out, no SSH.

Covers what clients rely on (extensions advertised, out-of-order and
256 KiB writes, SFTP vs POSIX rename, setstat, long names), hostile paths and
a small fuzzer of malformed and truncated packets: every bad request gets an
error reply, the session keeps serving, and no data changes.
"""
from __future__ import annotations

import hashlib
import os
import queue
import random
import struct
import threading

import pytest

from server import sftp_proto as P
from server.sftp_session import SftpSession


class FakeChannel:
    """Just enough of a paramiko Channel for SftpSession."""

    def __init__(self):
        self.inq: queue.Queue = queue.Queue()
        self.out = bytearray()
        self.cv = threading.Condition()
        self.closed = False
        self.exit_status = None

    def recv(self, n):
        return self.inq.get()

    def recv_ready(self):
        return not self.inq.empty()

    def sendall(self, data):
        with self.cv:
            self.out += data
            self.cv.notify_all()

    def send_exit_status(self, code):
        self.exit_status = code

    def close(self):
        with self.cv:
            self.closed = True
            self.cv.notify_all()


def s(b) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def attrs(size=None, mode=None, mtime=None) -> bytes:
    return P.attrs_bytes(size, mode, mtime)


class Client:
    def __init__(self, vfs):
        self.chan = FakeChannel()
        self.session = SftpSession(self.chan, vfs, "alice")
        self.thread = threading.Thread(target=self.session.run, daemon=True)
        self.thread.start()
        self.rid = 0
        self.pos = 0
        self.raw(struct.pack(">IBI", 5, P.INIT, 3))
        ptype, body = self.packet()
        assert ptype == P.VERSION
        r = P.Reader(memoryview(body))
        assert r.u32() == 3
        self.extensions = {}
        while r.pos < len(body):
            k = r.bytes()
            self.extensions[k.decode()] = r.bytes().decode()

    def raw(self, data: bytes):
        self.chan.inq.put(data)

    def packet(self, timeout=30):
        with self.chan.cv:
            while True:
                buf = self.chan.out
                if len(buf) - self.pos >= 4:
                    (n,) = struct.unpack_from(">I", buf, self.pos)
                    if len(buf) - self.pos - 4 >= n:
                        pkt = bytes(buf[self.pos + 4:self.pos + 4 + n])
                        self.pos += 4 + n
                        return pkt[0], pkt[1:]
                if self.chan.closed:
                    raise EOFError("channel closed")
                assert self.chan.cv.wait(timeout), "no reply"

    def send(self, ptype, body=b""):
        self.rid += 1
        self.raw(struct.pack(">IBI", len(body) + 5, ptype, self.rid) + body)
        return self.rid

    def call(self, ptype, body=b""):
        rid = self.send(ptype, body)
        t, rest = self.packet()
        (got,) = struct.unpack_from(">I", rest)
        assert got == rid
        return t, rest[4:]

    def status(self, ptype, body=b""):
        t, rest = self.call(ptype, body)
        assert t == P.STATUS, t
        r = P.Reader(memoryview(rest))
        return r.u32(), r.bytes().decode()

    def ok(self, ptype, body=b""):
        code, msg = self.status(ptype, body)
        assert code == P.OK, msg

    def open(self, path, flags, a=b"\0\0\0\0"):
        t, rest = self.call(P.OPEN, s(path) + struct.pack(">I", flags) + a)
        if t == P.STATUS:
            r = P.Reader(memoryview(rest))
            raise OSError(r.u32(), r.bytes().decode())
        assert t == P.HANDLE
        return P.Reader(memoryview(rest)).bytes()

    def write(self, h, off, data):
        self.ok(P.WRITE, s(h) + struct.pack(">Q", off) + s(data))

    def read(self, h, off, n):
        t, rest = self.call(P.READ, s(h) + struct.pack(">QI", off, n))
        if t == P.STATUS:
            return None
        assert t == P.DATA
        return P.Reader(memoryview(rest)).bytes()

    def close(self, h):
        self.ok(P.CLOSE, s(h))

    def stat(self, path):
        t, rest = self.call(P.STAT, s(path))
        if t == P.STATUS:
            return None
        return P.Reader(memoryview(rest)).attrs()

    def names(self, ptype, body):
        t, rest = self.call(ptype, body)
        assert t == P.NAME, t
        r = P.Reader(memoryview(rest))
        out = []
        for _ in range(r.u32()):
            out.append((r.bytes().decode(), r.bytes().decode(), r.attrs()))
        return out

    def listdir(self, path):
        t, rest = self.call(P.OPENDIR, s(path))
        assert t == P.HANDLE
        h = P.Reader(memoryview(rest)).bytes()
        out = []
        while True:
            t, rest = self.call(P.READDIR, s(h))
            if t == P.STATUS:
                break
            r = P.Reader(memoryview(rest))
            for _ in range(r.u32()):
                out.append((r.bytes().decode(), r.bytes().decode(), r.attrs()))
        self.close(h)
        return out

    def put(self, path, data, chunk=32768):
        h = self.open(path, P.FXF_WRITE | P.FXF_CREAT | P.FXF_TRUNC)
        for off in range(0, len(data), chunk):
            self.write(h, off, data[off:off + chunk])
        self.close(h)

    def get(self, path, chunk=32768):
        h = self.open(path, P.FXF_READ)
        out, off = [], 0
        while True:
            d = self.read(h, off, chunk)
            if d is None:
                break
            out.append(d)
            off += len(d)
        self.close(h)
        return b"".join(out)

    def end(self):
        self.raw(b"")
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def sftp(alice):
    c = Client(alice)
    yield c
    c.end()


def test_version_advertises_extensions(sftp):
    for name in ("posix-rename@openssh.com", "statvfs@openssh.com", "fstatvfs@openssh.com",
                 "fsync@openssh.com", "limits@openssh.com"):
        assert name in sftp.extensions
    assert "hardlink@openssh.com" not in sftp.extensions


def test_limits_and_256k_requests(sftp):
    t, rest = sftp.call(P.EXTENDED, s("limits@openssh.com"))
    assert t == P.EXTENDED_REPLY
    pkt, rd, wr, handles = struct.unpack(">QQQQ", rest)
    assert pkt >= 256 * 1024 and rd >= 255 * 1024 and wr >= 255 * 1024 and handles > 0
    data = os.urandom(wr * 3 + 17)
    sftp.put("/big.bin", data, chunk=wr)
    assert sftp.get("/big.bin", chunk=rd) == data


def test_out_of_order_writes_publish_on_close(sftp, alice):
    data = os.urandom(1_000_000)
    pieces = [(off, data[off:off + 32768]) for off in range(0, len(data), 32768)]
    random.Random(4).shuffle(pieces)
    h = sftp.open("/r.bin", P.FXF_WRITE | P.FXF_CREAT | P.FXF_EXCL)
    rids = [sftp.send(P.WRITE, s(h) + struct.pack(">Q", off) + s(piece)) for off, piece in pieces]
    for rid in rids:                       # all in flight at once, like restic
        t, rest = sftp.packet()
        assert t == P.STATUS and struct.unpack_from(">II", rest) == (rid, P.OK)
    assert sftp.stat("/r.bin")["size"] == len(data)      # visible to this session while open
    assert not alice.exists("/r.bin")
    sftp.close(h)
    assert alice.read_bytes("/r.bin") == data
    assert alice.hashes("/r.bin", compute=("sha256",))["sha256"] == hashlib.sha256(data).hexdigest()


def test_exclusive_create_refuses_existing(sftp):
    sftp.put("/a", b"one")
    with pytest.raises(OSError) as e:
        sftp.open("/a", P.FXF_WRITE | P.FXF_CREAT | P.FXF_EXCL)
    assert e.value.args[0] == P.FAILURE


def test_rename_semantics(sftp, alice):
    sftp.put("/a", b"A")
    sftp.put("/b", b"B")
    code, msg = sftp.status(P.RENAME, s("/a") + s("/b"))
    assert code == P.FAILURE and "exists" in msg
    sftp.ok(P.EXTENDED, s("posix-rename@openssh.com") + s("/a") + s("/b"))
    assert alice.read_bytes("/b") == b"A" and not alice.exists("/a")


def test_setstat_mtime_mode_and_longname(sftp):
    sftp.put("/f.txt", b"hello")
    sftp.ok(P.SETSTAT, s("/f.txt") + attrs(mode=0o100600, mtime=1_600_000_000))
    a = sftp.stat("/f.txt")
    assert a["mtime"] == 1_600_000_000 and a["mode"] & 0o777 == 0o600 and a["size"] == 5
    (entry,) = sftp.listdir("/")
    assert entry[0] == "f.txt"
    assert entry[1].startswith("-rw-------   1 alice    alice           5 Sep 13  2020 f.txt")
    sftp.ok(P.SETSTAT, s("/f.txt") + attrs(size=2))
    assert sftp.get("/f.txt") == b"he"


def test_fsetstat_on_open_upload_applies_at_close(sftp):
    h = sftp.open("/u", P.FXF_WRITE | P.FXF_CREAT | P.FXF_TRUNC)
    sftp.write(h, 0, b"data")
    sftp.ok(P.FSETSTAT, s(h) + attrs(mode=0o100444, mtime=1_500_000_000))
    sftp.ok(P.EXTENDED, s("fsync@openssh.com") + s(h))
    sftp.close(h)
    a = sftp.stat("/u")
    assert a["mtime"] == 1_500_000_000 and a["mode"] & 0o777 == 0o444


def test_dirs_remove_rmdir(sftp):
    sftp.ok(P.MKDIR, s("/d") + attrs())
    sftp.put("/d/x", b"x")
    code, msg = sftp.status(P.RMDIR, s("/d"))
    assert code == P.FAILURE and "not empty" in msg
    code, _ = sftp.status(P.REMOVE, s("/d"))
    assert code == P.FAILURE
    sftp.ok(P.REMOVE, s("/d/x"))
    sftp.ok(P.RMDIR, s("/d"))
    assert sftp.stat("/d") is None


def test_statvfs_reports_quota(sftp, storage):
    storage.accounts.update("alice", quota_bytes=100 * 4096)
    t, rest = sftp.call(P.EXTENDED, s("statvfs@openssh.com") + s("/"))
    assert t == P.EXTENDED_REPLY
    fields = struct.unpack(">11Q", rest)
    assert fields[1] == 4096 and fields[2] == 100


def test_links_refused_with_message(sftp):
    code, msg = sftp.status(P.SYMLINK, s("/l") + s("/t"))
    assert code == P.OP_UNSUPPORTED and "link" in msg
    code, msg = sftp.status(P.EXTENDED, s("hardlink@openssh.com") + s("/a") + s("/b"))
    assert code == P.OP_UNSUPPORTED and "link" in msg


def test_meta_tree_is_read_only(sftp):
    sftp.put("/v.txt", b"1")
    sftp.put("/v.txt", b"22")
    names = [n for n, _, _ in sftp.listdir("/.coffer/versions/v.txt")]
    assert len(names) == 2
    assert sorted(len(sftp.get("/.coffer/versions/v.txt/" + n)) for n in names) == [1, 2]
    with pytest.raises(OSError) as e:
        sftp.open("/.coffer/versions/x", P.FXF_WRITE | P.FXF_CREAT)
    assert e.value.args[0] == P.PERMISSION_DENIED
    assert ".coffer" not in [n for n, _, _ in sftp.listdir("/")]


HOSTILE = ["/../../etc/passwd", "../../../etc/passwd", "/a/../../..", "//..//..//etc", "./../etc",
           "/..", "..", "/./.././etc/shadow", "..\\..\\etc\\passwd", "/%2e%2e/%2e%2e/etc"]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_paths_stay_inside(sftp, alice, path):
    alice.mkdir("/etc")
    (name,) = sftp.names(P.REALPATH, s(path))
    resolved = name[0]
    assert resolved.startswith("/") and ".." not in resolved.split("/")
    if resolved == "/":
        code, _ = sftp.status(P.OPEN, s(path) + struct.pack(">I", P.FXF_WRITE | P.FXF_CREAT) + attrs())
        assert code != P.OK
        return
    try:
        h = sftp.open(path, P.FXF_WRITE | P.FXF_CREAT)
    except OSError as e:                       # e.g. the parent does not exist in the account
        assert e.args[0] in (P.NO_SUCH_FILE, P.FAILURE)
        return
    sftp.write(h, 0, b"inside")
    sftp.close(h)
    assert alice.read_bytes(resolved) == b"inside"     # it landed where realpath said, in the account


def test_invalid_names_are_errors_not_crashes(sftp):
    for bad in (b"/a\x00b", b"/\xff\xfe", b"/" + b"n" * 300, b"/" + b"a/" * 3000):
        code, msg = sftp.status(P.MKDIR, s(bad) + attrs())
        assert code in (P.FAILURE, P.NO_SUCH_FILE, P.BAD_MESSAGE), msg
    sftp.ok(P.MKDIR, s("/still-fine") + attrs())


def test_fuzzer_malformed_packets(alice):
    """Random and truncated requests: each answered or ignored, the session
    keeps serving, and the account's files are unchanged."""
    alice.write_bytes("/keep.txt", b"precious")
    before = [(e.name, e.size, e.etag) for e in alice.list("/")]
    rng = random.Random(1234)
    c = Client(alice)
    valid = [
        struct.pack(">B", P.OPEN) + struct.pack(">I", 1) + s("/keep.txt") + struct.pack(">I", 1) + attrs(),
        struct.pack(">B", P.STAT) + struct.pack(">I", 2) + s("/keep.txt"),
        struct.pack(">B", P.REMOVE) + struct.pack(">I", 3) + s("/keep.txt"),
        struct.pack(">B", P.EXTENDED) + struct.pack(">I", 4) + s("posix-rename@openssh.com") + s("/keep.txt"),
        struct.pack(">B", P.SETSTAT) + struct.pack(">I", 5) + s("/keep.txt") + struct.pack(">I", 0xFFFFFFFF),
        struct.pack(">B", P.WRITE) + struct.pack(">I", 6) + s(b"\0\0\0\x01") + struct.pack(">Q", 0) + s("x"),
        struct.pack(">B", P.RENAME) + struct.pack(">I", 7) + s("/keep.txt"),
    ]
    sent = 0
    for i in range(400):
        kind = rng.random()
        if kind < 0.5:                        # a valid request cut short (never a complete destructive one)
            base = rng.choice(valid)
            body = base[:rng.randrange(1, len(base) - 1)] if rng.random() < 0.9 else base[:5] + \
                bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        elif kind < 0.8:                      # random type and bytes
            body = bytes([rng.choice([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 18, 19, 20, 200, 0, 99, 255])]) + \
                bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        else:                                 # a string length pointing far past the end
            body = struct.pack(">BII", rng.choice([3, 7, 13, 17, 200]), 9000 + i, 0xFFFFFF00)
        if body[:1] in (bytes([P.REMOVE]), bytes([P.RENAME]), bytes([P.SETSTAT])) and len(body) > 9:
            body = body[:9]                   # keep destructive types truncated
        if body[:1] == bytes([P.EXTENDED]):
            body = body[:min(len(body), 30)]
        c.raw(struct.pack(">I", len(body)) + body)
        sent += len(body) >= 5               # shorter ones carry no request id to answer
    # every answerable request got exactly one reply, then a normal request works
    c.rid = 100_000
    rid = c.send(P.STAT, s("/keep.txt"))
    replies = 0
    while True:
        t, rest = c.packet()
        if struct.unpack_from(">I", rest)[0] == rid and replies >= sent:
            break
        assert t in (P.STATUS, P.HANDLE, P.ATTRS, P.NAME, P.DATA, P.EXTENDED_REPLY)
        replies += 1
    assert replies == sent
    assert t == P.ATTRS and P.Reader(memoryview(rest), 4).attrs()["size"] == 8
    after = [(e.name, e.size, e.etag) for e in alice.list("/")]
    assert after == before
    assert alice.read_bytes("/keep.txt") == b"precious"
    c.end()


def test_oversized_length_closes_only_that_channel(alice):
    c = Client(alice)
    c.raw(struct.pack(">I", 0x7FFFFFFF) + b"\x03")
    c.thread.join(10)
    assert c.chan.closed and c.chan.exit_status == 0
    c2 = Client(alice)                         # another session is unaffected
    assert c2.stat("/") is not None
    c2.end()


def test_packets_split_across_reads(alice):
    c = Client(alice)
    data = os.urandom(200_000)
    h = c.open("/split", P.FXF_WRITE | P.FXF_CREAT)
    pkt = struct.pack(">IBI", 0, P.WRITE, 77) + s(h) + struct.pack(">Q", 0) + s(data)
    pkt = struct.pack(">I", len(pkt) - 4) + pkt[4:]
    for i in range(0, len(pkt), 777):          # dribbled in small pieces
        c.raw(pkt[i:i + 777])
    t, rest = c.packet()
    assert t == P.STATUS and struct.unpack_from(">II", rest) == (77, P.OK)
    c.close(h)
    assert alice.read_bytes("/split") == data
    c.end()


def test_disconnect_abandons_unfinished_upload(alice):
    alice.write_bytes("/doc", b"version one")
    c = Client(alice)
    h = c.open("/doc", P.FXF_WRITE | P.FXF_TRUNC)
    c.write(h, 0, b"half of version t")
    c.end()                                    # no CLOSE: the connection dropped
    assert alice.read_bytes("/doc") == b"version one"


def test_quota_error_reaches_the_client_and_nothing_is_published(sftp, storage, alice):
    alice.write_bytes("/doc", b"old")
    storage.accounts.update("alice", quota_bytes=1024 * 1024)
    h = sftp.open("/doc", P.FXF_WRITE | P.FXF_TRUNC)
    codes = []
    for off in range(0, 8 * 1024 * 1024, 256 * 1024):
        code, msg = sftp.status(P.WRITE, s(h) + struct.pack(">Q", off) + s(os.urandom(256 * 1024)))
        codes.append((code, msg))
    code, msg = sftp.status(P.CLOSE, s(h))
    codes.append((code, msg))
    failures = [m for c, m in codes if c != P.OK]
    assert failures and all("quota" in m for m in failures)
    assert codes[-1][0] == P.FAILURE                    # the close says so too
    assert alice.read_bytes("/doc") == b"old"


def test_a_write_far_past_the_end_cannot_outgrow_the_quota(sftp, storage, alice):
    """One byte written at 1 TiB would leave a hole that dedups to nothing
    but costs minutes to publish: a file may not outgrow its owner's whole
    quota, by a write or by setting its size. Holes within it still work."""
    import time
    alice.write_bytes("/doc", b"old")
    storage.accounts.update("alice", quota_bytes=8 * 1024 * 1024)
    started = time.monotonic()
    h = sftp.open("/doc", P.FXF_WRITE)
    code, msg = sftp.status(P.WRITE, s(h) + struct.pack(">Q", 2 ** 40) + s(b"x"))
    assert code == P.FAILURE and "quota" in msg and str(2 ** 40 + 1) in msg
    code, msg = sftp.status(P.CLOSE, s(h))               # the close says so too, and publishes nothing
    assert code == P.FAILURE and "quota" in msg
    code, msg = sftp.status(P.SETSTAT, s("/doc") + attrs(size=2 ** 40))
    assert code == P.FAILURE and "quota" in msg
    assert time.monotonic() - started < 10
    assert alice.read_bytes("/doc") == b"old" and len(alice.versions("/doc")) == 1
    h = sftp.open("/sparse", P.FXF_WRITE | P.FXF_CREAT)
    sftp.write(h, 3 * 1024 * 1024, b"end")
    sftp.close(h)
    assert alice.read_bytes("/sparse") == bytes(3 * 1024 * 1024) + b"end"
