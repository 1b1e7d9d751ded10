"""Blob stores: where encrypted chunks live, addressed by name. No crypto here.

A store has these operations: put (atomic: a reader sees all or nothing),
get (whole or a byte range), delete (idempotent), entries and names (for
gc) and exists. Names are opaque random hex strings (new_name).

An upload stores its chunks through a pack (open_pack): on local disk one
blob holds up to PACK_BYTES of consecutive chunks, each at its own offset,
because a file per 1 MiB chunk made creating (and reading back) files the
largest cost of a large upload. A chunk's location is (blob name, offset,
stored size). A pack blob stays while any chunk in it is referenced; gc
rewrites packs that are mostly dead space. Object stores keep one object
per chunk.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from . import turn
from .errors import NotFound, StorageUnavailable

log = logging.getLogger(__name__)

try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
except (OSError, AttributeError):
    _sync_file_range = None
SYNC_FILE_RANGE_WRITE = 2


def _fsync_path(path: Path, data_only: bool = False) -> None:
    turn.leave()
    fd = os.open(path, os.O_RDONLY)
    try:
        (os.fdatasync if data_only else os.fsync)(fd)
    finally:
        os.close(fd)


def new_name() -> str:
    return os.urandom(16).hex()


class Pack:
    """Where one upload's chunks go, in order: append() returns the chunk's
    (blob name, offset). `names` lists every blob created, a failed one
    included, so that an aborted upload can delete them all. Safe to call
    from several helper threads. This one gives each chunk a blob of its own."""

    def __init__(self, store: "BlobStore"):
        self.store = store
        self.names: list[str] = []
        self._lock = threading.Lock()

    def append(self, data) -> tuple[str, int]:
        name = new_name()
        with self._lock:
            self.names.append(name)
        self.store.put(name, data)
        return name, 0

    def close(self) -> None:
        """No more appends (the blobs stay)."""

    def discard(self) -> None:
        """Close, and delete every blob this pack created (what a crash
        leaves instead, gc reclaims)."""
        self.close()
        for name in self.names:
            try:
                self.store.delete(name)
            except Exception:
                log.warning("could not delete a blob of an abandoned upload; gc will reclaim it")


class BlobStore:
    READ_AHEAD_CHUNKS = 0       # chunks a sequential reader fetches ahead (providers/streams.py)

    def open_pack(self) -> Pack:
        return Pack(self)

    def put(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def sync(self, names=()) -> None:
        """Make these puts durable before metadata refers to them."""

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def names(self) -> Iterator[tuple[str, float]]:
        """Every stored name with its modification time (seconds)."""
        return ((name, mtime) for name, mtime, _size in self.entries())

    def entries(self) -> Iterator[tuple[str, float, int]]:
        """Every stored name with its modification time and size."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError


def _write_error(e: OSError) -> StorageUnavailable:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageUnavailable("the blob store's disk is full: free space or add storage, then retry")
    return StorageUnavailable(f"could not write to the blob store: {e.strerror}")


class LocalPack(Pack):
    """Consecutive chunks appended to one file until it holds PACK_BYTES,
    then to a new one. Appends from helper threads take turns (the write is
    a copy into the page cache; hashing and encryption stay parallel).

    gc spares blobs modified within its grace period (an hour by default)
    and takes older ones nothing refers to for leftovers of a crash. An
    upload that runs longer than that therefore refreshes the modification
    time of the packs it filled earlier, every KEEPALIVE seconds."""

    KEEPALIVE = 600.0

    def __init__(self, store: "LocalBlobStore"):
        super().__init__(store)
        self._fd: int | None = None
        self._name = ""
        self._size = 0
        self._touched = time.monotonic()

    def append(self, data) -> tuple[str, int]:
        with self._lock:
            if time.monotonic() - self._touched >= self.KEEPALIVE:
                self._keep_alive()
            try:
                if self._fd is None:
                    self._name = new_name()
                    self.names.append(self._name)
                    self._fd, self._size = self.store._create(self._name), 0
                name, offset = self._name, self._size
                self.store._write(self._fd, data, offset)
            except OSError as e:
                self._close()
                raise _write_error(e) from None
            self._size += len(data)
            if self._size >= self.store.PACK_BYTES:
                self._close()
            return name, offset

    def _keep_alive(self) -> None:
        self._touched = time.monotonic()
        for name in self.names:
            try:
                os.utime(self.store._path(name))
            except OSError:
                pass             # a failed pack, already gone

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()


