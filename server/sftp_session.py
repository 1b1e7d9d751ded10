"""One SFTP session: the request loop of an `sftp` subsystem channel.

Every request becomes one call on the account's filesystem (`providers.vfs`);
the permission checks and all storage logic live there. Errors raised by the
core are turned into SFTP status codes by `sftp_proto.status_for`, here and
nowhere else. A malformed request is answered with SSH_FX_BAD_MESSAGE and
the session goes on; only a packet that cannot be framed (a length beyond the
limit) ends the channel.

Writes go to `vfs.open_random`, an encrypted spool that accepts any offset
(restic keeps 128 writes in flight, out of order); the new version is
published on CLOSE. Replies are batched while more requests are already
buffered, so pipelined clients get few, large SSH packets.
"""
from __future__ import annotations

import logging
import struct
import time

from providers import paths
from providers.errors import CofferError, IsADirectory, NotADirectory, NotFound

from . import sftp_proto as P
from .sftp_pipeline import PipelinedFile

log = logging.getLogger(__name__)

RECV_SIZE = 4 * 1024 * 1024         # take all the channel holds at once (its buffer copies on partial reads)
FLUSH_AT = 256 * 1024
READDIR_BATCH = 100
_u32 = struct.Struct(">I")
_handle = struct.Struct(">I")


# Requests logged at INFO, one line each: those that open, finish or change
# something (reads, writes, stats and listings only at DEBUG).
LOGGED = frozenset({P.OPEN, P.CLOSE, P.OPENDIR, P.REMOVE, P.MKDIR, P.RMDIR, P.RENAME, P.SETSTAT,
                    P.FSETSTAT, P.SYMLINK, P.EXTENDED})


class ProtocolError(Exception):
    """The byte stream cannot be framed any more: the channel must end."""


class ReadHandle:
    __slots__ = ("path", "reader", "pos")

    def __init__(self, path, reader):
        self.path, self.reader, self.pos = path, reader, 0


class WriteHandle:
    __slots__ = ("path", "file", "append", "mode", "mtime", "readable", "failed")

    def __init__(self, path, file, append, mode=None, readable=False):
        self.path, self.file, self.append = path, file, append
        self.mode, self.mtime, self.readable = mode, None, readable
        self.failed: CofferError | None = None     # a write failed: the upload cannot be published


class DirHandle:
    """An open folder: where the listing goes on (a cursor), not the listing."""
    __slots__ = ("path", "cursor", "done")

    def __init__(self, path):
        self.path, self.cursor, self.done = path, None, False


