"""Nothing readable at rest: no plaintext content or names in the blob store
or the database files, in either mode; tampering is detected and named."""
import os
import pathlib

import pytest

from providers.errors import IntegrityError

from backend import damage, database_values, stored_blobs

MARKER = "QuokkaMarker7f3a"


def all_bytes_under(root: pathlib.Path):
    for p in root.rglob("*"):
        if p.is_file():
            yield p, p.read_bytes()


@pytest.mark.parametrize("mode", ["managed", "private"])
def test_no_plaintext_at_rest(storage, cfg, mode):
    storage.accounts.create("marker", "marker-password", mode=mode)
    v = storage.open_account("marker", "marker-password")
    v.mkdir(f"/{MARKER}-folder")
    body = (MARKER + " secret content ") * 5000
    v.write_bytes(f"/{MARKER}-folder/{MARKER}-file.txt", body.encode())
    v.write_bytes(f"/{MARKER}-small.txt", MARKER.encode())
    v.set_props(f"/{MARKER}-small.txt", {"{urn:x}" + MARKER: MARKER.encode()})
    f = v.open_random(f"/{MARKER}-random.bin")
    f.pwrite(100_000, MARKER.encode() * 100)
    f.pwrite(0, MARKER.encode())
    f.commit()
    v.move(f"/{MARKER}-small.txt", f"/{MARKER}-moved.txt")
    v.delete(f"/{MARKER}-moved.txt")
    storage.db.dispose()        # flush the SQLite WAL into the main file too
    needles = [MARKER.encode(), MARKER.encode("utf-16-le"), MARKER.lower().encode()]
    scanned = 0
    for p, data in all_bytes_under(cfg.data_dir):
        scanned += len(data)
        for n in needles:
            assert n not in data, f"plaintext marker found in {p.relative_to(cfg.data_dir)}"
    for name, _ in stored_blobs(storage.blobs):            # a bucket's objects too
        data = storage.blobs.get(name)
        scanned += len(data)
        for n in needles:
            assert n not in data, f"plaintext marker found in blob {name}"
    assert scanned > 100_000
    for table, raw in database_values(storage):        # whatever the database
        for n in needles:
            assert n not in raw, f"plaintext marker found in table {table}"
    assert v.read_bytes(f"/{MARKER}-folder/{MARKER}-file.txt") == body.encode()


def test_tampered_chunk_is_an_error_and_fsck_names_the_file(storage, alice, cfg):
    data = os.urandom(2_500_000)
    alice.write_bytes("/photos/a.jpg", data) if alice.exists("/photos") else None
    alice.mkdir("/photos")
    alice.write_bytes("/photos/a.jpg", data)
    alice.write_bytes("/other.txt", b"fine")
    name, size = [b for b in stored_blobs(storage.blobs) if b[1] > 1_000_000][0]
    damage(storage.blobs, name, size // 2)
    with pytest.raises(IntegrityError) as e:
        alice.read_bytes("/photos/a.jpg")
    assert "damaged" in str(e.value) or "tampered" in str(e.value)
    with alice.open_read("/photos/a.jpg") as r, pytest.raises(IntegrityError):
        list(r.iter_range(0, block=65536))  # the damaged chunk was fetched ahead: still an error
    assert alice.read_bytes("/other.txt") == b"fine"
    report = storage.fsck()
    assert len(report["damaged"]) == 1
    assert report["damaged"][0]["files"] == ["/photos/a.jpg"]


def test_fsck_of_private_account_without_password_checks_ciphertext(storage, cfg):
    storage.accounts.create("priv", "priv-password", mode="private")
    v = storage.open_account("priv", "priv-password")
    v.write_bytes("/x", os.urandom(100_000))
    assert storage.fsck(user="priv")["damaged"] == []
    name, size = stored_blobs(storage.blobs)[0]
    damage(storage.blobs, name, size - 1, 0xFF)
    report = storage.fsck(user="priv")
    assert report["chunks_decrypted"] == 0
    assert len(report["damaged"]) == 1 and "hash" in report["damaged"][0]["problem"]


def test_fsck_still_checks_chunks_recorded_with_sha256(storage, cfg):
    """Chunks written before the stored hash became BLAKE3 keep their
    SHA-256; fsck checks each against the hash it was recorded with."""
    import hashlib

    from sqlalchemy import select, update

    from providers.meta.schema import chunks
    storage.accounts.create("old", "old-password", mode="private")
    storage.open_account("old", "old-password").write_bytes("/x", os.urandom(50_000))
    with storage.db.write() as c:
        cid, name, recorded = c.execute(select(chunks.c.id, chunks.c.blob_name, chunks.c.stored_hash)).one()
        assert recorded.startswith("blake3:")
        stored = storage.blobs.get(name)
        c.execute(update(chunks).where(chunks.c.id == cid).values(stored_hash=hashlib.sha256(stored).hexdigest()))
    assert storage.fsck(user="old")["damaged"] == []
    damage(storage.blobs, name, len(stored) // 2)
    damaged = storage.fsck(user="old")["damaged"]
    assert len(damaged) == 1 and "hash" in damaged[0]["problem"]


def _legacy_chunk_id(keys, plaintext):
    import hashlib
    import hmac
    return hmac.new(keys.dedup, plaintext, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("scheme", ["blake3", "hmac-sha256"])
def test_fsck_checks_each_chunk_id_against_the_scheme_that_made_it(storage, monkeypatch, scheme):
    """Dedup ids are keyed BLAKE3; chunks stored before keep their
    HMAC-SHA256 ids. fsck recomputes each id the way it was made: a chunk
    whose content does not match its id is named, under either scheme."""
    from providers import crypto
    make = crypto.chunk_id if scheme == "blake3" else _legacy_chunk_id
    storage.accounts.create("ids", "ids-password")
    v = storage.open_account("ids", "ids-password")
    good, bad = os.urandom(300_000), os.urandom(300_000)
    monkeypatch.setattr(crypto, "chunk_id", make)
    v.write_bytes("/good.bin", good)
    monkeypatch.setattr(crypto, "chunk_id", lambda keys, p: make(keys, bytes(p) + b"!"))
    v.write_bytes("/bad.bin", bad)
    monkeypatch.undo()
    assert v.read_bytes("/good.bin") == good and v.read_bytes("/bad.bin") == bad
    damaged = storage.fsck(user="ids")["damaged"]
    assert [(d["files"], d["problem"]) for d in damaged] == [
        (["/bad.bin"], "decrypts to content that does not match its id")]


def test_chunks_with_old_ids_stay_readable_and_new_writes_get_blake3_ids(storage, monkeypatch):
    from sqlalchemy import select

    from providers import crypto
    from providers.meta.schema import chunks
    storage.accounts.create("mix", "mix-password")
    v = storage.open_account("mix", "mix-password")
    data = os.urandom(3 * 1024 * 1024)
    monkeypatch.setattr(crypto, "chunk_id", _legacy_chunk_id)
    v.write_bytes("/a.bin", data)
    monkeypatch.undo()
    v.write_bytes("/b.bin", data)
    v.write_bytes("/c.bin", data)
    with storage.db.read() as c:
        ids = [r[0] for r in c.execute(select(chunks.c.dedup_id))]
    assert len(ids) == 6              # the old ids no longer match new writes; new ones dedup among themselves
    assert sum(i.startswith("b:") and len(i) == 64 for i in ids) == 3
    assert all(v.read_bytes(p) == data for p in ("/a.bin", "/b.bin", "/c.bin"))
    assert storage.fsck(user="mix")["damaged"] == []
