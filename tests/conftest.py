"""Shared fixtures: a fresh data folder and storage per test, fast KDF settings.

Where the data lives (SQLite and a local folder, or PostgreSQL and S3) is
decided once for every test by `backend.py`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from providers import config
from providers.storage import Storage

from backend import storage_options

# fast hashes; and accounts `managed` unless a test asks for `private` (the product's default)
FAST = {"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1, "argon2_lanes": 1,
        "default_mode": "managed"}


def make_config(tmp_path, *, blobs=None, database=None, **sections):
    """A config for data under tmp_path on this run's backend (see backend.py;
    `blobs="local"` or `database="sqlite"` pins one), plus `sections`."""
    raw = {"storage": storage_options(tmp_path, blobs=blobs, database=database), "security": dict(FAST)}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config.from_dict(raw, base_dir=str(tmp_path))


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def storage(cfg):
    st = Storage.open(cfg)
    yield st
    st.close()


@pytest.fixture
def alice(storage):
    storage.accounts.create("alice", "alice-password")
    vfs = storage.open_account("alice", "alice-password")
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


@pytest.fixture
def gpg_home(tmp_path):
    """tmp_path as HOME for a client that runs gpg (duplicity): gpg starts
    an agent for HOME/.gnupg that outlives the client; it is stopped here."""
    yield tmp_path
    gnupg = tmp_path / ".gnupg"
    if gnupg.exists():
        subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "all"], capture_output=True, timeout=30)
