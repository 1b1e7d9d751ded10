"""Engine, transactions and schema upgrades.

SQLite runs in WAL mode with a busy timeout; write transactions start with
BEGIN IMMEDIATE so two writers queue instead of failing on lock upgrade.
PostgreSQL (or any SQLAlchemy URL) works the same way through `write()`
and `read()`.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import logging
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, event, exc, inspect
from sqlalchemy.engine import Connection, Engine

from .. import turn
from ..errors import StorageUnavailable

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def now_us() -> int:
    return time.time_ns() // 1000


WRITER_LOCK = 0x436f66666572        # the advisory lock key of write transactions on PostgreSQL ("Coffer")


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file mode 0600 (SQLite gives its -wal and -shm files
    the same mode) and tighten one made before, whatever the umask: it holds
    profiles, e-mail addresses and session addresses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except FileNotFoundError:
            pass


class WriterQueue:
    """Writers to one SQLite file wait for each other here, in line, before
    BEGIN IMMEDIATE: threads on a lock of this process's, processes (the
    workers of `coffer serve`, an admin command) on an flock of a file
    beside the database. SQLite's own wait for its write lock polls with
    sleeps that grow to 100 ms, so a writer behind a 2 ms transaction slept
    up to 100 ms while the lock stood free; with 32 clients writing, that
    made the slowest hundredth of uploads wait 0.4-0.8 s.

    Re-entrant within a thread (a nested write still fails on SQLite's lock,
    as before, rather than waiting here for ever). The file is opened in
    each process that writes (an flock belongs to an open file, which a
    forked worker would otherwise share with its parent)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self):
        self._lock.acquire()
        try:
            if self._depth == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        try:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


def unavailable(e: Exception) -> StorageUnavailable:
    """A database that cannot be reached (down, restarting, out of
    connections) or stays locked: the request fails cleanly (503, or
    SSH_FX_FAILURE with this message) and the next one tries again; the
    connection pool drops broken connections by itself (pool_pre_ping)."""
    first = str(getattr(e, "orig", e) or e).strip().splitlines()
    return StorageUnavailable(f"the database is not available ({first[0][:200] if first else type(e).__name__}); "
                              "nothing was changed; try again shortly")


class GroupSync:
    """Makes committed SQLite transactions durable with as few fsyncs as that
    takes. With WAL and synchronous=NORMAL a commit is written to the -wal
    file but not synced (a power cut could lose it); a writer that is about
    to acknowledge calls `sync()` after committing. One fsync of the -wal
    file covers every commit written before it began, so writers that commit
    while a sync is under way share the next one instead of syncing one after
    another (group commit). Writers in other processes sync the same file."""

    def __init__(self, wal: Path):
        self.wal = wal
        self._lock = threading.Lock()        # guards the counters
        self._syncing = threading.Lock()     # one fsync at a time
        self.requested = self.done = 0
        self.syncs = 0

    def sync(self) -> None:
        with self._lock:
            self.requested += 1
            ticket = self.requested
        with self._syncing:
            if self.done >= ticket:          # a sync that began after this commit has finished
                return
            with self._lock:
                target = self.requested      # every commit up to here is in the file already
            try:
                fd = os.open(self.wal, os.O_RDONLY)
            except FileNotFoundError:        # checkpointed and removed: the database file holds it, synced
                self.done = target
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.syncs += 1
            self.done = target


