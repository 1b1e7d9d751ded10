"""Key hierarchy and chunk encryption: small pure functions, no I/O.

Keys, top down:
  user key      random; wrapped by Argon2id(password) in `private` mode or by
                the server master key in `managed` mode.
  X25519 pair   the user's; private half wrapped by the user key. Shared-folder
                keys are sealed to the public half, so granting needs nothing
                secret of the grantee.
  domain key    random, one per key domain (a home or a shared folder); held
                by each member wrapped under their user key. Subkeys derived by
                HKDF: names, name lookups, chunk dedup ids, chunk-key wrapping,
                metadata.
  chunk key     random per stored chunk, wrapped by the domain's wrap subkey.
                A version's data key is the set of its chunk keys, so moving a
                file between domains re-wraps keys without touching content.

Chunks are sealed in 64 KiB blocks (AES-256-GCM, block index and a last-block
flag bound into the nonce; a chunk key seals exactly one chunk), so a byte
range is read and authenticated without decrypting the whole chunk, and blocks
cannot be reordered, dropped or truncated undetected.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

import blake3

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import turn
from .errors import IntegrityError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
BLOCK = 64 * 1024
SEALED_BLOCK = BLOCK + TAG_BYTES
CHUNK_FORMAT = b"\x01"            # first byte of every stored chunk
HEADER = len(CHUNK_FORMAT)


def random_key() -> bytes:
    return os.urandom(KEY_BYTES)


def subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose derived from a domain or user key (HKDF-SHA256)."""
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"coffer/" + purpose.encode()).derive(key)


@dataclass(frozen=True)
class DomainKeys:
    """The subkeys of one key domain, derived once when the domain is opened.
    `legacy`: the domain may still hold values sealed before they were bound
    to their rows (see "Row binding" below), which are then read too."""
    names: AESGCM
    lookup: bytes
    dedup: bytes
    wrap: AESGCM
    meta: AESGCM
    legacy: bool = False

    @classmethod
    def derive(cls, domain_key: bytes, legacy: bool = False) -> "DomainKeys":
        return cls(AESGCM(subkey(domain_key, "names")), subkey(domain_key, "lookup"),
                   subkey(domain_key, "dedup"), AESGCM(subkey(domain_key, "wrap")),
                   AESGCM(subkey(domain_key, "meta")), legacy)


# -- authenticated encryption of small values ----------------------------------

def seal(aead: AESGCM, data: bytes, aad: bytes = b"") -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, data, aad)


def open_sealed(aead: AESGCM, blob: bytes, aad: bytes = b"", what: str = "value") -> bytes:
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise IntegrityError(f"{what} failed authentication: wrong key or tampered data") from None


# -- row binding ------------------------------------------------------------------
#
# Every small sealed value in the database is bound to the identity of the row
# it belongs to (its associated data names the row), so someone who can write
# the database but holds no key cannot move a name, a property, a lock, a
# content hash or a wrapped key from one row to another: the value no longer
# opens there. What binds each value:
#   file and folder names   their keyed lookup, HMAC(parent id, name)
#   trash paths             the node's id
#   content hashes          the version's node, creation time and size
#   dead properties         the node's id and the property's keyed lookup
#   WebDAV locks            the lock token
#   user key                the account's id (and the password's or master key)
#   X25519 private key      the account's id
#   domain keys             domain id, member id, key generation
#   share mount names       domain id, member id
#   chunk keys              their chunk's dedup id (from the start)
# Values sealed before binding carry no format mark and a constant label;
# they are read while their domain or account is marked `legacy`, until the
# first use with its key re-seals them all (providers/reseal.py).

BOUND = b"\x02"          # first byte of a value bound to its row
SEALING_BOUND = 2         # `sealing` of an account or domain whose values are all bound


def bind(label: str, *parts) -> bytes:
    """The associated data of a value bound to a row: its kind and the row's
    identity (integers and strings, each length-prefixed: unambiguous)."""
    out = bytearray(label.encode() + b"\x00")
    for p in parts:
        b = p.to_bytes(8, "big", signed=True) if isinstance(p, int) else str(p).encode("utf-8")
        out += len(b).to_bytes(2, "big") + b
    return bytes(out)


def seal_bound(aead: AESGCM, data: bytes, aad: bytes) -> bytes:
    return BOUND + seal(aead, data, aad)


