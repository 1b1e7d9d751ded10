"""File content streams: the sequential writer, the ranged reader, and the
random-access file SFTP clients need. Memory stays flat whatever the size:
at most one chunk (plus a bounded reorder window) is held at a time.
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import os
import struct
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import crypto, small_blobs
from .errors import ChecksumMismatch, IntegrityError, NotFound, QuotaExceeded

log = logging.getLogger(__name__)


class _MallocTrim:
    """Give freed memory back to the system every so many bytes streamed
    (with `tune_malloc`, see there)."""

    EVERY = 64 * 1024 * 1024

    def __init__(self):
        self.count = 0
        self.trim = None
        try:
            import ctypes
            self.trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            pass

    def __call__(self, nbytes: int) -> None:
        self.count += nbytes                  # a race only moves the next trim a little
        if self.count >= self.EVERY and self.trim is not None:
            self.count = 0
            self.trim(0)


_malloc_trim = _MallocTrim()


def tune_malloc() -> bool:
    """Set malloc for a process that streams: called once at start by
    `coffer serve` (and the benchmarks), never on import, since it applies
    to the whole process. Streams allocate and free chunk-sized buffers at
    a high rate. Left to itself malloc maps each one afresh or gives the top
    of its heap back at once, so every buffer is page-faulted again: about
    0.4 ms of kernel time per MiB moved, as much as a content hash. Buffers
    up to 16 MiB are therefore kept in malloc's heaps, and their free memory
    is kept too; instead the arenas are capped and trimmed every so many
    bytes streamed (`_MallocTrim`), which keeps resident memory flat (heaps
    could otherwise fragment and drift up with the bytes moved) at a
    negligible cost. False where the C library is not glibc."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)               # M_ARENA_MAX
        libc.mallopt(-3, 16 << 20)        # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)        # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False
    return True

_AHEAD = None
_AHEAD_LOCK = threading.Lock()


def _ahead_pool() -> ThreadPoolExecutor:
    """Helper threads shared by every sequential reader."""
    global _AHEAD
    with _AHEAD_LOCK:
        if _AHEAD is None:
            _AHEAD = ThreadPoolExecutor(8, thread_name_prefix="coffer-readahead")
    return _AHEAD


class Host(Protocol):
    """What a stream needs from the filesystem it belongs to, and nothing
    more (providers/publish.py gives it for a `Vfs`)."""

    blobs: object                                     # the blob store (providers/blobs.py)

    def find_chunk(self, domain, dedup_id: str) -> int | None:
        """The id of a chunk the domain already stores with this dedup id."""

    def quota_room(self, domain) -> int | None:
        """Bytes the domain's owner may still store (None: no limit)."""

    def publish(self, writer: "Writer"):
        """Make a finished stream the file's current version; returns its Entry."""

    def chunk_plaintext(self, domain, pc: "PendingChunk") -> bytes:
        """The content of a chunk a writer holds (to read back a spooled write)."""

    def chunk_location(self, chunk_id: int) -> tuple[str, int] | None:
        """Where a chunk is stored now (a pack blob may have been rewritten)."""

    def recheck(self, domain) -> None:
        """Raise PermissionDenied once the principal has lost the domain."""


@dataclass
class PendingChunk:
    dedup_id: str
    plain_size: int
    existing_id: int | None = None    # a chunk already stored in the domain
    blob_name: str | None = None      # or one this writer stored, at blob_offset
    blob_offset: int = 0
    stored_size: int = 0
    wrapped_key: bytes = b""
    stored_hash: str = ""
    key: bytes | None = field(default=None, repr=False)
    small: bytes | None = field(default=None, repr=False)     # a small file's chunk, for the database