class Database:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._idle: list[Connection] = []               # idle connections on SQLite (see _take)
        self.group_sync: GroupSync | None = None
        self.writers: WriterQueue | contextlib.nullcontext = contextlib.nullcontext()
        if self.is_sqlite:
            path = (url.split("///", 1)[1] if "///" in url else "").split("?")[0]
            if path and path != ":memory:":
                _private_sqlite_file(Path(path))
                self.group_sync = GroupSync(Path(path + "-wal"))
                self.writers = WriterQueue(Path(path + "-writers"))
            self.engine: Engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                                                pool_size=20, max_overflow=40)
            event.listen(self.engine, "connect", _sqlite_connect)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=40, pool_pre_ping=True)

    def write(self):
        """A write transaction (committed on success, rolled back on error).
        It may wait for another writer, and for the sync: out of the turn."""
        turn.leave()
        if self.is_sqlite:
            return self._sqlite_transaction("IMMEDIATE")
        return self._transaction("IMMEDIATE")

    def read(self):
        """A read transaction: a consistent view for its duration. On
        SQLite it reads the file in place; another database is a trip over
        the network, made out of the turn."""
        if self.is_sqlite:
            return self._sqlite_transaction("DEFERRED")
        turn.leave()
        return self._transaction("DEFERRED")

    IDLE_CONNECTIONS = 16

    def _take(self) -> Connection:
        """On SQLite, an idle connection kept checked out of the pool, or a
        new one: a checkout and checkin cost about 40 µs, several times the
        BEGIN and COMMIT themselves, and most requests are one small read."""
        try:
            return self._idle.pop()
        except IndexError:
            return self.engine.connect()

    def _give_back(self, conn: Connection, clean: bool) -> None:
        """Keep a connection for the next caller only when it ended cleanly
        and outside a transaction (an error of the caller's, such as a missing
        path, rolls back first); one that saw a database error is closed."""
        if (clean and not conn.closed and not conn.invalidated
                and not conn.connection.driver_connection.in_transaction
                and len(self._idle) < self.IDLE_CONNECTIONS):
            self._idle.append(conn)
        else:
            conn.close()

    @contextlib.contextmanager
    def _sqlite_transaction(self, mode: str):
        conn = self._take()
        clean = True
        try:
            with self.writers if mode == "IMMEDIATE" else contextlib.nullcontext(), conn.begin():
                _sqlite_begin(conn, mode)
                yield conn
        except exc.OperationalError as e:
            clean = False
            raise unavailable(e) from e
        except (exc.DBAPIError, sqlite3.Error):
            clean = False
            raise
        finally:
            self._give_back(conn, clean)
        if mode == "IMMEDIATE" and self.group_sync is not None:
            self.group_sync.sync()           # committed: durable before the caller answers anyone

    def lookup(self, query: "HotQuery", params: dict) -> dict | None:
        """One row of one SELECT, outside any transaction of the caller's.

        On SQLite this runs on an idle connection in autocommit (a single
        statement sees one consistent state): beginning and ending a
        transaction cost several times the query (the credential check on
        every WebDAV request paid about as much as the request's path
        lookup). Other databases take a read transaction."""
        if not self.is_sqlite:
            with self.read() as c:
                return query.first(c, params)
        conn = self._take()
        clean = False
        try:
            row = query.first_on(conn.connection.driver_connection, self.engine.dialect, params)
            clean = True
        finally:
            self._give_back(conn, clean)
        return row

    @contextlib.contextmanager
    def _transaction(self, mode: str):
        # SQLite's BEGIN is issued here rather than from a "begin" listener on
        # the engine: any engine-wide listener makes SQLAlchemy dispatch
        # events around every statement, which cost about as much as a query.
        try:
            with self._connected_transaction(mode) as conn:
                yield conn
        except (exc.OperationalError, exc.InterfaceError) as e:
            raise unavailable(e) from e

    @contextlib.contextmanager
    def _connected_transaction(self, mode: str):
        with self.engine.connect() as conn:
            with conn.begin():
                if self.is_sqlite:
                    _sqlite_begin(conn, mode)
                elif mode == "IMMEDIATE":
                    # One writer at a time, as SQLite's BEGIN IMMEDIATE gives: the
                    # core's look-then-write steps (a new name, a chunk seen for
                    # the first time) stay atomic across threads, processes and
                    # nodes. Read committed alone let two uploads of one new file
                    # both insert it, and the second failed on the unique index.
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
                yield conn

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        self.migrate("upgrade", "head")

    def migrate(self, how: str, revision: str) -> None:
        """Run Alembic's upgrade or downgrade to a revision, in one transaction.

        On SQLite, a migration that changes a column rebuilds its table
        (copy, drop, rename), which foreign keys would refuse: they are off
        while it runs, and checked once it has committed."""
        from alembic import command
        from alembic.config import Config as AlembicConfig
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self.is_sqlite:             # the migrations run inside a transaction
                driver = conn.connection.driver_connection
                driver.execute("PRAGMA foreign_keys=OFF")        # only takes effect outside a transaction
                event.listen(conn, "begin", lambda c: _sqlite_begin(c, "DEFERRED"))
            try:
                cfg.attributes["connection"] = conn
                getattr(command, how)(cfg, revision)
                conn.commit()
            finally:
                if self.is_sqlite:
                    driver.execute("PRAGMA foreign_keys=ON")
            if self.is_sqlite:
                broken = driver.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the schema migration left {len(broken)} rows whose references "
                                       f"are broken (first: {broken[0]}); restore the database backup")

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def dispose(self) -> None:
        while self._idle:
            self._idle.pop().close()
        self.engine.dispose()


def _sqlite_connect(dbapi_conn, _record):
    dbapi_conn.isolation_level = None          # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: durable against process crashes; against
                                               # power cuts once GroupSync has synced the commit
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA secure_delete=ON")     # deleted rows (wrapped keys) are zeroed, not left in free space
    cur.close()


def _sqlite_begin(conn: Connection, mode: str):
    # Straight on the driver's connection (the SQLAlchemy transaction is open,
    # and pysqlite itself never begins one: see _sqlite_connect); through
    # exec_driver_sql the BEGIN cost as much as a query.
    sql = f"BEGIN {mode}"
    try:
        conn.connection.driver_connection.execute(sql)
    except sqlite3.Error as e:
        raise exc.OperationalError(sql, None, e) from e