def _open_either(blob, aad: bytes, legacy: bytes | None, what: str, attempt) -> bytes:
    """`attempt(body, associated data)` on a bound value, or, with `legacy`
    (the constant label values had before), on an unbound one too."""
    blob = bytes(blob)
    if blob[:1] == BOUND:
        try:
            return attempt(blob[1:], aad)
        except IntegrityError:
            if legacy is None:      # a legacy value may start with the mark by chance
                raise
    elif legacy is None:
        raise IntegrityError(f"{what} is not bound to its row: sealed elsewhere, or tampered with")
    return attempt(blob, legacy)


def open_bound(aead: AESGCM, blob, aad: bytes, legacy: bytes | None, what: str) -> bytes:
    """Open a value bound to its row by `aad`; with `legacy` an unbound value is read too."""
    return _open_either(blob, aad, legacy, what, lambda body, ad: open_sealed(aead, body, ad, what))


def is_bound(blob) -> bool:
    return blob is not None and bytes(blob[:1]) == BOUND


def _legacy(keys: "DomainKeys", label: bytes) -> bytes | None:
    return label if keys.legacy else None


def seal_trash_path(keys: DomainKeys, path: str, node_id: int) -> bytes:
    return seal_bound(keys.names, path.encode("utf-8"), bind("trash", node_id))


def open_trash_path(keys: DomainKeys, blob, node_id: int) -> str:
    return open_bound(keys.names, blob, bind("trash", node_id), _legacy(keys, b"trash"), "trash path").decode("utf-8")


def seal_hashes(keys: DomainKeys, data: bytes, node_id: int, created_us: int, size: int) -> bytes:
    return seal_bound(keys.meta, data, bind("hashes", node_id, created_us, size))


def open_hashes(keys: DomainKeys, blob, node_id: int, created_us: int, size: int) -> bytes:
    return open_bound(keys.meta, blob, bind("hashes", node_id, created_us, size), _legacy(keys, b"hashes"),
                      "content hashes")


def seal_prop(keys: DomainKeys, node_id: int, lookup: str, name: str, value: bytes) -> tuple[bytes, bytes]:
    return (seal_bound(keys.meta, name.encode("utf-8"), bind("prop-name", node_id, lookup)),
            seal_bound(keys.meta, bytes(value), bind("prop-value", node_id, lookup)))


def open_prop(keys: DomainKeys, node_id: int, lookup: str, name_enc, value_enc) -> tuple[str, bytes]:
    name = open_bound(keys.meta, name_enc, bind("prop-name", node_id, lookup), _legacy(keys, b"prop-name"),
                      "property").decode("utf-8")
    return name, open_bound(keys.meta, value_enc, bind("prop-value", node_id, lookup),
                            _legacy(keys, b"prop-value"), "property")


def seal_lock(keys: DomainKeys, token: str, data: bytes) -> bytes:
    return seal_bound(keys.meta, data, bind("lock", token))


def open_lock(keys: DomainKeys, token: str, blob) -> bytes:
    return open_bound(keys.meta, blob, bind("lock", token), _legacy(keys, b"lock"), "lock")


def wrap_bound(kek: bytes, key: bytes, aad: bytes) -> bytes:
    return seal_bound(AESGCM(kek), key, aad)


def unwrap_bound(kek: bytes, wrapped, aad: bytes, legacy: bytes | None, what: str) -> bytes:
    return open_bound(AESGCM(kek), wrapped, aad, legacy, what)


def user_key_aad(user_id: int) -> bytes:
    return bind("user", user_id)


def recovery_aad(user_id: int) -> bytes:
    return bind("recovery", user_id)


def private_key_aad(user_id: int) -> bytes:
    return bind("x25519", user_id)


def domain_key_aad(domain_id: int, user_id: int, key_gen: int) -> bytes:
    return bind("domain", domain_id, user_id, key_gen)


def mount_aad(domain_id: int, user_id: int) -> bytes:
    return bind("mount", domain_id, user_id)


# -- passwords -------------------------------------------------------------------

@dataclass(frozen=True)
class KdfParams:
    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def as_dict(self) -> dict:
        return {"alg": "argon2id", "m": self.memory_kib, "t": self.iterations, "p": self.lanes}

    @classmethod
    def from_dict(cls, d: dict) -> "KdfParams":
        return cls(d["m"], d["t"], d["p"])


