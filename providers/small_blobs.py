"""Small files' chunks in the database.

A small file's one encrypted chunk (at most `[storage] small_file_bytes`)
is not written to the blob store: its row in `small_blobs` is inserted in
the transaction that publishes the version (providers/publish.py), so the
upload is durable with the database's own commit, one sync shared by
concurrent writers, instead of a new blob file, its folder entry and the
commit (three syncs, two of them a file system's slowest: a new file's
inode and its folder's entry). On an object store it also saves a request
per file.

Everything else sees one blob store (`SmallBlobs`, what `Storage.blobs`
is): a small blob's name is 24 hex characters where a blob's is 32, and
get, delete, entries (gc's orphan sweep), exists and sync send each name
where it lives. Deleting a row deletes the data (SQLite zeroes it:
secure_delete), so purging and erasure stay immediate. Readers receive the
bytes with the chunk rows (providers/meta/tree.py), without a second query.
"""
from __future__ import annotations

import os

from sqlalchemy import delete, func, insert, select

from .errors import NotFound
from .meta.db import HotStatement
from .meta.schema import small_blobs

NAME_HEX = 24


def new_name() -> str:
    return os.urandom(NAME_HEX // 2).hex()


def is_small(name: str) -> bool:
    return len(name) == NAME_HEX


_INSERT = HotStatement(insert(small_blobs))


def insert_rows(c, rows: list[dict]) -> None:
    """Store small chunks (name, data, created_us) in the caller's transaction."""
    for row in rows:
        _INSERT.run(c, row)


class SmallBlobs:
    """The blob store `inner` and the database's small blobs, as one store."""

    def __init__(self, inner, db, small_bytes: int):
        self.inner, self.db, self.small_bytes = inner, db, small_bytes

    def __getattr__(self, attr):               # the inner store's own settings (READ_AHEAD_CHUNKS, ...)
        return getattr(self.inner, attr)

    def open_pack(self):
        return self.inner.open_pack()

    def put(self, name: str, data: bytes) -> None:
        self.inner.put(name, data)

    def sync(self, names=()) -> None:
        self.inner.sync([n for n in names if not is_small(n)])

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if not is_small(name):
            return self.inner.get(name, offset, length)
        with self.db.read() as c:
            data = c.execute(select(small_blobs.c.data).where(small_blobs.c.name == name)).scalar()
        if data is None:
            raise NotFound(f"stored chunk {name} is missing from the database")
        return bytes(data[offset:None if length is None else offset + length])

    def delete(self, name: str) -> None:
        self.delete_many([name])

    def delete_many(self, names) -> None:
        """Delete blobs; the small ones in one transaction."""
        small = [n for n in names if is_small(n)]
        for name in names:
            if not is_small(name):
                self.inner.delete(name)
        for i in range(0, len(small), 500):              # well under every database's parameter limit
            with self.db.write() as c:
                c.execute(delete(small_blobs).where(small_blobs.c.name.in_(small[i:i + 500])))

    def names(self):
        return ((name, mtime) for name, mtime, _size in self.entries())

    def entries(self):
        yield from self.inner.entries()
        with self.db.read() as c:
            rows = c.execute(select(small_blobs.c.name, small_blobs.c.created_us,
                                    func.length(small_blobs.c.data))).all()
        for name, created_us, size in rows:
            yield name, created_us / 1e6, size

    def exists(self, name: str) -> bool:
        if not is_small(name):
            return self.inner.exists(name)
        with self.db.read() as c:
            return c.execute(select(small_blobs.c.name).where(small_blobs.c.name == name)).first() is not None