class LocalBlobStore(BlobStore):
    """Files under a folder, fanned out by the first two byte pairs of the name."""

    READ_AHEAD_CHUNKS = 3       # chunks read ahead per sequential reader
    PACK_BYTES = 16 * 1024 * 1024

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._durable: set[Path] = set()      # fan-out folders whose own entries this process has synced

    def _path(self, name: str) -> Path:
        if len(name) < 8 or not all(c in "0123456789abcdef" for c in name):
            raise ValueError(f"bad blob name {name!r}")
        return self.root / name[:2] / name[2:4] / name

    # Names are random and never reused, so blobs are written in place: a
    # crash mid-write leaves a partial blob that no metadata refers to, which
    # gc reclaims. Durability comes from sync() before the metadata that
    # refers to the blob commits.
    def _create(self, name: str) -> int:
        final = self._path(name)
        try:
            return os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    @staticmethod
    def _write(fd: int, data, offset: int) -> None:
        view, at = memoryview(data), offset
        while view:
            n = os.pwrite(fd, view, at)
            view, at = view[n:], at + n
        if _sync_file_range is not None:
            # start writing it to disk now, without waiting: the sync()
            # before publishing then waits for little
            _sync_file_range(fd, offset, len(data), SYNC_FILE_RANGE_WRITE)

    def put(self, name: str, data: bytes) -> None:
        try:
            fd = self._create(name)
            try:
                self._write(fd, data, 0)
            finally:
                os.close(fd)
        except OSError as e:
            self._path(name).unlink(missing_ok=True)
            raise _write_error(e) from None

    def open_pack(self) -> Pack:
        return LocalPack(self)

    def sync(self, names=()) -> None:
        """Make these blobs durable, and their folder entries: an fdatasync
        each (their bytes were sent to disk as they were written, so this
        mostly waits), then an fsync of the fan-out folders on their way (a
        folder may be new too). Not a syncfs of the whole filesystem, which
        would also wait for whatever else on it has unwritten data."""
        folders = set()
        for name in names:
            path = self._path(name)
            folders.add(path.parent)
            for up in (path.parent, path.parent.parent):
                if up not in self._durable:           # its own entry may not be on disk yet
                    folders.add(up.parent)
            _fsync_path(path, data_only=True)
        for folder in sorted(folders, key=lambda p: -len(p.parts)):      # deepest first
            _fsync_path(folder)
        for name in names:                            # their entries are on disk now
            path = self._path(name)
            self._durable.update((path.parent, path.parent.parent))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise NotFound(f"stored chunk {name} is missing from the blob store") from None

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def entries(self) -> Iterator[tuple[str, float, int]]:
        for top in sorted(self.root.iterdir()):
            if len(top.name) != 2 or not top.is_dir():
                continue
            for sub in sorted(top.iterdir()):
                for f in sorted(sub.iterdir()):
                    try:
                        st = f.stat()
                    except FileNotFoundError:
                        continue
                    yield f.name, st.st_mtime, st.st_size


@contextlib.contextmanager
def _s3_errors(what: str):
    """An object store that cannot be reached or fails (after botocore's own
    retries) as StorageUnavailable: the client gets a clean error (503,
    SSH_FX_FAILURE) saying so, and the next request tries again. A missing
    object stays the caller's to handle."""
    from botocore.exceptions import BotoCoreError, ClientError
    turn.leave()                       # a trip over the network
    try:
        yield
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise
        raise StorageUnavailable(f"could not {what} the object store ({code or 'error'}: "
                                 f"{e.response.get('Error', {}).get('Message', '')[:120]}); nothing was "
                                 "changed; try again shortly") from None
    except BotoCoreError as e:
        raise StorageUnavailable(f"could not {what} the object store ({str(e)[:160]}); nothing was changed; "
                                 "try again shortly") from None


class S3BlobStore(BlobStore):
    """An S3-compatible bucket (AWS, MinIO, SeaweedFS...), path-style addressing."""

    READ_AHEAD_CHUNKS = 4       # requests in flight per sequential reader

    def __init__(self, endpoint: str, bucket: str, region: str, access_key: str, secret_key: str,
                 prefix: str = "blobs/"):
        import boto3
        from botocore.config import Config as BotoConfig
        self.bucket, self.prefix = bucket, prefix
        self.s3 = boto3.client("s3", endpoint_url=endpoint or None, region_name=region,
                               aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                               config=BotoConfig(s3={"addressing_style": "path"},
                                                 retries={"max_attempts": 5, "mode": "standard"},
                                                 max_pool_connections=50))
        try:
            self.s3.head_bucket(Bucket=bucket)
        except Exception:
            try:
                self.s3.create_bucket(Bucket=bucket)
            except self.s3.exceptions.BucketAlreadyOwnedByYou:
                pass                # another process or node made it a moment ago

    def put(self, name: str, data: bytes) -> None:
        with _s3_errors("write to"):
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=bytes(data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        kw = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kw["Range"] = f"bytes={offset}-{end}"
        try:
            with _s3_errors("read from"):
                return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name, **kw)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            raise NotFound(f"stored chunk {name} is missing from the blob store") from None

    def delete(self, name: str) -> None:
        with _s3_errors("delete from"):
            self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def exists(self, name: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.prefix + name)
            return True
        except Exception:
            return False

    def entries(self) -> Iterator[tuple[str, float, int]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):], obj["LastModified"].timestamp(), obj["Size"]


def open_store(cfg) -> BlobStore:
    if cfg.storage.blob_backend == "s3":
        keyfile = cfg.path(cfg.storage.s3_access_key_file, "")
        access, _, secret = keyfile.read_text().strip().partition(":")
        return S3BlobStore(cfg.storage.s3_endpoint, cfg.storage.s3_bucket, cfg.storage.s3_region,
                           access, secret, prefix=cfg.storage.s3_prefix)
    return LocalBlobStore(cfg.blob_dir)