# One Argon2id derivation at a time per process: two at once on different
# threads never return with the cryptography and OpenSSL builds this runs on
# (both threads wait, using no CPU), and 16 at once have failed with
# "Not enough memory". Taking turns costs little: a derivation takes about
# 0.1 s, and a login's result is cached (server/auth.py).
_KDF_TURN = threading.Lock()


def password_kek(password: str, salt: bytes, params: KdfParams) -> bytes:
    """The key-encryption key a password unlocks (Argon2id)."""
    kdf = Argon2id(salt=salt, length=KEY_BYTES, iterations=params.iterations, lanes=params.lanes,
                   memory_cost=params.memory_kib)
    turn.leave()
    with _KDF_TURN:
        return kdf.derive(password.encode("utf-8"))


# -- X25519 sealing (shared folders) ------------------------------------------------

def new_keypair() -> tuple[bytes, bytes]:
    """(private, public) raw X25519 keys."""
    priv = X25519PrivateKey.generate()
    return (priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                               serialization.NoEncryption()),
            priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _box_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=eph_pub + recipient_pub,
                info=b"coffer/seal").derive(shared)


def seal_to(recipient_public: bytes, data: bytes, aad: bytes) -> bytes:
    """Encrypt `data` so only the holder of the matching private key opens
    it, bound to the row `aad` names."""
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    return BOUND + eph_pub + seal(AESGCM(_box_key(shared, eph_pub, recipient_public)), data, aad)


def unseal(private: bytes, sealed, aad: bytes, legacy: bytes | None = None, what: str = "sealed key") -> bytes:
    """Open what seal_to sealed; with `legacy` an unbound value is read too."""
    priv = X25519PrivateKey.from_private_bytes(private)
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def attempt(body: bytes, associated: bytes) -> bytes:
        eph_pub = body[:32]
        try:
            shared = priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        except ValueError:
            raise IntegrityError(f"{what} failed authentication: wrong key or tampered data") from None
        return open_sealed(AESGCM(_box_key(shared, eph_pub, pub)), body[32:], associated, what)

    return _open_either(sealed, aad, legacy, what, attempt)


# -- names ------------------------------------------------------------------------

def encrypt_name(keys: DomainKeys, name: str, lookup: str) -> bytes:
    """A name sealed and bound to its keyed lookup (stored beside it), which
    is itself HMAC(parent id, name): a sealed name opens only in a row whose
    lookup says the same name."""
    return seal_bound(keys.names, name.encode("utf-8"), bind("name", lookup))


def decrypt_name(keys: DomainKeys, blob, lookup: str | None, legacy: bool = False) -> str:
    """`lookup` None: a name recorded before names were bound (history)."""
    aad = bind("name", lookup) if lookup is not None else b"-"
    return open_bound(keys.names, blob, aad, b"name" if keys.legacy or legacy or lookup is None else None,
                      "file name").decode("utf-8")


def name_lookup(keys: DomainKeys, parent_id: int, name: str) -> str:
    """Keyed hash that finds a child by name without storing the name in clear."""
    msg = parent_id.to_bytes(8, "big") + name.encode("utf-8")
    return hmac.new(keys.lookup, msg, hashlib.sha256).hexdigest()[:40]


def stored_hash(stored) -> str:
    """The hash of a stored (sealed) chunk that fsck compares without any
    key: BLAKE3, a third of SHA-256's cost here (it is computed for every
    chunk written)."""
    return "blake3:" + blake3.blake3(stored).hexdigest()


def stored_hash_matches(stored, recorded: str) -> bool:
    if recorded.startswith("blake3:"):
        return stored_hash(stored) == recorded
    return hashlib.sha256(stored).hexdigest() == recorded      # chunks written before BLAKE3


CHUNK_ID_PREFIX = "b:"         # keyed BLAKE3; ids without a prefix are HMAC-SHA256 (written before)


def chunk_id(keys: DomainKeys, plaintext) -> str:
    """Dedup id of a chunk: equal content in one domain gives equal ids, and
    nothing outside the domain can test a guess. Keyed BLAKE3 (a MAC), at
    about half the cost of HMAC-SHA256 here; every written chunk pays it.
    248 bits, so the id fits the column that held the SHA-256 ones."""
    return CHUNK_ID_PREFIX + blake3.blake3(plaintext, key=keys.dedup).hexdigest(length=31)


