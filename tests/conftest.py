"""Shared fixtures: a fresh data folder and storage per test, fast KDF settings.

Set COFFER_TEST_DATABASE_URL to run every storage test against another
database (the test command does so for PostgreSQL); each test then gets its
own schema-free database by dropping all tables first.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from providers import config
from providers.storage import Storage

FAST = {"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1, "argon2_lanes": 1}


def test_database_url() -> str | None:
    """COFFER_TEST_DATABASE_URL, made private to this xdist worker: each
    worker works in its own schema of that database."""
    base = os.environ.get("COFFER_TEST_DATABASE_URL")
    if not base:
        return None
    schema = "w_" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    from sqlalchemy.engine import make_url
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def make_config(tmp_path, **sections):
    raw = {"storage": {"data_dir": str(tmp_path / "var")}, "security": dict(FAST)}
    url = test_database_url()
    if url:
        raw["storage"]["database_url"] = url
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config.from_dict(raw, base_dir=str(tmp_path))


def reset_database(url: str) -> None:
    """Empty this worker's schema of the shared test database (PostgreSQL runs)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    schema = make_url(url).query["options"].split("=", 1)[1]
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()


@pytest.fixture
def cfg(tmp_path):
    c = make_config(tmp_path)
    if os.environ.get("COFFER_TEST_DATABASE_URL"):
        reset_database(c.database_url)
    return c


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failure: every test must run there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


@contextlib.contextmanager
def tmpfs(mnt, size: str):
    """A small tmpfs mounted at `mnt` (a disk to fill up); skipped loudly
    without root, a failure under CI."""
    mnt.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                            str(mnt)]).returncode:
        if os.environ.get("CI"):
            pytest.fail("could not mount a small tmpfs to fill up (needs root)")
        pytest.skip("SKIPPED LOUDLY: mounting a small tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
