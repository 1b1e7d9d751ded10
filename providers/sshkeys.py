"""SSH public keys that let an account log in over SFTP without its password.

Accepted: Ed25519, ECDSA (NIST P-256/384/521) and RSA of 2048 bits or more
(RSA signatures must be SHA-2; the SSH layer enforces that). A key is stored
as its one-line OpenSSH form and found by its SHA-256 fingerprint, spelled as
OpenSSH prints it (`SHA256:…`).

A `private` account's files are unlocked only by its password, so a key can
be registered but cannot open the account: `add` returns a warning saying so,
and the SSH front-end tells the client the same at login.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from . import meta
from .accounts import BadRequest
from .errors import AlreadyExists, NotFound
from .meta import sshkeys as q
from .meta import users as uq

log = logging.getLogger(__name__)

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
MIN_RSA_BITS = 2048
MAX_COMMENT = 200
PRIVATE_MODE_WARNING = ("account {name!r} is in private mode: its files are unlocked only by its password, "
                        "so this key cannot log in until the account is switched to managed mode")


@dataclass(frozen=True)
class KeyInfo:
    id: int
    fingerprint: str           # "SHA256:<base64, no padding>", as `ssh-keygen -l` shows
    key_type: str
    public_key: str            # "<type> <base64>"
    comment: str
    created_us: int

    @classmethod
    def from_row(cls, row) -> "KeyInfo":
        return cls(row["id"], row["fingerprint"], row["public_key"].split(" ", 1)[0], row["public_key"],
                   row["comment"], row["created_us"])


def fingerprint(blob: bytes) -> str:
    """The OpenSSH SHA-256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse(line: str) -> tuple[str, bytes, str]:
    """(type, blob, comment) from an authorized_keys-style line.

    Options before the key type (`from=…`, `command=…`) are refused rather than
    silently dropped: Coffer would not honour them.
    """
    if not isinstance(line, str) or "\x00" in line or len(line) > 16384:
        raise BadRequest("not an SSH public key line")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise BadRequest("expected an OpenSSH public key line: '<type> <base64> [comment]'")
    key_type, b64 = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) > 2 else ""
    if key_type not in KEY_TYPES:
        if any(t in line for t in KEY_TYPES):
            raise BadRequest("authorized_keys options are not supported; give the key line without them")
        if key_type == "ssh-dss":
            raise BadRequest("DSA keys are obsolete and refused; use an Ed25519 key (ssh-keygen -t ed25519)")
        raise BadRequest(f"unsupported key type {key_type[:40]!r}; accepted: {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(b64, validate=True)
        key = load_ssh_public_key(f"{key_type} {b64}".encode("ascii"))
    except (binascii.Error, ValueError, UnicodeError):
        raise BadRequest("the key's base64 data is damaged; copy the whole line from the .pub file") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise BadRequest(f"unsupported key type {key_type!r}")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise BadRequest(f"RSA keys need at least {MIN_RSA_BITS} bits; this one has {key.key_size}")
    if len(comment) > MAX_COMMENT:
        comment = comment[:MAX_COMMENT]
    return key_type, blob, comment


class SSHKeys:
    """Add, list, remove and find the SSH keys of accounts."""

    def __init__(self, db: meta.Database, accounts):
        self.db, self.accounts = db, accounts

    def add(self, name: str, line: str, comment: str | None = None) -> tuple[KeyInfo, str | None]:
        """Register a key; returns it and a warning to show (or None)."""
        key_type, blob, parsed_comment = parse(line)
        user = self.accounts.get(name)
        comment = parsed_comment if comment is None else comment.strip()[:MAX_COMMENT]
        fp = fingerprint(blob)
        canonical = f"{key_type} {base64.b64encode(blob).decode()}"
        with self.db.write() as c:
            if q.key_by_fingerprint(c, user.id, fp) is not None:
                raise AlreadyExists(f"this key ({fp}) is already registered for {user.name!r}")
            q.insert_key(c, user.id, fp, canonical, comment)
            uq.audit(c, "ssh_key_added", user_id=user.id, actor="admin", detail={"fingerprint": fp})
            row = q.key_by_fingerprint(c, user.id, fp)
        warning = PRIVATE_MODE_WARNING.format(name=user.name) if user.mode == "private" else None
        return KeyInfo.from_row(row), warning

    def list(self, name: str) -> list[KeyInfo]:
        user = self.accounts.get(name)
        with self.db.read() as c:
            return [KeyInfo.from_row(r) for r in q.keys_of(c, user.id)]

    def remove(self, name: str, which: str) -> KeyInfo:
        """Remove one key, named by its fingerprint (with or without the
        `SHA256:` prefix), its list number (1, 2, …) or its exact comment."""
        user = self.accounts.get(name)
        which = (which or "").strip()
        with self.db.write() as c:
            rows = q.keys_of(c, user.id)
            match = [r for r in rows if r["fingerprint"] in (which, "SHA256:" + which)]
            if not match and which.isdigit() and 1 <= int(which) <= len(rows):
                match = [rows[int(which) - 1]]
            if not match:
                match = [r for r in rows if which and r["comment"] == which]
            if not match:
                raise NotFound(f"no such key for {user.name!r}; see `coffer-admin user key list {user.name}`")
            if len(match) > 1:
                raise BadRequest(f"{len(match)} keys have that comment; name the key by its fingerprint")
            q.delete_key(c, match[0]["id"])
            uq.audit(c, "ssh_key_removed", user_id=user.id, actor="admin",
                     detail={"fingerprint": match[0]["fingerprint"]})
        return KeyInfo.from_row(match[0])

    def find(self, name: str, blob: bytes) -> KeyInfo | None:
        """The registered key of account `name` with this public blob, or None
        (also for an unknown account: callers must not learn which it was)."""
        try:
            user = self.accounts.get(name)
        except NotFound:
            return None
        fp = fingerprint(blob)
        with self.db.read() as c:
            row = q.key_by_fingerprint(c, user.id, fp)
        if row is None:
            return None
        _, _, stored_b64 = row["public_key"].partition(" ")
        if base64.b64decode(stored_b64) != blob:
            return None
        return KeyInfo.from_row(row)
