"""Shared fixtures: a fresh data folder and storage per test, fast KDF settings.

Set COFFER_TEST_DATABASE_URL to run every storage test against another
database (the test command does so for PostgreSQL); each test then gets its
own schema-free database by dropping all tables first.
"""
from __future__ import annotations

import os
import shutil

import pytest

from providers import config
from providers.storage import Storage

FAST = {"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1, "argon2_lanes": 1}


def make_config(tmp_path, **sections):
    raw = {"storage": {"data_dir": str(tmp_path / "var")}, "security": dict(FAST)}
    url = os.environ.get("COFFER_TEST_DATABASE_URL")
    if url:
        raw["storage"]["database_url"] = url
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config.from_dict(raw, base_dir=str(tmp_path))


def reset_database(url: str) -> None:
    """Drop every table of a shared test database (PostgreSQL runs)."""
    from sqlalchemy import create_engine, text
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("DROP SCHEMA public CASCADE"))
        c.execute(text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture
def cfg(tmp_path):
    if os.environ.get("COFFER_TEST_DATABASE_URL"):
        reset_database(os.environ["COFFER_TEST_DATABASE_URL"])
    return make_config(tmp_path)


@pytest.fixture
def storage(cfg):
    st = Storage.open(cfg)
    yield st
    st.close()


@pytest.fixture
def alice(storage):
    storage.accounts.create("alice", "alice-password")
    vfs = storage.login("alice", "alice-password")
    yield vfs
    vfs.close()


def need_client(name: str) -> str:
    """Path of a real client program; a loud skip outside CI, a failure in CI."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"client program {name!r} is not installed (apt-get install it; .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(msg + " - in CI a missing client is a failure")
    pytest.skip("SKIPPED LOUDLY: " + msg)
