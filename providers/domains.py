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

    def __init__(self, db, user_id: int, user_key: bytes):
        self.user_id = user_id
        self._user_key = user_key
        self._cache: dict[tuple[int, int], Domain] = {}
        with db.read() as c:
            dom = uq.home_domain(c, user_id)
            mem = uq.membership(c, dom["id"], user_id)
        dk = crypto.unwrap_key(user_key, bytes(mem["wrapped_key"]), b"domain", "home folder key")
        self.home = Domain(dom["id"], crypto.DomainKeys.derive(dk), dom["root_node_id"], user_id, "owner", dk)

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
            if mem["wrapped_key"] is not None:
                dk = crypto.unwrap_key(self._user_key, bytes(mem["wrapped_key"]), b"domain", "folder key")
            else:
                dk = crypto.unseal(self.private_key(c), bytes(mem["sealed_key"]), b"domain")
            cached = Domain(domain_id, crypto.DomainKeys.derive(dk), row["root_node_id"], row["owner_id"],
                            mem["permission"], dk, mem["key_gen"], row["kind"])
            self._cache[(domain_id, mem["key_gen"])] = cached
        cached.permission = mem["permission"]
        return cached

    def of(self, c, node) -> Domain:
        """The key domain a node belongs to."""
        return self.domain(c, node["domain_id"])

    def name(self, c, parent, node) -> str:
        """A node's name, decrypted with its parent's keys."""
        return crypto.decrypt_name(self.of(c, parent).keys, bytes(node["name_enc"]))

    def private_key(self, c) -> bytes:
        row = uq.user_by_id(c, self.user_id)
        return crypto.unwrap_key(self._user_key, bytes(row["wrapped_private_key"]), b"x25519", "private key")

    def wrap(self, key: bytes) -> bytes:
        """A domain key wrapped under this principal's user key (what an owner keeps)."""
        return crypto.wrap_key(self._user_key, key, b"domain")
