"""Key files are written whole, private from the start, and a key made by
two processes at once ends as one key both use."""
from __future__ import annotations

import os
import stat

import pytest

from providers import accounts
from providers.keyfile import write_private


def test_a_key_file_is_private_whole_and_leaves_nothing_beside_it(tmp_path):
    old = os.umask(0)                       # even a careless umask does not widen it
    try:
        write_private(tmp_path / "keys" / "k.pem", b"first")
        write_private(tmp_path / "keys" / "k.pem", b"second")
    finally:
        os.umask(old)
    path = tmp_path / "keys" / "k.pem"
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path / "keys") == ["k.pem"]


def test_an_exclusive_write_keeps_the_file_already_there(tmp_path):
    write_private(tmp_path / "k", b"mine", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(tmp_path / "k", b"theirs", exclusive=True)
    assert (tmp_path / "k").read_bytes() == b"mine" and os.listdir(tmp_path) == ["k"]


def test_two_first_uses_of_the_master_key_agree(tmp_path, monkeypatch):
    """Two processes starting on a new data folder: the one that writes
    second reads the first one's key instead of failing or replacing it."""
    path = tmp_path / "master.key"
    ours, theirs = accounts.MasterKey(path), accounts.MasterKey(path)
    real = accounts.crypto.random_key
    raced = []

    def random_key():
        if not raced:                       # the other process gets there while this one makes its key
            raced.append(1)
            theirs.key
        return real()

    monkeypatch.setattr(accounts.crypto, "random_key", random_key)
    assert ours.key == theirs.key and len(ours.key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
