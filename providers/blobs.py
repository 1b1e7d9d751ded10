"""Blob stores: where encrypted chunks live, addressed by name. No crypto here.

A store has five operations: put (atomic: a reader sees all or nothing),
get (whole or a byte range), delete (idempotent), names (for gc) and
exists. Names are opaque random hex strings chosen by the caller.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Iterator

from .errors import NotFound, StorageUnavailable

log = logging.getLogger(__name__)

try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _syncfs = _libc.syncfs
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
except (OSError, AttributeError):
    _syncfs = _sync_file_range = None
SYNC_FILE_RANGE_WRITE = 2


class BlobStore:
    READ_AHEAD_CHUNKS = 0       # chunks a sequential reader fetches ahead (providers/streams.py)

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
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError


class LocalBlobStore(BlobStore):
    """Files under a folder, fanned out by the first two byte pairs of the name."""

    READ_AHEAD_CHUNKS = 3       # chunk files read ahead per sequential reader

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if len(name) < 8 or not all(c in "0123456789abcdef" for c in name):
            raise ValueError(f"bad blob name {name!r}")
        return self.root / name[:2] / name[2:4] / name

    def put(self, name: str, data: bytes) -> None:
        # Names are random and never reused, so the blob is written in place:
        # a crash mid-write leaves a partial blob that no metadata refers to,
        # which gc reclaims. Durability comes from sync() before the metadata
        # that refers to the blob commits (one syncfs instead of an fsync per
        # blob).
        final = self._path(name)
        try:
            try:
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                final.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if _sync_file_range is not None:
                    # start writing it to disk now, without waiting: the
                    # sync() before publishing then waits for little
                    _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
            finally:
                os.close(fd)
        except OSError as e:
            final.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageUnavailable("the blob store's disk is full: free space or add storage, "
                                         "then retry") from None
            raise StorageUnavailable(f"could not write to the blob store: {e.strerror}") from None

    def sync(self, names=()) -> None:
        """Make these blobs durable: an fsync each for a few, else one syncfs
        of the store's filesystem (falls back to sync)."""
        if 0 < len(names) <= 4:
            for name in names:
                fd = os.open(self._path(name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs is None or _syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

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

    def names(self) -> Iterator[tuple[str, float]]:
        for top in sorted(self.root.iterdir()):
            if len(top.name) != 2 or not top.is_dir():
                continue
            for sub in sorted(top.iterdir()):
                for f in sorted(sub.iterdir()):
                    try:
                        yield f.name, f.stat().st_mtime
                    except FileNotFoundError:
                        continue


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
            self.s3.create_bucket(Bucket=bucket)

    def put(self, name: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=bytes(data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        kw = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kw["Range"] = f"bytes={offset}-{end}"
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name, **kw)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            raise NotFound(f"stored chunk {name} is missing from the blob store") from None

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def exists(self, name: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.prefix + name)
            return True
        except Exception:
            return False

    def names(self) -> Iterator[tuple[str, float]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):], obj["LastModified"].timestamp()


def open_store(cfg) -> BlobStore:
    if cfg.storage.blob_backend == "s3":
        keyfile = cfg.path(cfg.storage.s3_access_key_file, "")
        access, _, secret = keyfile.read_text().strip().partition(":")
        return S3BlobStore(cfg.storage.s3_endpoint, cfg.storage.s3_bucket, cfg.storage.s3_region,
                           access, secret, prefix=cfg.storage.s3_prefix)
    return LocalBlobStore(cfg.blob_dir)
