"""SSH host keys: created on first run, kept across restarts.

Ed25519, ECDSA (P-256) and RSA (3072 bits) keys live in the host key folder
(`[sftp] host_key_dir`, default `<data_dir>/ssh`) as OpenSSH-format private
keys readable only by the server's user, with a `.pub` beside each. Their
fingerprints are printed at start so users can check them on first connect.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from providers.keyfile import write_private

log = logging.getLogger(__name__)

KEYS = (
    ("ssh_host_ed25519_key", paramiko.Ed25519Key, lambda: ed25519.Ed25519PrivateKey.generate()),
    ("ssh_host_ecdsa_key", paramiko.ECDSAKey, lambda: ec.generate_private_key(ec.SECP256R1())),
    ("ssh_host_rsa_key", paramiko.RSAKey, lambda: rsa.generate_private_key(65537, 3072)),
)


def host_key_dir(cfg) -> Path:
    return cfg.path(cfg.sftp.host_key_dir, str(cfg.data_dir / "ssh"))


def fingerprint(key: paramiko.PKey) -> str:
    """`<type> SHA256:<base64>`, as `ssh-keygen -l` and the ssh client show it."""
    return _fingerprint(key.get_name(), key.asbytes())


def _fingerprint(kind: str, blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{kind} SHA256:{digest}"


def public_fingerprints(folder: Path) -> list[str]:
    """The fingerprints of the host keys in `folder`, from their `.pub`
    files (for pages that show them: the private keys stay unread)."""
    out = []
    for name, _, _ in KEYS:
        try:
            kind, data = (Path(folder) / (name + ".pub")).read_text().split()[:2]
            out.append(_fingerprint(kind, base64.b64decode(data)))
        except (OSError, ValueError):
            continue                     # not created yet: the SFTP server makes it at start
    return out


def load_or_create(folder: Path) -> list[paramiko.PKey]:
    """The host keys in `folder`, generating any that are missing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(folder, 0o700)
    except OSError:
        pass
    keys = []
    for name, cls, generate in KEYS:
        path = folder / name
        if not path.exists():
            private = generate()
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption())
            write_private(path, pem)
            public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH)
            (folder / (name + ".pub")).write_bytes(public + b" coffer-host-key\n")
            log.info("created SSH host key %s", name)
        keys.append(cls.from_private_key_file(str(path)))
    return keys
