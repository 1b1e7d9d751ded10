"""Key domains as one principal holds them: the home, folders it shares,
folders shared with it. A domain's keys are opened from the principal's user
key (its own domains) or its private key (domains shared with it), once per
key generation; its permission is read again on every use, so a revocation
takes effect at the next request."""
from __future__ import annotations

from dataclasses import dataclass

from . import crypto
from .errors import PermissionDenied
from .meta import users as uq


@dataclass
class Domain:
    id: int
    keys: crypto.DomainKeys
    root_id: int
    owner_id: int
    permission: str                # owner | write | read
    key: bytes = b""
    key_gen: int = 1
    kind: str = "home"

    @property
    def writable(self) -> bool:
        return self.permission in ("owner", "write")


class Keyring:
    """The key domains one principal may use."""

    def __init__(self, db, user_id: int, user_key: bytes, legacy: bool = False):
        """`legacy`: the account's own keys may still be sealed without
        their row binding (crypto "Row binding"), so those are read too."""
        self.user_id = user_id
        self._user_key = user_key
        self._legacy = legacy
        self._cache: dict[tuple[int, int], Domain] = {}
        with db.read() as c:
            dom = uq.home_domain(c, user_id)
            mem = uq.membership(c, dom["id"], user_id)
        dk = self.open_domain_key(mem, "home folder key")
        self.home = Domain(dom["id"], self.derive(dk, dom), dom["root_node_id"], user_id, "owner", dk,
                           mem["key_gen"])

    @property
    def user_key(self) -> bytes:
        """The principal's user key, for wrapping it under another secret
        (an app password) while the session has it open."""
        return self._user_key

    def close(self) -> None:
        self._user_key = b""
        self._cache.clear()
        self.home = None

    def domain(self, c, domain_id: int) -> Domain:
        """The key domain with this id as this principal may use it (checked
        on every call: PermissionDenied once it is no longer shared with it)."""
        if domain_id == self.home.id:
            return self.home
        mem = uq.membership(c, domain_id, self.user_id)
        if mem is None:
            raise PermissionDenied("this shared folder is not shared with you (any more)")
        cached = self._cache.get((domain_id, mem["key_gen"]))
        if cached is None:
            row = uq.domain(c, domain_id)
            dk = self.open_domain_key(mem, "folder key", c)
            cached = Domain(domain_id, self.derive(dk, row), row["root_node_id"], row["owner_id"],
                            mem["permission"], dk, mem["key_gen"], row["kind"])
            self._cache[(domain_id, mem["key_gen"])] = cached
        cached.permission = mem["permission"]
        return cached

    def of(self, c, node) -> Domain:
        """The key domain a node belongs to."""
        return self.domain(c, node["domain_id"])

    def name(self, c, parent, node) -> str:
        """A node's name, decrypted with its parent's keys."""
        return crypto.decrypt_name(self.of(c, parent).keys, bytes(node["name_enc"]), node["name_lookup"])

    @staticmethod
    def derive(key: bytes, domain_row) -> crypto.DomainKeys:
        return crypto.DomainKeys.derive(key, legacy=domain_row["sealing"] < crypto.SEALING_BOUND)

    def open_domain_key(self, mem, what: str, c=None) -> bytes:
        """A domain key from this principal's membership row: wrapped under
        the user key (an owner's) or sealed to the X25519 key (a collaborator's)."""
        aad = crypto.domain_key_aad(mem["domain_id"], mem["user_id"], mem["key_gen"])
        legacy = b"domain" if self._legacy else None
        if mem["wrapped_key"] is not None:
            return crypto.unwrap_bound(self._user_key, mem["wrapped_key"], aad, legacy, what)
        return crypto.unseal(self.private_key(c), mem["sealed_key"], aad, legacy, what)

    def private_key(self, c) -> bytes:
        row = uq.user_by_id(c, self.user_id)
        return crypto.unwrap_bound(self._user_key, row["wrapped_private_key"], crypto.private_key_aad(self.user_id),
                                   b"x25519" if self._legacy else None, "private key")

    def open_mount(self, c, mem, private: bytes | None = None) -> str:
        """Where a folder shared with this principal appears (its sealed mount name)."""
        return crypto.unseal(private or self.private_key(c), mem["mount_enc"],
                             crypto.mount_aad(mem["domain_id"], self.user_id),
                             b"mount" if self._legacy else None, "shared folder name").decode("utf-8")

    def wrap_private(self, private: bytes) -> bytes:
        """The principal's X25519 private key wrapped under its user key."""
        return crypto.wrap_bound(self._user_key, private, crypto.private_key_aad(self.user_id))

    def wrap(self, key: bytes, domain_id: int, key_gen: int) -> bytes:
        """A domain key wrapped under this principal's user key (what an owner keeps)."""
        return crypto.wrap_bound(self._user_key, key, crypto.domain_key_aad(domain_id, self.user_id, key_gen))
