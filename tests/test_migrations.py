"""The Alembic migrations build exactly the schema the code declares."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from providers.meta import Database
from providers.meta.schema import metadata


def test_migrations_match_the_declared_schema(cfg):
    db = Database(cfg.database_url)
    db.upgrade()
    db.upgrade()                                  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    db.dispose()
    assert diff == [], f"schema.py and the migrations differ; add an Alembic revision: {diff}"


def test_upgrading_keeps_existing_chunks_readable(cfg):
    """Down to the first revision and back up: a stored file's chunk rows
    keep their hash and location, and the file reads back."""
    import os

    from providers.storage import Storage
    st = Storage.open(cfg)
    st.accounts.create("alice", "alice-password")
    data = os.urandom(400_000)                    # above small_file_bytes: a blob, which every revision reads
    st.open_account("alice", "alice-password").write_bytes("/f", data)
    st.close()
    db = Database(cfg.database_url)
    db.migrate("downgrade", "0001")
    with db.read() as c:
        assert c.exec_driver_sql("SELECT stored_sha256 FROM chunks").scalar_one().startswith("blake3:")
    db.dispose()
    st = Storage.open(cfg)                        # upgrades to the newest revision on open
    try:
        assert st.open_account("alice", "alice-password").read_bytes("/f") == data
        assert st.fsck()["damaged"] == []
    finally:
        st.close()


def test_a_downgrade_that_would_lose_small_files_refuses_and_changes_nothing(cfg):
    """Small files live in the database from revision 0013 on: going back
    before it is refused while any is there, and both accounts' files
    still read back."""
    import pytest

    from providers.storage import Storage
    st = Storage.open(cfg)
    st.accounts.create("alice", "alice-password")
    st.accounts.create("bob", "bob-password")
    st.open_account("alice", "alice-password").write_bytes("/small.txt", b"alice's note")
    st.open_account("bob", "bob-password").write_bytes("/big.bin", b"b" * 400_000)
    st.close()
    db = Database(cfg.database_url)
    with pytest.raises(RuntimeError, match="1 small files' chunks are kept in the database"):
        db.migrate("downgrade", "0012")
    db.dispose()
    st = Storage.open(cfg)
    try:
        assert st.open_account("alice", "alice-password").read_bytes("/small.txt") == b"alice's note"
        assert st.open_account("bob", "bob-password").read_bytes("/big.bin") == b"b" * 400_000
        assert st.fsck()["damaged"] == []
    finally:
        st.close()
