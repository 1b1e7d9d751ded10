"""SFTP version 3 wire format: packet types, status codes, attributes.

Kept free of paramiko's Message class: requests are parsed straight out of
the receive buffer with `struct`, and replies are packed into bytes, because
per-packet Python work is what bounds an SFTP server's throughput.
"""
from __future__ import annotations

import stat as statmod
import struct
import time

from providers import errors

# -- packet types ------------------------------------------------------------------
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK = 19, 20
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201
NAMES = {v: k for k, v in dict(
    OPEN=OPEN, CLOSE=CLOSE, READ=READ, WRITE=WRITE, LSTAT=LSTAT, FSTAT=FSTAT, SETSTAT=SETSTAT,
    FSETSTAT=FSETSTAT, OPENDIR=OPENDIR, READDIR=READDIR, REMOVE=REMOVE, MKDIR=MKDIR, RMDIR=RMDIR,
    REALPATH=REALPATH, STAT=STAT, RENAME=RENAME, READLINK=READLINK, SYMLINK=SYMLINK,
    EXTENDED=EXTENDED).items()}

# -- status codes ------------------------------------------------------------------
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE, NO_CONNECTION, CONNECTION_LOST, \
    OP_UNSUPPORTED = range(9)

# -- open flags ----------------------------------------------------------------------
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# -- attribute flags -----------------------------------------------------------------
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x01, 0x02, 0x04, 0x08
ATTR_EXTENDED = 0x80000000

# -- limits (answered to limits@openssh.com) ---------------------------------------
MAX_PACKET = 256 * 1024                 # what we promise clients
MAX_READ = MAX_PACKET - 1024            # OpenSSH's own sftp-server answers the same
MAX_WRITE = MAX_PACKET - 1024
MAX_HANDLES = 256
ACCEPT_PACKET = 1024 * 1024 + 1024      # what we still parse (some clients ignore limits)

# Extensions named in the VERSION packet: clients use only what is listed here.
EXTENSIONS = (
    (b"posix-rename@openssh.com", b"1"),
    (b"statvfs@openssh.com", b"2"),
    (b"fstatvfs@openssh.com", b"2"),
    (b"fsync@openssh.com", b"1"),
    (b"lsetstat@openssh.com", b"1"),
    (b"limits@openssh.com", b"1"),
    (b"expand-path@openssh.com", b"1"),
    (b"home-directory", b"1"),
)

# One table from the core's errors to SFTP status codes (and default texts).
ERROR_CODES = (
    (errors.NotFound, NO_SUCH_FILE),
    (errors.PermissionDenied, PERMISSION_DENIED),
    (errors.Locked, PERMISSION_DENIED),
    (errors.InvalidPath, FAILURE),
    (errors.AlreadyExists, FAILURE),
    (errors.NotADirectory, FAILURE),
    (errors.IsADirectory, FAILURE),
    (errors.DirectoryNotEmpty, FAILURE),
    (errors.Conflict, FAILURE),
    (errors.QuotaExceeded, FAILURE),
    (errors.ChecksumMismatch, FAILURE),
    (errors.IntegrityError, FAILURE),
    (errors.StorageUnavailable, FAILURE),
    (errors.AuthenticationFailed, PERMISSION_DENIED),
)


def status_for(exc: BaseException) -> tuple[int, str]:
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code, str(exc) or cls.__name__
    if isinstance(exc, errors.CofferError):
        return FAILURE, str(exc) or "failure"
    return FAILURE, "internal error"


class BadPacket(Exception):
    """A request too short or malformed to parse."""


_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_u32x2 = struct.Struct(">II")
_hdr = struct.Struct(">IBI")           # length, type, request id


