"""SSH public keys: the provider and `coffer-admin user key add|list|remove`."""
from __future__ import annotations

import base64
import io
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from providers.accounts import BadRequest
from providers.errors import AlreadyExists, NotFound
from providers.sshkeys import SSHKeys, fingerprint, parse
from scripts import admin

from backend import storage_toml_of


def pub(private, comment="me@host") -> str:
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


@pytest.fixture
def keys(storage):
    storage.accounts.create("alice", "alice-password")
    storage.accounts.create("carol", "carol-password", mode="private")
    return SSHKeys(storage.db, storage.accounts)


def test_parse_accepts_modern_keys():
    for private in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1()),
                    rsa.generate_private_key(65537, 2048)):
        key_type, blob, comment = parse(pub(private))
        assert comment == "me@host" and blob[4:4 + len(key_type)] == key_type.encode()


@pytest.mark.parametrize("line, words", [
    ("", "expected"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP== x", "DSA"),
    ("ssh-ed25519 !!!notbase64", "damaged"),
    ('from="1.2.3.4" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO', "options"),
    ("bogus-type AAAA", "unsupported"),
])
def test_parse_refuses_with_reason(line, words):
    with pytest.raises(BadRequest) as e:
        parse(line)
    assert words in str(e.value)


def test_parse_refuses_short_rsa():
    with pytest.raises(BadRequest) as e:
        parse(pub(rsa.generate_private_key(65537, 1024)))
    assert "2048" in str(e.value)


def test_add_list_find_remove(keys):
    k1, k2 = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP384R1())
    info, warning = keys.add("alice", pub(k1, "laptop"))
    assert warning is None and info.fingerprint.startswith("SHA256:") and info.comment == "laptop"
    keys.add("alice", pub(k2, "phone"))
    with pytest.raises(AlreadyExists):
        keys.add("alice", pub(k1))
    assert [k.comment for k in keys.list("alice")] == ["laptop", "phone"]
    blob = base64.b64decode(pub(k1).split()[1])
    assert keys.find("alice", blob).fingerprint == fingerprint(blob)
    assert keys.find("carol", blob) is None
    assert keys.find("nobody", blob) is None
    assert keys.remove("alice", "phone").comment == "phone"
    assert keys.remove("alice", info.fingerprint.removeprefix("SHA256:")).comment == "laptop"
    assert keys.list("alice") == []
    with pytest.raises(NotFound):
        keys.remove("alice", "1")


def test_private_account_gets_a_warning(keys):
    _, warning = keys.add("carol", pub(ed25519.Ed25519PrivateKey.generate()))
    assert "private" in warning and "password" in warning


def test_admin_commands(storage, cfg, tmp_path, monkeypatch, capsys):
    storage.accounts.create("alice", "alice-password")
    storage.accounts.create("carol", "carol-password", mode="private")
    config = tmp_path / "coffer.toml"
    config.write_text(storage_toml_of(cfg) + '[security]\nbcrypt_rounds = 4\n'
                      'argon2_memory_kib = 1024\nargon2_iterations = 1\nargon2_lanes = 1\n')
    keyfile = tmp_path / "id.pub"
    keyfile.write_text(pub(ed25519.Ed25519PrivateKey.generate(), "work") + "\n")

    def run(*a):
        return admin.main(["--config", str(config), *a])

    assert run("user", "key", "add", "alice", str(keyfile)) == 0
    assert "added ssh-ed25519 key SHA256:" in capsys.readouterr().out
    assert run("user", "key", "add", "alice", str(keyfile)) == 1
    assert "already registered" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(keyfile.read_text()))
    assert run("user", "key", "add", "carol", "-") == 0
    assert "private mode" in capsys.readouterr().err
    assert run("user", "key", "list", "alice", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["comment"] == "work" and row["number"] == 1
    assert run("user", "key", "remove", "alice", row["fingerprint"]) == 0
    capsys.readouterr()
    assert run("user", "key", "list", "alice") == 0
    assert "no SSH keys" in capsys.readouterr().out
    assert run("user", "key", "remove", "alice", "work") == 1