class SftpSession:
    """Serve one channel until the client closes it (or the connection ends).

    `vfs` is the account's filesystem; `owner` the name shown in long
    listings; `disk_space()` returns (total, free) bytes for accounts without
    a quota; `touch()` is called on every received batch (idle timeout).
    """

    CHECK_ACCOUNT_EVERY = 0.25     # seconds between checks that the login still stands, for reads and writes

    def __init__(self, channel, vfs, owner: str, disk_space=None, touch=None, still_valid=None, tag="-"):
        self.chan, self.vfs, self.owner = channel, vfs, owner
        self.tag = tag                 # names the connection and session record in logs
        self.still_valid = still_valid
        self._checked = time.monotonic()
        self.disk_space = disk_space
        self.touch = touch or (lambda: None)
        self.handles: dict[bytes, object] = {}
        self.next_handle = 1
        self.out: list[bytes] = []
        self.out_len = 0
        self.bytes_in = self.bytes_out = self.requests = 0
        self.table = {
            P.OPEN: self.do_open, P.CLOSE: self.do_close, P.READ: self.do_read, P.WRITE: self.do_write,
            P.LSTAT: self.do_stat, P.STAT: self.do_stat, P.FSTAT: self.do_fstat,
            P.SETSTAT: self.do_setstat, P.FSETSTAT: self.do_fsetstat, P.OPENDIR: self.do_opendir,
            P.READDIR: self.do_readdir, P.REMOVE: self.do_remove, P.MKDIR: self.do_mkdir,
            P.RMDIR: self.do_rmdir, P.REALPATH: self.do_realpath, P.RENAME: self.do_rename,
            P.READLINK: self.do_links, P.SYMLINK: self.do_links, P.EXTENDED: self.do_extended,
        }
        self.extended = {
            b"posix-rename@openssh.com": self.ext_posix_rename,
            b"statvfs@openssh.com": self.ext_statvfs,
            b"fstatvfs@openssh.com": self.ext_fstatvfs,
            b"fsync@openssh.com": self.ext_fsync,
            b"lsetstat@openssh.com": self.do_setstat,
            b"limits@openssh.com": self.ext_limits,
            b"expand-path@openssh.com": self.ext_expand_path,
            b"home-directory": self.ext_home,
            b"hardlink@openssh.com": self.ext_hardlink,
        }

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._serve()
        except ProtocolError as e:
            log.info("sftp channel closed: %s", e)
        except (EOFError, OSError) as e:
            log.debug("sftp channel ended: %s", e)
        except Exception:
            log.exception("sftp session failed")
        finally:
            self._release_handles()
            try:
                if not self.chan.closed:
                    self.chan.send_exit_status(0)
            except Exception:
                pass
            try:
                self.chan.close()
            except Exception:
                pass

    def _frames(self):
        """Yield each request's bytes (type byte onwards) as a memoryview.

        Received pieces are collected until the next packet is complete and
        joined once, so a large write costs one copy however it arrived.
        """
        chan = self.chan
        buf, pos, need = b"", 0, 4
        pieces: list[bytes] = []
        have = 0
        while True:
            if len(buf) - pos + have < need:
                if not chan.recv_ready():
                    self.flush()
                data = chan.recv(RECV_SIZE)
                if not data:
                    return
                self.bytes_in += len(data)
                self.touch()
                pieces.append(data)
                have += len(data)
                if len(buf) - pos + have < need:
                    continue
            if pieces:
                buf = b"".join([buf[pos:], *pieces]) if pos < len(buf) else (
                    pieces[0] if len(pieces) == 1 else b"".join(pieces))
                pos, pieces, have = 0, [], 0
            view = memoryview(buf)
            end = len(buf)
            while end - pos >= 4:
                (length,) = _u32.unpack_from(buf, pos)
                if length < 1 or length > P.ACCEPT_PACKET:
                    raise ProtocolError(f"packet length {length} out of range")
                if end - pos - 4 < length:
                    need = 4 + length
                    break
                yield view[pos + 4:pos + 4 + length]
                pos += 4 + length
            else:
                need = 4

    def _serve(self) -> None:
        frames = self._frames()
        first = next(frames, None)
        if first is None:
            return
        if first[0] != P.INIT:
            raise ProtocolError("the first packet was not SSH_FXP_INIT")
        self.send(P.version_packet())
        self.flush()
        for pkt in frames:
            self.requests += 1
            if self.still_valid is not None and (pkt[0] not in (P.READ, P.WRITE) or
                                                 time.monotonic() - self._checked > self.CHECK_ACCOUNT_EVERY):
                # every request that opens, changes or publishes something; reads
                # and writes on open files at least every CHECK_ACCOUNT_EVERY
                self._checked = time.monotonic()
                if not self.still_valid():
                    raise ProtocolError("the account was disabled, cancelled or erased, or its password "
                                        "changed: the session ends")
            self.dispatch(pkt)
            if self.out_len >= FLUSH_AT:
                self.flush()
        self.flush()

    def dispatch(self, pkt: memoryview) -> None:
        if len(pkt) < 5:
            log.debug("sftp: request too short to answer")
            return
        ptype = pkt[0]
        (rid,) = _u32.unpack_from(pkt, 1)
        handler = self.table.get(ptype)
        if handler is None:
            self.send(P.status(rid, P.OP_UNSUPPORTED, f"request type {ptype} is not supported"))
            return
        level = logging.INFO if ptype in LOGGED else logging.DEBUG
        began = time.monotonic() if log.isEnabledFor(level) else None
        outcome = "ok"
        try:
            handler(rid, P.Reader(pkt, 5))
        except P.BadPacket as e:
            outcome = "malformed"
            self.send(P.status(rid, P.BAD_MESSAGE, f"malformed request: {e}"))
        except CofferError as e:
            outcome = type(e).__name__
            code, msg = P.status_for(e)
            self.send(P.status(rid, code, msg))
        except Exception:
            outcome = "error"
            log.exception("sftp request type %d failed", ptype)
            self.send(P.status(rid, P.FAILURE, "internal error"))
        if began is not None:
            # one line per operation: what, how it ended, how long; never a path or a name
            log.log(level, "sftp[%s] %s %s %.1fms", self.tag, P.NAMES.get(ptype, ptype), outcome,
                    (time.monotonic() - began) * 1000)

    def send(self, data: bytes) -> None:
        self.out.append(data)
        self.out_len += len(data)

    def flush(self) -> None:
        if self.out:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out, self.out_len = [], 0
            self.chan.sendall(data)
            self.bytes_out += len(data)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def path(raw) -> str:
        return paths.resolve_dots(bytes(raw) or b".", "/")

    def ok(self, rid: int) -> None:
        self.send(P.status(rid, P.OK, "OK"))

    def handle(self, raw, kinds=(ReadHandle, WriteHandle)):
        h = self.handles.get(bytes(raw))
        if h is None or not isinstance(h, kinds):
            raise P.BadPacket("invalid handle")
        return h

    def new_handle(self, obj) -> bytes:
        if len(self.handles) >= P.MAX_HANDLES:
            raise CofferError(f"too many open files in this session (limit {P.MAX_HANDLES})")
        h = _handle.pack(self.next_handle)
        self.next_handle = (self.next_handle + 1) & 0xFFFFFFFF or 1
        self.handles[h] = obj
        return h

    def writer_for(self, path: str):
        for h in self.handles.values():
            if isinstance(h, WriteHandle) and h.path == path:
                return h
        return None

    def _release_handles(self) -> None:
        # A connection that drops leaves nothing half-written: unfinished
        # uploads are abandoned, the previous version stays current.
        for h in self.handles.values():
            try:
                if isinstance(h, WriteHandle):
                    h.file.abort()
                elif isinstance(h, ReadHandle):
                    h.reader.close()
            except Exception:
                log.debug("releasing a handle failed", exc_info=True)
        self.handles.clear()

    # -- requests -------------------------------------------------------------------------
    def do_open(self, rid, r):
        path = self.path(r.string())
        pflags = r.u32()
        attrs = r.attrs()
        if pflags & (P.FXF_WRITE | P.FXF_APPEND | P.FXF_CREAT | P.FXF_TRUNC):
            f = self.vfs.open_random(path, truncate=bool(pflags & P.FXF_TRUNC),
                                     create=bool(pflags & P.FXF_CREAT), exclusive=bool(pflags & P.FXF_EXCL))
            mode = attrs["mode"] & 0o7777 if "mode" in attrs and pflags & P.FXF_CREAT else None
            obj = WriteHandle(path, PipelinedFile(f), bool(pflags & P.FXF_APPEND), mode, bool(pflags & P.FXF_READ))
        else:
            obj = ReadHandle(path, self.vfs.open_read(path))
        try:
            self.send(P.handle_reply(rid, self.new_handle(obj)))
        except Exception:
            (obj.file.abort if isinstance(obj, WriteHandle) else obj.reader.close)()
            raise

    def do_close(self, rid, r):
        raw = bytes(r.string())
        h = self.handles.pop(raw, None)
        if h is None:
            raise P.BadPacket("invalid handle")
        if isinstance(h, WriteHandle):
            if h.failed is not None:
                try:
                    h.file.abort()
                except Exception:
                    pass
                raise h.failed
            try:
                h.file.commit()
            except BaseException:
                try:
                    h.file.abort()
                except Exception:
                    pass
                raise
            if h.mode is not None:
                self.vfs.set_mode(h.path, h.mode)
            if h.mtime is not None:
                self.vfs.set_mtime(h.path, h.mtime)
        elif isinstance(h, ReadHandle):
            h.reader.close()
        self.ok(rid)

    def do_read(self, rid, r):
        h = self.handle(r.string())
        offset = r.u64()
        n = min(r.u32(), P.MAX_READ)
        if isinstance(h, ReadHandle):
            if offset != h.pos:
                if offset >= h.reader.size:
                    self.send(P.status(rid, P.EOF, "end of file"))
                    return
                h.reader.seek(offset)
            data = h.reader.read(n)
            h.pos = offset + len(data)
        else:
            if not h.readable:
                raise P.BadPacket("the file was not opened for reading")
            data = h.file.pread(offset, n)
        if not data:
            self.send(P.status(rid, P.EOF, "end of file"))
            return
        self.send(P.data_header(rid, len(data)))
        self.send(data)

    def do_write(self, rid, r):
        h = self.handle(r.string(), WriteHandle)
        offset = r.u64()
        data = r.string()
        if h.failed is not None:
            raise h.failed
        if h.append:
            offset = h.file.size
        try:
            h.file.pwrite(offset, data)
        except CofferError as e:       # e.g. quota: every later write and the close say so too
            h.failed = e
            raise
        self.ok(rid)

    def do_stat(self, rid, r):
        path = self.path(r.string())
        w = self.writer_for(path)
        if w is not None:
            try:
                self.vfs.stat(path)
            except NotFound:
                self.send(P.packet(P.ATTRS, rid, self._writer_attrs(w)))
                return
        self.send(P.packet(P.ATTRS, rid, P.entry_attrs(self.vfs.stat(path))))

    def _writer_attrs(self, w: WriteHandle) -> bytes:
        mode = 0o100000 | (w.mode if w.mode is not None else 0o644)
        return P.attrs_bytes(w.file.size, mode, w.mtime if w.mtime is not None else time.time())

    def do_fstat(self, rid, r):
        h = self.handle(r.string())
        if isinstance(h, WriteHandle):
            self.send(P.packet(P.ATTRS, rid, self._writer_attrs(h)))
        else:
            self.send(P.packet(P.ATTRS, rid, P.entry_attrs(self.vfs.stat(h.path))))

    def _apply_attrs(self, path: str, attrs: dict, w: WriteHandle | None) -> None:
        # uid/gid and atime have no meaning here and are accepted silently:
        # clients such as rclone fail an upload when a setstat fails.
        if "size" in attrs:
            if w is not None:
                w.file.truncate(attrs["size"])
            else:
                entry = self.vfs.stat(path)
                if entry.is_dir:
                    raise IsADirectory("cannot set the size of a folder")
                if entry.size != attrs["size"]:
                    f = self.vfs.open_random(path, create=False)
                    try:
                        f.truncate(attrs["size"])
                        f.commit()
                    except BaseException:
                        f.abort()
                        raise
        if "mode" in attrs:
            if w is not None:
                w.mode = attrs["mode"] & 0o7777
            else:
                self.vfs.set_mode(path, attrs["mode"] & 0o7777)
        if "mtime" in attrs:
            if w is not None:
                w.mtime = attrs["mtime"]
            else:
                self.vfs.set_mtime(path, attrs["mtime"])

    def do_setstat(self, rid, r):
        path = self.path(r.string())
        attrs = r.attrs()
        # With an upload of this path open in the session, the change belongs
        # to the version being written (applied when it is published).
        self._apply_attrs(path, attrs, self.writer_for(path))
        self.ok(rid)

    def do_fsetstat(self, rid, r):
        h = self.handle(r.string())
        attrs = r.attrs()
        self._apply_attrs(h.path, attrs, h if isinstance(h, WriteHandle) else None)
        self.ok(rid)

    def do_opendir(self, rid, r):
        path = self.path(r.string())
        entry = self.vfs.stat(path)
        if not entry.is_dir:
            raise NotADirectory("not a folder")
        self.send(P.handle_reply(rid, self.new_handle(DirHandle(path))))

    def do_readdir(self, rid, r):
        h = self.handle(r.string(), DirHandle)
        batch = []
        while not batch and not h.done:
            batch, h.cursor = self.vfs.list_page(h.path, h.cursor, READDIR_BATCH)
            h.done = h.cursor is None
        if not batch:
            self.send(P.status(rid, P.EOF, "end of folder"))
            return
        now = time.time()
        self.send(P.name_reply(rid, [(e.name.encode("utf-8"), P.longname(e, self.owner, now).encode("utf-8"),
                                      P.entry_attrs(e)) for e in batch]))

    def do_remove(self, rid, r):
        path = self.path(r.string())
        if self.vfs.stat(path).is_dir:
            raise IsADirectory("this is a folder; remove it with rmdir")
        self.vfs.delete(path)
        self.ok(rid)

    def do_mkdir(self, rid, r):
        path = self.path(r.string())
        attrs = r.attrs()
        self.vfs.mkdir(path)
        if "mode" in attrs and attrs["mode"] & 0o7777 != 0o755:
            try:
                self.vfs.set_mode(path, attrs["mode"] & 0o7777)
            except CofferError:
                log.debug("keeping a folder's mode failed", exc_info=True)
        self.ok(rid)

    def do_rmdir(self, rid, r):
        self.vfs.rmdir(self.path(r.string()))
        self.ok(rid)

    def do_realpath(self, rid, r):
        path = self.path(r.string()).encode("utf-8")
        self.send(P.name_reply(rid, [(path, path, P.attrs_bytes(None, None, None))]))

    def do_rename(self, rid, r):
        src = self.path(r.string())
        dst = self.path(r.string())
        self.vfs.move(src, dst, overwrite=False)
        self.ok(rid)

    def do_links(self, rid, r):
        self.send(P.status(rid, P.OP_UNSUPPORTED, "symbolic links are not supported by this server"))

    def do_extended(self, rid, r):
        name = r.bytes()
        handler = self.extended.get(name)
        if handler is None:
            self.send(P.status(rid, P.OP_UNSUPPORTED, "extension not supported"))
            return
        handler(rid, r)

    # -- extensions ---------------------------------------------------------------------
    def ext_posix_rename(self, rid, r):
        src = self.path(r.string())
        dst = self.path(r.string())
        self.vfs.move(src, dst, overwrite=True)
        self.ok(rid)

    def _statvfs(self, rid):
        total, free = self.vfs.quota().space(self.disk_space)
        self.send(P.statvfs_reply(rid, total, free))

    def ext_statvfs(self, rid, r):
        self.vfs.stat(self.path(r.string()))
        self._statvfs(rid)

    def ext_fstatvfs(self, rid, r):
        self.handle(r.string(), (ReadHandle, WriteHandle, DirHandle))
        self._statvfs(rid)

    def ext_fsync(self, rid, r):
        # Data reaches durable storage when the file is closed and its new
        # version published; until then nothing of it is visible anyway.
        self.handle(r.string())
        self.ok(rid)

    def ext_limits(self, rid, r):
        self.send(P.limits_reply(rid))

    def ext_expand_path(self, rid, r):
        raw = bytes(r.string())
        if raw == b"~" or raw.startswith(b"~/"):
            raw = b"/" + raw[1:]
        elif raw.startswith(b"~"):
            user, _, rest = raw[1:].partition(b"/")
            if user.decode("utf-8", "replace") != self.owner:
                raise NotFound("no such user")
            raw = b"/" + rest
        path = self.path(raw).encode("utf-8")
        self.send(P.name_reply(rid, [(path, path, P.attrs_bytes(None, None, None))]))

    def ext_home(self, rid, r):
        self.send(P.name_reply(rid, [(b"/", b"/", P.attrs_bytes(None, None, None))]))

    def ext_hardlink(self, rid, r):
        self.send(P.status(rid, P.OP_UNSUPPORTED, "hard links are not supported by this server"))