class Writer:
    """Sequential write stream; nothing is visible until `commit()`.

    Each full chunk is hashed (dedup id), and stored encrypted unless the
    domain already holds it. `commit()` publishes the version in one
    transaction; `abort()` (or an exception inside a `with` block) leaves
    nothing behind but blobs that `gc` reclaims if the process dies first.
    """

    # Whole-file checksums (md5, sha1, sha256: what clients compare) cost
    # about 3 ms of CPU per MiB, more than the encryption and the dedup hash
    # together. They are computed while writing only for small streams and
    # when the caller asks (`checksums`, or `expect` to verify what a client
    # sent); otherwise the first request computes and keeps them (Vfs.hashes).
    # Chunk work, checksums and blob writes run on helper threads once a
    # stream is large; hashlib and file writes release the GIL, so they
    # overlap. Queues are bounded, so memory stays flat when a helper lags.
    THREADED_AFTER = 1024 * 1024
    MAX_QUEUED = 4
    QUOTA_CHECK_AFTER = 4 * 1024 * 1024   # smaller uploads are checked when published

    def __init__(self, host, domain, parts, mtime_us=None, chunk_size=1024 * 1024, exclusive=False,
                 checksums=False, expect: dict | None = None):
        self.host, self.domain, self.parts, self.mtime_us = host, domain, parts, mtime_us
        self.exclusive = exclusive
        self.expect = dict(expect or {})
        self.checksums = bool(checksums or self.expect)
        self.chunk_size = chunk_size
        self.buf: list = []
        self.buffered = 0
        self.chunks: list[PendingChunk] = []
        self.size = 0
        self.new_bytes = 0
        self._hashers = {"md5": hashlib.md5(), "sha1": hashlib.sha1(), "sha256": hashlib.sha256()}
        self.closed = False
        self._quota_room: int | None = None     # looked up once the upload is large (see _process)
        self._quota_known = False
        self._seen: dict[str, PendingChunk] = {}
        self._threaded = False
        self._pool: ThreadPoolExecutor | None = None          # ordered whole-file checksums
        self._chunk_pool: ThreadPoolExecutor | None = None    # chunk hashing, encryption, storing
        self._hashing: deque = deque()
        self._storing: deque = deque()
        self._hash_queued = 0
        self._final = False
        self._pack = None                     # where new chunks go (blobs.open_pack), opened at the first
        self._lock = threading.Lock()
        self._scratch = threading.local()     # a sealing buffer per helper thread, reused chunk after chunk

    def _hash(self, data) -> None:
        for h in self._hashers.values():
            h.update(data)

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed stream")
        n = len(data)
        if not n:
            return 0
        if not isinstance(data, bytes):
            data = bytes(data)        # the caller may reuse its buffer; we keep ours
        if not self._threaded and self.size + n > self.THREADED_AFTER:
            self._threaded = True
            self._chunk_pool = ThreadPoolExecutor(2, thread_name_prefix="coffer-chunk")
            if self.checksums:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="coffer-hash")
            else:
                self._hashers = {}            # computed when first asked for
        self.size += n
        if not self._threaded:
            self._hash(data)
        elif self._pool is not None:
            # one task per chunk-sized batch keeps the hash order and the overhead low
            self._hashing.append((self._pool.submit(self._hash, data), n))
            self._hash_queued += n
            while self._hash_queued > self.MAX_QUEUED * self.chunk_size:
                fut, m = self._hashing.popleft()
                fut.result()
                self._hash_queued -= m
        self.buf.append(data)
        self.buffered += n
        while self.buffered >= self.chunk_size:
            joined = self.buf[0] if len(self.buf) == 1 else b"".join(self.buf)
            if len(joined) == self.chunk_size:
                piece, rest = joined, b""
            else:                     # a view, not a copy, of the chunk-sized head
                piece, rest = memoryview(joined)[:self.chunk_size], joined[self.chunk_size:]
            self.buf = [rest] if rest else []
            self.buffered = len(rest)
            try:
                self._store(piece)
            except BaseException:
                self.abort()
                raise
        return n

    def _drain(self) -> None:
        """Wait for the helper threads; re-raise what they raised."""
        while self._hashing:
            self._hashing.popleft()[0].result()
        self._hash_queued = 0
        while self._storing:
            self._storing.popleft().result()

    def _store(self, data: bytes) -> None:
        if self._chunk_pool is None:
            self.chunks.append(self._process(data))
            return
        fut = self._chunk_pool.submit(self._process, data)
        self.chunks.append(fut)
        self._storing.append(fut)
        while len(self._storing) > self.MAX_QUEUED:
            self._storing.popleft().result()

    def _process(self, data: bytes) -> PendingChunk:
        """Hash, and unless the domain holds it already, encrypt and store one chunk."""
        keys = self.domain.keys
        did = crypto.chunk_id(keys, data)
        seen = self._seen.get(did)
        if seen is not None:
            return seen
        # A stream's last (or only) chunk skips the lookup: publishing checks
        # for it anyway, and small files then cost one transaction less.
        existing = self.host.find_chunk(self.domain, did) if not self._final else None
        if existing is not None:
            pc = PendingChunk(did, len(data), existing_id=existing)
        else:
            key = crypto.random_key()
            stored = crypto.encrypt_chunk(key, data, getattr(self._scratch, "buf", None))
            self._scratch.buf = stored.obj                      # this thread's buffer for its next chunk
            pc = PendingChunk(did, len(data), stored_size=len(stored),
                              wrapped_key=crypto.seal(keys.wrap, key, did.encode()),
                              stored_hash=crypto.stored_hash(stored), key=key)
            with self._lock:
                self.new_bytes += len(stored)
                if not self._quota_known and self.new_bytes > self.QUOTA_CHECK_AFTER:
                    self._quota_room, self._quota_known = self.host.quota_room(self.domain), True
                over = self._quota_room is not None and self.new_bytes > self._quota_room
                # a small file's only chunk goes to the database with its version (providers/small_blobs.py)
                small = self._final and self._pack is None and \
                    len(stored) <= getattr(self.host.blobs, "small_bytes", 0)
                if self._pack is None and not small:
                    self._pack = self.host.blobs.open_pack()
            if over:
                raise QuotaExceeded("the account's storage quota is full: delete files or purge old "
                                    "versions, or ask for a larger plan; nothing was changed")
            if small:
                pc.blob_name, pc.small = small_blobs.new_name(), bytes(stored)
            else:
                pc.blob_name, pc.blob_offset = self._pack.append(stored)
        self._seen[did] = pc
        _malloc_trim(len(data))
        return pc

    def stored_blobs(self) -> list[str]:
        """Every blob this upload created."""
        return list(self._pack.names) if self._pack is not None else []

    def hashes(self) -> dict:
        """The whole-file checksums computed while writing (none for a large
        stream nobody asked them for)."""
        return {algo: h.hexdigest() for algo, h in self._hashers.items()}

    def _verify(self) -> None:
        got = self.hashes()
        for algo, value in self.expect.items():
            if got.get(algo) != value.lower():
                raise ChecksumMismatch(f"the {algo.upper()} checksum of what was received ({got.get(algo)}) is "
                                       f"not the one the client sent ({value}): the upload was damaged on its "
                                       "way; nothing was changed, upload it again")

    def commit(self):
        if self.closed:
            raise ValueError("stream already closed")
        try:
            if self.buf:
                self._final = True
                self._store(b"".join(self.buf))
                self.buf, self.buffered = [], 0
            self._drain()
            self.chunks = [c.result() if hasattr(c, "result") else c for c in self.chunks]
            self._verify()
            if self._pack is not None:
                self._pack.close()
                self.host.blobs.sync(self.stored_blobs())
            entry = self.host.publish(self)
        except BaseException:
            self.abort()
            raise
        finally:
            self._shutdown()
        self.closed = True
        return entry

    def _shutdown(self) -> None:
        for pool in (self._pool, self._chunk_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._chunk_pool = None

    def abort(self) -> None:
        """Drop what was written; the previous version stays as it was."""
        if self.closed:
            return
        self.closed = True
        try:
            self._drain()
        except Exception:        # the upload is being dropped: its helpers' errors no longer matter
            pass
        self._shutdown()
        if self._pack is not None:
            self._pack.discard()
        self.buf, self.buffered = [], 0

    def readback(self):
        """Plaintext written so far, chunk by chunk (RandomFile's fallback)."""
        self._drain()
        for pc in self.chunks:
            yield self.host.chunk_plaintext(self.domain, pc.result() if hasattr(pc, "result") else pc)
        if self.buf:
            yield b"".join(self.buf)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


class Reader:
    """Reads one version, with seeking; decrypts only the 64 KiB blocks a read
    touches and checks every block's authentication tag.

    A sequential reader tells the blob store which chunks come next, so it
    can fetch them meanwhile; blocks are decrypted into one buffer the
    reader keeps."""

    READAHEAD = 256 * 1024

    def __init__(self, host, domain, version_row, chunk_rows, what: str):
        self.host, self.domain, self.what = host, domain, what
        self.size = version_row["size"]
        self.version_id = version_row["id"]
        self.rows = chunk_rows
        self.starts = []
        pos = 0
        for r in chunk_rows:
            self.starts.append(pos)
            pos += r["plain_size"]
        self.pos = 0
        self._cache = (None, 0, b"")        # (chunk index, plaintext offset in chunk, plaintext view)
        self._buf: bytearray | None = None
        self._keys: dict[int, bytes] = {}
        self._ahead: dict[int, object] = {}  # chunk index -> future of its whole stored form
        self._hinted = -1                   # the last chunk the blob store was told about
        self._next = 0                      # where a sequential read goes on

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.size
        self.pos = max(0, offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _key(self, i: int) -> bytes:
        if i not in self._keys:
            r = self.rows[i]
            self._keys[i] = crypto.open_sealed(self.domain.keys.wrap, bytes(r["wrapped_key"]),
                                               r["dedup_id"].encode(), f"{self.what}: chunk key")
        return self._keys[i]

    def _span(self, i: int, off: int, want: int) -> tuple[int, int, int]:
        plain_size = self.rows[i]["plain_size"]
        return crypto.block_span(plain_size, off, min(max(want, self.READAHEAD), plain_size - off))

    def _read_ahead(self, i: int) -> None:
        """Reading on sequentially: the next chunks are fetched on helper
        threads meanwhile (file reads and network waits release the
        interpreter lock). Decryption stays on the reading thread: AES-GCM
        releases the lock too, but once per 64 KiB block, and handing the
        lock back and forth that often cost more than it gained (512 MiB from
        the page cache: 1.1-1.2 GB/s decrypting ahead, 1.4-1.6 fetching only;
        cold, 0.6-0.7 against 0.7-0.8)."""
        last = min(i + self.host.blobs.READ_AHEAD_CHUNKS, len(self.rows) - 1)
        for j in range(max(i + 1, self._hinted + 1), last + 1):
            r = self.rows[j]
            if r.get("small") is not None:
                continue
            self._ahead[j] = _ahead_pool().submit(self.host.blobs.get, r["blob_name"], r["blob_offset"],
                                                  r["stored_size"])
        self._hinted = max(self._hinted, last)

    def _fetch(self, i: int, start: int, n: int):
        """Stored bytes [start, start+n) of chunk i: from the whole stored
        chunk fetched ahead when there is one."""
        for j in [j for j in self._ahead if j < i]:
            self._ahead.pop(j).cancel()
        fut = self._ahead.get(i)
        if fut is not None:
            try:
                return memoryview(fut.result())[start:start + n]
            except Exception:
                del self._ahead[i]          # fetched again below, where an error is reported
        r = self.rows[i]
        if r.get("small") is not None:          # a small file's chunk, read with its row
            return memoryview(r["small"])[start:start + n]
        try:
            return self.host.blobs.get(r["blob_name"], r["blob_offset"] + start, n)
        except NotFound:
            # gc may have moved the chunk to another pack since this reader opened
            moved = self.host.chunk_location(r["id"])
            if moved is None or moved == (r["blob_name"], r["blob_offset"]):
                raise
            self.rows[i] = r = {**r, "blob_name": moved[0], "blob_offset": moved[1]}
            return self.host.blobs.get(r["blob_name"], r["blob_offset"] + start, n)

    def _piece(self, i: int, off: int, want: int) -> bytes:
        ci, coff, data = self._cache
        if ci == i and coff <= off and off + min(want, 1) <= coff + len(data):
            return bytes(data[off - coff:off - coff + want])
        r = self.rows[i]
        if self.starts[i] + off == self._next:
            self._read_ahead(i)
        first, start, n = self._span(i, off, want)
        stored = self._fetch(i, start, n)
        if len(stored) != n:
            raise IntegrityError(f"{self.what}: a stored chunk is truncated: the data is damaged")
        plain = n - (-(-n // crypto.SEALED_BLOCK)) * crypto.TAG_BYTES
        if self._buf is None or len(self._buf) < plain:
            self._buf = bytearray(plain)
        data = crypto.decrypt_blocks(self._key(i), stored, first, r["plain_size"], self.what, out=self._buf)
        coff = first * crypto.BLOCK
        self._cache = (i, coff, data)
        self._next = self.starts[i] + coff + len(data)
        _malloc_trim(len(data))
        return bytes(data[off - coff:off - coff + want])

    def read(self, n: int = -1) -> bytes:
        if self.domain.permission != "owner":
            self.host.recheck(self.domain)      # a shared folder: access may have been revoked since opening
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        out = []
        while n > 0:
            i = bisect.bisect_right(self.starts, self.pos) - 1
            off = self.pos - self.starts[i]
            piece = self._piece(i, off, min(n, self.rows[i]["plain_size"] - off))
            if not piece:
                break
            out.append(piece)
            self.pos += len(piece)
            n -= len(piece)
        return b"".join(out)

    def iter_range(self, offset: int = 0, length: int | None = None, block: int = 1024 * 1024):
        self.seek(offset)
        left = self.size - offset if length is None else min(length, self.size - offset)
        while left > 0:
            data = self.read(min(block, left))
            if not data:
                break
            left -= len(data)
            yield data

    def close(self) -> None:
        for fut in self._ahead.values():
            fut.cancel()
        self._ahead.clear()
        self._cache = (None, 0, b"")
        self._buf = None
        self._keys.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Spool:
    """A scratch file for random-access writes, encrypted with a key that
    lives only in memory (AES-CTR, seekable), so no plaintext reaches the
    disk. Tracks which ranges were written; the rest reads from `base` (the
    version a file opened without truncation started from, kept by
    reference: only changed ranges take disk) up to `base_len`, and as zeros
    beyond it."""

    def __init__(self, folder, base: "Reader | None" = None):
        os.makedirs(folder, exist_ok=True)
        self.f = tempfile.TemporaryFile(dir=folder)
        self.key = os.urandom(32)
        self.nonce = int.from_bytes(os.urandom(16), "big")
        self.extents: list[list[int]] = []     # sorted, merged [start, end)
        self.base = base
        self.base_len = base.size if base is not None else 0
        self.size = self.base_len
        self.written = 0                       # bytes the extents cover: what the scratch file holds

    def _xor(self, offset: int, data) -> bytes:
        block, skip = divmod(offset, 16)
        iv = ((self.nonce + block) % (1 << 128)).to_bytes(16, "big")
        enc = Cipher(algorithms.AES(self.key), modes.CTR(iv)).encryptor()
        if skip:
            enc.update(b"\0" * skip)
        return enc.update(data)

    def _mark(self, start: int, end: int) -> None:
        ex = self.extents
        i = bisect.bisect_left(ex, [start, start])
        if i and ex[i - 1][1] >= start:
            i -= 1
        j = i
        while j < len(ex) and ex[j][0] <= end:
            start, end = min(start, ex[j][0]), max(end, ex[j][1])
            j += 1
        ex[i:j] = [[start, end]]

    def growth(self, offset: int, n: int) -> int:
        """How many more bytes the scratch file would hold after writing n at offset."""
        new, pos, end = 0, offset, offset + n
        for s, e in self.extents[max(0, bisect.bisect_left(self.extents, [offset, offset]) - 1):]:
            if s >= end:
                break
            if e <= pos:
                continue
            new += max(0, s - pos)
            pos = max(pos, e)
        return new + max(0, end - pos)

    def pwrite(self, offset: int, data) -> None:
        if not len(data):
            return
        self.f.seek(offset)
        self.f.write(self._xor(offset, data))
        self.written += self.growth(offset, len(data))
        self._mark(offset, offset + len(data))
        self.size = max(self.size, offset + len(data))

    def pread(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        if self.base is not None and offset < self.base_len and n:
            self.base.seek(offset)
            out = bytearray(self.base.read(min(n, self.base_len - offset)))
            out.extend(bytes(n - len(out)))
        else:
            out = bytearray(n)
        for s, e in self.extents:
            lo, hi = max(s, offset), min(e, offset + n)
            if lo < hi:
                self.f.seek(lo)
                raw = self.f.read(hi - lo)
                out[lo - offset:lo - offset + len(raw)] = self._xor(lo, raw)
        return bytes(out)

    def truncate(self, n: int) -> None:
        self.size = n
        self.base_len = min(self.base_len, n)
        self.f.truncate(n)
        self.extents = [[s, min(e, n)] for s, e in self.extents if s < n]
        self.written = sum(e - s for s, e in self.extents)

    def close(self) -> None:
        self.f.close()
        if self.base is not None:
            self.base.close()
            self.base = None


class SpoolBudget:
    """What the random-access writes of each account hold in scratch files
    in this process (`SharedSpoolBudget`: in every worker of this node). Their bytes are not stored yet, so the account's quota
    does not count them; together they may not exceed what is left of it
    (an account without a quota is bounded by the disk only)."""

    RECHECK = 4 * 1024 * 1024         # the quota's room is looked up again after this much growth

    def __init__(self):
        self._lock = threading.Lock()
        self.held: dict[int, int] = {}

    def take(self, owner_id: int, n: int, room) -> None:
        with self._lock:
            total = self.held.get(owner_id, 0) + n
            if room is not None and total > room:
                raise QuotaExceeded(f"the account's storage quota is full: {total} bytes of unfinished "
                                    f"uploads would exceed the {room} bytes left; finish or close other "
                                    "uploads, delete files or ask for a larger plan; nothing was written")
            self.held[owner_id] = total

    def give(self, owner_id: int, n: int) -> None:
        with self._lock:
            left = self.held.get(owner_id, 0) - n
            if left > 0:
                self.held[owner_id] = left
            else:
                self.held.pop(owner_id, None)


class SharedSpoolBudget(SpoolBudget):
    """The same budget shared by the worker processes of one node (spools
    are that node's scratch files): a table in memory mapped by all of them,
    made before they fork. Slots are found by the account id (open
    addressing); an account whose spools are gone keeps its slot at zero."""

    SLOTS = 4096
    _slot = struct.Struct("<qq")       # account id (0 = free), bytes held

    def __init__(self):
        import mmap
        import multiprocessing
        self._lock = multiprocessing.Lock()
        self._map = mmap.mmap(-1, self.SLOTS * self._slot.size)

    def _find(self, owner_id: int) -> int:
        """The slot of `owner_id`, taken if needed (lock held)."""
        start = owner_id % self.SLOTS
        for i in range(self.SLOTS):
            at = ((start + i) % self.SLOTS) * self._slot.size
            who, _ = self._slot.unpack_from(self._map, at)
            if who == owner_id:
                return at
            if who == 0:
                self._slot.pack_into(self._map, at, owner_id, 0)
                return at
        for at in range(0, len(self._map), self._slot.size):      # full: forget the idle accounts' slots
            if self._slot.unpack_from(self._map, at)[1] == 0:
                self._slot.pack_into(self._map, at, 0, 0)
        return self._find(owner_id)

    def take(self, owner_id: int, n: int, room) -> None:
        with self._lock:
            at = self._find(owner_id)
            total = self._slot.unpack_from(self._map, at)[1] + n
            if room is not None and total > room:
                raise QuotaExceeded(f"the account's storage quota is full: {total} bytes of unfinished "
                                    f"uploads would exceed the {room} bytes left; finish or close other "
                                    "uploads, delete files or ask for a larger plan; nothing was written")
            self._slot.pack_into(self._map, at, owner_id, total)

    def give(self, owner_id: int, n: int) -> None:
        with self._lock:
            at = self._find(owner_id)
            left = self._slot.unpack_from(self._map, at)[1] - n
            self._slot.pack_into(self._map, at, owner_id, max(left, 0))

    @property
    def held(self) -> dict[int, int]:
        with self._lock:
            out = {}
            for at in range(0, len(self._map), self._slot.size):
                who, n = self._slot.unpack_from(self._map, at)
                if who and n:
                    out[who] = n
            return out


spool_budget: SpoolBudget = SpoolBudget()


def share_spool_budget() -> None:
    """Before forking worker processes: one spool budget for all of them."""
    global spool_budget
    spool_budget = SharedSpoolBudget()


class RandomFile:
    """A file open for writing at any offset (SFTP). Writes that arrive in
    order (or nearly: a bounded reorder window) stream straight into a Writer;
    anything else moves to an encrypted spool that is streamed into a Writer at
    commit. A file opened without truncation keeps its current version by
    reference: the spool holds only the ranges written, and commit streams
    the merged content (unchanged chunks dedup to what is stored). What the
    spools of an account hold counts against the room left in its quota
    (`owner_id`, `quota_room`: () -> bytes left, None without a quota).
    Nothing is visible until `commit()`."""

    WINDOW = 16 * 1024 * 1024

    def __init__(self, opener, base_reader=None, spool_dir=None, max_size: int | None = None,
                 owner_id: int | None = None, quota_room=None):
        self._opener = opener                 # () -> Writer for the target
        self.max_size = max_size              # no write or truncate may make the file longer
        self.spool_dir = spool_dir
        self.owner_id, self._quota_room = owner_id, quota_room
        self._held = 0                        # bytes taken from spool_budget
        self._room: int | None = None
        self._room_held = 0                   # _held when the room was looked up
        self.writer = None if base_reader is not None else opener()
        self.spool: Spool | None = None
        self.pos = 0
        self.pending: dict[int, bytes] = {}
        self.pending_bytes = 0
        self.dirty = base_reader is None      # a new or truncated file is written even if empty
        self.closed = False
        if base_reader is not None:
            self.spool = Spool(self.spool_dir, base_reader)

    @property
    def size(self) -> int:
        if self.spool is not None:
            return self.spool.size
        return max([self.pos] + [o + len(d) for o, d in self.pending.items()])

    # -- the account's spool budget ------------------------------------------------------------
    def _reserve(self, n: int) -> None:
        if n <= 0 or self.owner_id is None:
            return
        room = None
        if self._quota_room is not None:
            if self._room is None or self._held - self._room_held >= SpoolBudget.RECHECK:
                self._room, self._room_held = self._quota_room(), self._held
            room = self._room
        spool_budget.take(self.owner_id, n, room)
        self._held += n

    def _settle(self) -> None:
        """Give back what the spool does not hold (any more)."""
        holds = self.spool.written if self.spool is not None and not self.closed else 0
        if self.owner_id is not None and self._held > holds:
            spool_budget.give(self.owner_id, self._held - holds)
            self._held = holds

    def _to_spool(self) -> None:
        if self.spool is not None:
            return
        self._reserve((self.writer.size if self.writer is not None else 0) + self.pending_bytes)
        self.spool = Spool(self.spool_dir)
        if self.writer is not None:
            off = 0
            for data in self.writer.readback():
                self.spool.pwrite(off, data)
                off += len(data)
            self.writer.abort()
            self.writer = None
        for off, data in sorted(self.pending.items()):
            self.spool.pwrite(off, data)
        self.pending.clear()
        self.pending_bytes = 0
        self._settle()

    def _check_size(self, size: int) -> None:
        if self.max_size is not None and size > self.max_size:
            raise QuotaExceeded(f"this would make the file {size} bytes long, more than the whole storage "
                                f"quota ({self.max_size} bytes); nothing was written")

    def pwrite(self, offset: int, data) -> int:
        self._check_size(offset + len(data))
        self.dirty = True
        data = bytes(data)
        if self.spool is None:
            if offset == self.pos:
                self.writer.write(data)
                self.pos += len(data)
                while self.pos in self.pending:
                    piece = self.pending.pop(self.pos)
                    self.pending_bytes -= len(piece)
                    self.writer.write(piece)
                    self.pos += len(piece)
                return len(data)
            if offset > self.pos and offset not in self.pending and \
                    self.pending_bytes + len(data) <= self.WINDOW:
                self.pending[offset] = data
                self.pending_bytes += len(data)
                return len(data)
            self._to_spool()
        self._reserve(self.spool.growth(offset, len(data)))
        self.spool.pwrite(offset, data)
        return len(data)

    def pread(self, offset: int, n: int) -> bytes:
        self._to_spool()
        return self.spool.pread(offset, n)

    def truncate(self, n: int) -> None:
        self._check_size(n)
        self.dirty = True
        if self.spool is None and n == self.size and not self.pending:
            return
        self._to_spool()
        if n > self.spool.size:
            self.spool.size = n
        else:
            self.spool.truncate(n)
            self._settle()

    def commit(self):
        if self.closed:
            raise ValueError("file already closed")
        try:
            if not self.dirty:
                return None
            if self.spool is None and self.pending:
                self._to_spool()
            if self.spool is None:
                return self.writer.commit()
            w = self._opener()
            off = 0
            try:
                while off < self.spool.size:
                    piece = self.spool.pread(off, w.chunk_size)
                    w.write(piece)
                    off += len(piece)
            except BaseException:
                w.abort()
                raise
            return w.commit()
        finally:
            self.closed = True
            if self.spool is not None:
                self.spool.close()
            self._settle()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.writer is not None:
            self.writer.abort()
        if self.spool is not None:
            self.spool.close()
        self._settle()
