"""Alembic environment: run with a connection handed over by Database.upgrade()."""
from alembic import context

from providers.meta.schema import metadata

conn = context.config.attributes.get("connection")
if conn is None:   # `alembic` command line: take the URL from the config
    from sqlalchemy import create_engine
    conn = create_engine(context.config.get_main_option("sqlalchemy.url")).connect()
context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
