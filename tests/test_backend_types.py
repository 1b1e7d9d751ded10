"""Every backend gives the same Python types. The same account history runs on
SQLite and on PostgreSQL, and everything the core hands to a front-end or to
`coffer-admin` (entries, quotas, versions, shares, accounts, session records,
audit events, receipts, fsck, gc and maintenance reports) must have the same
shape on both: PostgreSQL sums integers to NUMERIC, which reached SFTP's
statvfs as a Decimal it could not pack."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from conftest import make_config
from providers import export, lifecycle
from providers.storage import Storage

pytestmark = pytest.mark.slow


def shape(value):
    """The types of a value, recursively: what a comparison across backends needs."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: shape(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): shape(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [shape(v) for v in value]
    return type(value).__name__


def same(x, y) -> bool:
    """Equal shapes, where None (a value not there, or not applicable to that
    backend, as the SQLite-only log truncation of an erasure) matches any."""
    if "NoneType" in (x, y):
        return True
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(map(same, x, y))
    return x == y


def history(st: Storage) -> dict:
    """One account's busy day, and everything the core reports about it."""
    st.accounts.create("olga", "olga-password", quota=50_000_000)
    st.accounts.create("petr", "petr-password", mode="private")
    olga = st.open_account("olga", "olga-password", client_addr="192.0.2.7", protocol="webdav")
    petr = st.open_account("petr", "petr-password", client_addr="2001:db8::9", protocol="sftp")
    olga.mkdir("/team")
    for i in range(3):
        olga.write_bytes("/team/plan.txt", b"plan %d " % i * 1000)
    olga.write_bytes("/notes.txt", os.urandom(300_000))
    olga.set_props("/team/plan.txt", {"{urn:x}colour": b"blue"})
    olga.delete("/notes.txt")
    olga.share_grant("/team", "petr", "write")
    petr.write_bytes("/Shared/olga/team/reply.txt", b"from petr")
    sid = st.sessions.start(olga.user.id, "webdav", "192.0.2.7")
    st.sessions.end(sid, 1000, 2000, 3)
    out = {
        "entries": [olga.stat("/team"), *olga.list("/team"), *olga.list("/"), *petr.list("/Shared/olga/team")],
        "quota": [olga.quota(), petr.quota()],
        "usage": st.accounts.usage(olga.user.id),
        "versions": olga.versions("/team/plan.txt"),
        "hashes": olga.hashes("/team/plan.txt", compute=("md5",)),
        "props": olga.get_props("/team/plan.txt"),
        "shares": [olga.share_list(), petr.share_list()],
        "accounts": [st.accounts.get("olga"), st.accounts.list()],
        "record": export.account_record(st, olga),
        "sessions": lifecycle.sessions(st, "olga"),
        "audit": lifecycle.audit_events(st, "olga"),
        "fsck": st.fsck(),
        "gc": st.gc(grace_seconds=0),
        "maintenance": lifecycle.run_maintenance(st),
    }
    out["erase"] = lifecycle.erase(st, "petr")
    out["receipts"] = lifecycle.receipts(st)
    json.dumps(out, default=lambda o: shape(o))             # all of it must serialise as it is
    olga.close()
    return out


def test_sqlite_and_postgresql_give_the_same_types(tmp_path):
    if not os.environ.get("COFFER_TEST_DATABASE_URL"):
        msg = "COFFER_TEST_DATABASE_URL is not set: the test command starts PostgreSQL"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip("SKIPPED LOUDLY: " + msg)
    from backend import fresh_database_url
    on_sqlite = Storage.open(make_config(tmp_path / "sqlite", database="sqlite", blobs="local"))
    pg_cfg = make_config(tmp_path / "pg", blobs="local")
    pg_cfg = pg_cfg.replace(storage=dataclasses.replace(pg_cfg.storage, database_url=fresh_database_url()))
    on_pg = Storage.open(pg_cfg)
    try:
        a, b = shape(history(on_sqlite)), shape(history(on_pg))
    finally:
        on_sqlite.close()
        on_pg.close()
    for part in a:
        assert same(a[part], b[part]), f"{part}: SQLite gives {a[part]}, PostgreSQL {b[part]}"
    assert "Decimal" not in json.dumps(b) and "memoryview" not in json.dumps(b)
