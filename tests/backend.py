"""Where a test's server keeps its data, for every test alike.

The test command runs the whole suite twice: on SQLite with a local blob
folder (the embedded default), then with COFFER_TEST_BACKEND=postgres-s3 on
PostgreSQL (COFFER_TEST_DATABASE_URL) with blobs in an S3 bucket (S3_ENDPOINT,
S3_ACCESS_KEY, S3_SECRET_KEY). Every config a test makes, in-process or for a
real `coffer serve`, takes its [storage] options from here: on the second pass
each gets a PostgreSQL schema and an S3 key prefix of its own, so tests never
see each other's data. A test about one backend's own files (local packs,
the SQLite file) asks for that backend explicitly.
"""
from __future__ import annotations

import atexit
import os
import uuid
from pathlib import Path

BACKEND = os.environ.get("COFFER_TEST_BACKEND", "sqlite-local")
if BACKEND not in ("sqlite-local", "postgres-s3"):
    raise SystemExit(f"COFFER_TEST_BACKEND must be sqlite-local or postgres-s3, not {BACKEND!r}")
ON_POSTGRES = BACKEND == "postgres-s3"
BUCKET = "coffer-tests"

_schemas: list[str] = []


def _need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise RuntimeError(f"COFFER_TEST_BACKEND=postgres-s3 needs {var} (scripts/test sets it)")
    return value


def fresh_database_url() -> str:
    """A new, empty schema of the test PostgreSQL database, as a URL whose
    connections use it; dropped when this test process ends."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    base = _need("COFFER_TEST_DATABASE_URL")
    schema = "t_" + uuid.uuid4().hex[:16]
    eng = create_engine(base)
    with eng.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    _schemas.append(schema)
    return make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


@atexit.register
def _drop_schemas() -> None:
    if not _schemas:
        return
    from sqlalchemy import create_engine, text
    eng = create_engine(os.environ["COFFER_TEST_DATABASE_URL"])
    try:
        with eng.begin() as c:
            for schema in _schemas:
                c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    except Exception:            # a server still connected: the run's database goes with the run
        pass
    finally:
        eng.dispose()


def storage_options(folder: Path, *, blobs: str | None = None, database: str | None = None) -> dict:
    """[storage] options for data kept under `folder`. `blobs="local"` or
    `database="sqlite"` pins a test about that backend's own files;
    `blobs="s3"` with `database="postgres"` a test of several nodes (the
    test command runs both services for both passes)."""
    folder = Path(folder)
    opts: dict = {"data_dir": str(folder / "var")}
    if (ON_POSTGRES and database != "sqlite") or database == "postgres":
        opts["database_url"] = fresh_database_url()
    if (ON_POSTGRES and blobs != "local") or blobs == "s3":
        keyfile = folder / "s3-credentials"
        folder.mkdir(parents=True, exist_ok=True)
        keyfile.write_text(f"{_need('S3_ACCESS_KEY')}:{_need('S3_SECRET_KEY')}\n")
        keyfile.chmod(0o600)
        opts.update(blob_backend="s3", s3_endpoint=_need("S3_ENDPOINT"), s3_bucket=BUCKET,
                    s3_access_key_file=str(keyfile), s3_prefix=uuid.uuid4().hex + "/")
    return opts


def storage_toml(folder: Path, **kw) -> str:
    """The [storage] table of a config file, as TOML text."""
    return "[storage]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in storage_options(folder, **kw).items())


def storage_toml_of(cfg) -> str:
    """The [storage] table of a loaded config, for a config file that must
    reach the same data (a subprocess of an in-process test)."""
    from dataclasses import asdict
    opts = {k: v for k, v in asdict(cfg.storage).items() if v != ""}
    opts["data_dir"] = str(cfg.data_dir)
    return "[storage]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in opts.items())


def _toml(v) -> str:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else '"' + str(v).replace('"', '\\"') + '"'


def stored_blobs(store) -> list[tuple[str, int]]:
    """(name, size) of every blob in a store, local folder or bucket."""
    return [(name, size) for name, _, size in store.entries()]


def damage(store, name: str, at: int, flip: int = 0x01) -> None:
    """Flip bits of one stored byte, as a failing disk or someone with write
    access to the blob store would: in place in a local folder, by
    overwriting the object in a bucket; a small file's chunk in the
    database, by updating its row."""
    from sqlalchemy import update

    from providers import small_blobs
    from providers.meta.schema import small_blobs as rows
    raw = bytearray(store.get(name))
    raw[at] ^= flip
    if small_blobs.is_small(name):
        with store.db.write() as c:
            c.execute(update(rows).where(rows.c.name == name).values(data=bytes(raw)))
        return
    store = getattr(store, "inner", store)
    path = getattr(store, "_path", None)
    if path is not None:
        path(name).write_bytes(bytes(raw))
    else:
        store.put(name, bytes(raw))


def database_values(storage):
    """Every value of every row of every table, as bytes, whatever the
    database: for checks that something is (or is no longer) stored."""
    from sqlalchemy import select

    from providers.meta.schema import metadata
    with storage.db.read() as c:
        for table in metadata.sorted_tables:
            for row in c.execute(select(table)):
                for value in row:
                    yield table.name, bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