def chunk_id_matches(keys: DomainKeys, plaintext, recorded: str) -> bool:
    """Does plaintext have this recorded id, under whichever scheme made it?
    A chunk stored before the ids were BLAKE3 keeps its HMAC-SHA256 id; it
    is still read and checked, it only no longer deduplicates new writes."""
    if recorded.startswith(CHUNK_ID_PREFIX):
        return hmac.compare_digest(chunk_id(keys, plaintext), recorded)
    return hmac.compare_digest(hmac.new(keys.dedup, plaintext, hashlib.sha256).hexdigest(), recorded)


# -- chunks -------------------------------------------------------------------------

def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(NONCE_BYTES - 1, "big") + (b"\x01" if last else b"\x00")


def encrypt_chunk(key: bytes, plaintext, out: bytearray | None = None) -> memoryview:
    """Seal a chunk (at most a few MiB) as 64 KiB blocks behind a format byte.

    The sealed form is written into `out` when it is large enough (a caller
    sealing chunk after chunk reuses one buffer instead of allocating and
    page-faulting a fresh one each time); returns a view of it."""
    aead = AESGCM(key)
    mv = memoryview(plaintext)
    size = sealed_size(len(mv))
    if out is None or len(out) < size:
        out = bytearray(size)
    view = memoryview(out)[:size]
    view[:HEADER] = CHUNK_FORMAT
    n = max(1, -(-len(mv) // BLOCK))
    for i in range(n):
        block = mv[i * BLOCK:(i + 1) * BLOCK]
        at = HEADER + i * SEALED_BLOCK
        aead.encrypt_into(_nonce(i, i == n - 1), block, None, view[at:at + len(block) + TAG_BYTES])
    return view


def sealed_size(plain_size: int) -> int:
    return HEADER + max(1, -(-plain_size // BLOCK)) * TAG_BYTES + plain_size


def block_span(plain_size: int, offset: int, length: int) -> tuple[int, int, int]:
    """For plaintext [offset, offset+length) of a chunk, the blocks that hold
    it: (first block, stored byte offset, stored byte length)."""
    first = offset // BLOCK
    last = min((offset + length - 1) // BLOCK, max(0, (plain_size - 1) // BLOCK))
    start = HEADER + first * SEALED_BLOCK
    end = min(HEADER + (last + 1) * SEALED_BLOCK, sealed_size(plain_size))
    return first, start, end - start


def decrypt_blocks(key: bytes, stored, first_block: int, plain_size: int, what: str = "chunk",
                   out: bytearray | None = None):
    """Open consecutive sealed blocks starting at `first_block`; any tampering
    (or a block from elsewhere, or a truncation) raises IntegrityError.

    Returns the plaintext as bytes, or, given a large enough `out` buffer, a
    view of it holding the plaintext (a reader reuses one buffer)."""
    aead = AESGCM(key)
    nblocks = max(1, -(-plain_size // BLOCK))
    mv = memoryview(stored)
    count = -(-len(mv) // SEALED_BLOCK)
    size = len(mv) - count * TAG_BYTES
    into = out is not None and len(out) >= size >= 0
    view = memoryview(out if into else bytearray(max(size, 0)))[:max(size, 0)]
    i = first_block
    pos = at = 0
    while pos < len(mv):
        piece = mv[pos:pos + SEALED_BLOCK]
        n = len(piece) - TAG_BYTES
        try:
            if n < 0:
                raise ValueError("short block")
            aead.decrypt_into(_nonce(i, i == nblocks - 1), piece, None, view[at:at + n])
        except (InvalidTag, ValueError):
            raise IntegrityError(f"{what} block {i} failed authentication: the stored data is damaged "
                                 "or was tampered with") from None
        pos += SEALED_BLOCK
        at += n
        i += 1
    return view if into else bytes(view)


def decrypt_chunk(key: bytes, stored, plain_size: int, what: str = "chunk") -> bytes:
    if bytes(stored[:HEADER]) != CHUNK_FORMAT or len(stored) != sealed_size(plain_size):
        raise IntegrityError(f"{what} has the wrong format or length: damaged or tampered with")
    return decrypt_blocks(key, memoryview(stored)[HEADER:], 0, plain_size, what)
