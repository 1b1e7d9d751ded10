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
