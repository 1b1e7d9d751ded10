"""Metadata: schema, engine and the queries the storage core runs. No SQL elsewhere."""
from .db import Database, IntegrityViolation, now_us  # noqa: F401