class Reader:
    """Sequential reads from one request's payload (a memoryview)."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview, pos: int = 0):
        self.buf, self.pos = buf, pos

    def u32(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise BadPacket("truncated integer")
        (v,) = _u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        if self.pos + 8 > len(self.buf):
            raise BadPacket("truncated integer")
        (v,) = _u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> memoryview:
        n = self.u32()
        end = self.pos + n
        if end > len(self.buf):
            raise BadPacket("string runs past the end of the packet")
        v = self.buf[self.pos:end]
        self.pos = end
        return v

    def bytes(self) -> bytes:
        return bytes(self.string())

    def attrs(self) -> dict:
        """Attributes as a dict with any of size, uid, gid, mode, atime, mtime."""
        flags = self.u32()
        out = {}
        if flags & ATTR_SIZE:
            out["size"] = self.u64()
        if flags & ATTR_UIDGID:
            out["uid"], out["gid"] = self.u32(), self.u32()
        if flags & ATTR_PERMISSIONS:
            out["mode"] = self.u32()
        if flags & ATTR_ACMODTIME:
            out["atime"], out["mtime"] = self.u32(), self.u32()
        if flags & ATTR_EXTENDED:
            for _ in range(min(self.u32(), 64)):
                self.string()
                self.string()
        return out


def string(b: bytes) -> bytes:
    return _u32.pack(len(b)) + b


def packet(ptype: int, rid: int, body: bytes = b"") -> bytes:
    return _hdr.pack(len(body) + 5, ptype, rid) + body


def status(rid: int, code: int, message: str = "") -> bytes:
    msg = message.encode("utf-8", "replace")[:1024]
    return packet(STATUS, rid, _u32.pack(code) + string(msg) + string(b"en"))


def data_header(rid: int, n: int) -> bytes:
    """Header of a DATA reply carrying n bytes (sent before the bytes themselves)."""
    return _hdr.pack(n + 9, DATA, rid) + _u32.pack(n)


def handle_reply(rid: int, handle: bytes) -> bytes:
    return packet(HANDLE, rid, string(handle))


def version_packet() -> bytes:
    body = _u32.pack(3) + b"".join(string(k) + string(v) for k, v in EXTENSIONS)
    return _u32.pack(len(body) + 1) + bytes((VERSION,)) + body


def limits_reply(rid: int) -> bytes:
    return packet(EXTENDED_REPLY, rid, _u64.pack(MAX_PACKET) + _u64.pack(MAX_READ) + _u64.pack(MAX_WRITE)
                  + _u64.pack(MAX_HANDLES))


def statvfs_reply(rid: int, limit: int, available: int, frsize: int = 4096) -> bytes:
    blocks, avail = limit // frsize, available // frsize
    fields = (frsize, frsize, blocks, avail, avail, 0, 0, 0, 0, 0, 255)   # no inode counts, flags or fsid
    return packet(EXTENDED_REPLY, rid, b"".join(_u64.pack(v) for v in fields))


def entry_mode(entry) -> int:
    """Permission bits as reported to clients: the stored value, else a
    default; read-only entries (virtual trees, read shares) lose write bits."""
    if entry.is_dir:
        perm = entry.mode & 0o7777 if entry.mode is not None else 0o755
        perm |= statmod.S_IFDIR
    else:
        perm = entry.mode & 0o7777 if entry.mode is not None else 0o644
        perm |= statmod.S_IFREG
    if not getattr(entry, "writable", True):
        perm &= ~0o222
    return perm


def attrs_bytes(size: int | None, mode: int | None, mtime: float | None) -> bytes:
    flags, body = 0, b""
    if size is not None:
        flags |= ATTR_SIZE
        body += _u64.pack(max(0, int(size)))
    if mode is not None:
        flags |= ATTR_PERMISSIONS
        body += _u32.pack(mode)
    if mtime is not None:
        flags |= ATTR_ACMODTIME
        t = int(mtime) & 0xFFFFFFFF
        body += _u32x2.pack(t, t)
    return _u32.pack(flags) + body


def entry_attrs(entry) -> bytes:
    return attrs_bytes(0 if entry.is_dir else entry.size, entry_mode(entry), entry.mtime)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def longname(entry, owner: str, now: float | None = None) -> str:
    """The `ls -l` line OpenSSH's sftp shows verbatim for `ls -l`."""
    mode = entry_mode(entry)
    kind = "d" if entry.is_dir else "-"
    bits = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    now = time.time() if now is None else now
    mtime = entry.mtime or 0
    t = time.localtime(mtime)
    if abs(now - mtime) < 182 * 86400:
        when = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}"
    else:
        when = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d}  {t.tm_year}"
    size = 0 if entry.is_dir else entry.size
    links = 2 if entry.is_dir else 1
    return f"{kind}{bits} {links:3d} {owner[:8]:<8} {owner[:8]:<8} {size:8d} {when} {entry.name}"


def name_reply(rid: int, items: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """NAME reply: items of (filename, longname, attrs bytes)."""
    body = [_u32.pack(len(items))]
    for fn, ln, at in items:
        body.append(string(fn))
        body.append(string(ln))
        body.append(at)
    return packet(NAME, rid, b"".join(body))
