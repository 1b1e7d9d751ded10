"""Transactions on SQLite reuse idle connections: a caller's error rolls its
transaction back and the next one starts clean and sees every commit."""
import threading

import pytest
from sqlalchemy import text

from providers.meta.db import Database


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 't.db'}")
    with d.write() as c:
        c.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
    yield d
    d.dispose()


def value(db, k=1):
    with db.read() as c:
        return c.execute(text("SELECT v FROM t WHERE k = :k"), {"k": k}).scalar()


def test_an_error_inside_a_transaction_rolls_back_and_the_next_one_is_clean(db):
    with pytest.raises(LookupError):
        with db.write() as c:
            c.execute(text("INSERT INTO t VALUES (1, 'lost')"))
            raise LookupError("the caller gave up")
    assert value(db) is None
    with pytest.raises(LookupError):
        with db.read() as c:
            value_seen = c.execute(text("SELECT count(*) FROM t")).scalar()
            raise LookupError(value_seen)
    with db.write() as c:
        c.execute(text("INSERT INTO t VALUES (1, 'kept')"))
    assert value(db) == "kept"            # a reused connection takes a fresh snapshot


def test_a_database_error_discards_the_connection_and_others_go_on(db):
    with pytest.raises(Exception, match="no such table"):
        with db.read() as c:
            c.execute(text("SELECT * FROM missing"))
    with db.write() as c:
        c.execute(text("INSERT INTO t VALUES (2, 'fine')"))
    assert value(db, 2) == "fine"
    assert not any(conn.connection.driver_connection.in_transaction for conn in db._idle)


def test_many_threads_share_a_bounded_set_of_connections(db):
    with db.write() as c:
        c.execute(text("INSERT INTO t VALUES (1, 'x')"))
    seen, errors = [], []
    barrier = threading.Barrier(24)

    def reader():
        try:
            with db.read() as c:
                barrier.wait(10)              # all 24 transactions open at once
                seen.append(c.execute(text("SELECT v FROM t WHERE k = 1")).scalar())
        except Exception as e:             # reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(24)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == [] and seen == ["x"] * 24
    assert len(db._idle) == Database.IDLE_CONNECTIONS