class HotQuery:
    """A single-row SELECT run on every request (path lookups, the credential
    check). On SQLite it runs straight on the driver's connection, inside the
    caller's transaction: SQLAlchemy's execution path costs several times the
    query itself. Rows come back as dicts, with SQLAlchemy's conversions of
    the column types applied; other databases take the ordinary path."""

    def __init__(self, stmt):
        self.stmt = stmt
        self._sqlite = None               # (SQL text, parameter names, column names, converters)

    def first(self, c: Connection, params: dict) -> dict | None:
        if c.dialect.name != "sqlite":
            row = c.execute(self.stmt, params).mappings().first()
            return None if row is None else dict(row)
        return self.first_on(c.connection.driver_connection, c.dialect, params)

    def first_on(self, driver_conn: sqlite3.Connection, dialect, params: dict) -> dict | None:
        """The row, run on an SQLite driver connection."""
        plan = self._sqlite
        if plan is None:
            plan = self._sqlite = self._plan(dialect)
        sql, names, columns, converters = plan
        try:
            row = driver_conn.execute(sql, [params[n] for n in names]).fetchone()
        except sqlite3.Error as e:
            raise exc.OperationalError(sql, params, e) from e
        if row is None:
            return None
        if converters:
            row = [v if f is None or v is None else f(v) for f, v in zip(converters, row)]
        return dict(zip(columns, row))

    def all(self, c: Connection, params: dict) -> list[dict]:
        """Every row. A parameter bound with `expanding=True` (`col.in_(
        bindparam("ids", expanding=True))`) takes a non-empty list."""
        if c.dialect.name != "sqlite":
            return [dict(r) for r in c.execute(self.stmt, params).mappings()]
        plan = self._sqlite
        if plan is None:
            plan = self._sqlite = self._plan(c.dialect)
        sql, names, columns, converters = plan
        args = [params[n] for n in names]
        if "__[POSTCOMPILE_" in sql:          # what SQLAlchemy does for an IN list, done here
            flat = []
            for n, v in zip(names, args):
                if isinstance(v, (list, tuple)):
                    sql = sql.replace(f"__[POSTCOMPILE_{n}]", ", ".join("?" * len(v)), 1)
                    flat += v
                else:
                    flat.append(v)
            args = flat
        rows = _driver_call(c, "execute", sql, args, params).fetchall()
        if converters:
            rows = [[v if f is None or v is None else f(v) for f, v in zip(converters, row)] for row in rows]
        return [dict(zip(columns, row)) for row in rows]

    def _plan(self, dialect):
        compiled = self.stmt.compile(dialect=dialect)
        cols = list(self.stmt.selected_columns)
        converters = [col.type.dialect_impl(dialect).result_processor(dialect, None) for col in cols]
        return (str(compiled), list(compiled.positiontup), [col.key for col in cols],
                converters if any(converters) else None)


class HotStatement:
    """An INSERT, UPDATE or DELETE run on every write (publishing a version,
    setting a time), built once. On SQLite it runs straight on the driver's
    connection inside the caller's transaction, like HotQuery: building a
    statement and going through SQLAlchemy's execution path cost several
    times the statement itself (publishing a small file took 6.6 ms, most of
    it there). The SQL is compiled once per set of parameter names; a
    column whose default SQLAlchemy computes in Python makes that set take
    the ordinary path. `run` returns the new row's id for an insert, the
    number of rows it changed otherwise."""

    def __init__(self, stmt, returns_id: bool = False):
        self.stmt = stmt
        self.returns_id = returns_id
        self._plans: dict = {}

    def run(self, c: Connection, params: dict):
        plan = self._plan(c, params) if c.dialect.name == "sqlite" else None
        if plan is None:
            r = c.execute(self.stmt, params)
            return r.inserted_primary_key[0] if self.returns_id else r.rowcount
        sql, names = plan
        cur = _driver_call(c, "execute", sql, [params[n] for n in names], params)
        return cur.lastrowid if self.returns_id else cur.rowcount

    def run_many(self, c: Connection, rows: list[dict]) -> None:
        plan = self._plan(c, rows[0]) if rows and c.dialect.name == "sqlite" else None
        if plan is None:
            if rows:
                c.execute(self.stmt, rows)
            return
        sql, names = plan
        _driver_call(c, "executemany", sql, [[r[n] for n in names] for r in rows], rows[0])

    def _plan(self, c: Connection, params: dict):
        keys = tuple(params)
        if keys not in self._plans:
            compiled = self.stmt.compile(dialect=c.dialect, column_keys=list(keys))
            prefetch = getattr(compiled, "insert_prefetch", ()) or getattr(compiled, "update_prefetch", ())
            ok = not prefetch and set(compiled.positiontup) <= set(keys)
            self._plans[keys] = (str(compiled), list(compiled.positiontup)) if ok else None
        return self._plans[keys]


def _driver_call(c: Connection, how: str, sql: str, args, params):
    try:
        return getattr(c.connection.driver_connection, how)(sql, args)
    except sqlite3.IntegrityError as e:
        raise exc.IntegrityError(sql, params, e) from e
    except sqlite3.Error as e:
        raise exc.OperationalError(sql, params, e) from e


IntegrityViolation = exc.IntegrityError
