"""start_sftp in-process: host keys, the handle `coffer serve` uses, logins."""
from __future__ import annotations

import io
import socket
import stat

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from providers.sshkeys import SSHKeys
from server import sftp_hostkeys
from server.sftp import start_sftp
from conftest import make_config


def test_host_keys_are_made_once_and_private(tmp_path):
    first = sftp_hostkeys.load_or_create(tmp_path / "ssh")
    again = sftp_hostkeys.load_or_create(tmp_path / "ssh")
    assert [k.get_name() for k in first] == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
    assert [sftp_hostkeys.fingerprint(k) for k in first] == [sftp_hostkeys.fingerprint(k) for k in again]
    for name in ("ssh_host_ed25519_key", "ssh_host_ecdsa_key", "ssh_host_rsa_key"):
        assert stat.S_IMODE((tmp_path / "ssh" / name).stat().st_mode) == 0o600
        assert (tmp_path / "ssh" / (name + ".pub")).read_text().startswith(("ssh-", "ecdsa-"))


@pytest.fixture
def running(tmp_path):
    cfg = make_config(tmp_path, sftp={"port": 0, "host": "127.0.0.1"})
    from providers.storage import Storage
    st = Storage.open(cfg)
    st.accounts.create("alice", "alice-password")
    st.accounts.create("carol", "carol-password", mode="private")
    srv = start_sftp(st, cfg)
    yield st, srv
    srv.stop()
    st.close()


def connect(srv, user, **auth):
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", srv.port, username=user, allow_agent=False, look_for_keys=False, timeout=20, **auth)
    return c


def openssh_line(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


def paramiko_key(private):
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(pem))
        except Exception:
            continue
    raise AssertionError("unreadable key")


def test_handle_and_password_login(running):
    st, srv = running
    assert srv.port and len(srv.fingerprints) == 3
    c = connect(srv, "alice", password="alice-password")
    try:
        assert c.get_transport().remote_cipher.endswith("gcm@openssh.com")
        sftp = c.open_sftp()
        with sftp.open("/hello.txt", "wb") as f:
            f.write(b"hello")
        assert sftp.listdir("/") == ["hello.txt"]
        assert sftp.stat("/hello.txt").st_size == 5
    finally:
        c.close()
    with pytest.raises(paramiko.AuthenticationException):
        connect(srv, "alice", password="wrong-password")
    with pytest.raises(paramiko.AuthenticationException):
        connect(srv, "nobody", password="whatever-pw")


@pytest.mark.parametrize("make", [ed25519.Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1()),
                                  lambda: rsa.generate_private_key(65537, 2048)],
                         ids=["ed25519", "ecdsa", "rsa-sha2"])
def test_key_types_log_in(running, make):
    st, srv = running
    private = make()
    SSHKeys(st.db, st.accounts).add("alice", openssh_line(private))
    c = connect(srv, "alice", pkey=paramiko_key(private))
    try:
        assert c.open_sftp().listdir("/") == []
    finally:
        c.close()
    stranger = make()
    with pytest.raises(paramiko.AuthenticationException):
        connect(srv, "alice", pkey=paramiko_key(stranger))


def test_private_account_key_is_only_a_first_step_with_banner(running):
    """A private account's key cannot open its files: it is a first step,
    which the client is told, and the password must follow."""
    st, srv = running
    private = ed25519.Ed25519PrivateKey.generate()
    SSHKeys(st.db, st.accounts).add("carol", openssh_line(private))
    t = paramiko.Transport(("127.0.0.1", srv.port))
    t.connect()
    assert t.auth_publickey("carol", paramiko_key(private)) == ["password"]     # partly: the password next
    assert b"private mode" in t.get_banner()
    assert not t.is_authenticated()
    with pytest.raises(paramiko.SSHException):                       # no channel before the password
        t.open_session()
    t.auth_password("carol", "carol-password")
    assert t.is_authenticated()
    t.close()
    c = connect(srv, "carol", password="carol-password")          # the password alone works too
    c.close()


def test_stop_closes_the_port(tmp_path):
    cfg = make_config(tmp_path, sftp={"port": 0, "host": "127.0.0.1"})
    from providers.storage import Storage
    st = Storage.open(cfg)
    srv = start_sftp(st, cfg)
    port = srv.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(64).startswith(b"SSH-2.0-Coffer")
    srv.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    st.close()


@pytest.mark.parametrize("change", ["disable", "passwd"])
def test_open_session_ends_when_the_account_changes(running, change, monkeypatch):
    from server.sftp_session import SftpSession
    monkeypatch.setattr(SftpSession, "CHECK_ACCOUNT_EVERY", 0.0)
    st, srv = running
    c = connect(srv, "alice", password="alice-password")
    sftp = c.open_sftp()
    sftp.listdir("/")
    if change == "disable":
        st.accounts.set_status("alice", "disabled")
    else:
        st.accounts.set_password("alice", "a-new-password")
    with pytest.raises((EOFError, OSError, paramiko.SSHException)):
        sftp.listdir("/")
    c.close()
