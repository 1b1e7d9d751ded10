"""Who may do what: one table of (operation, target kind) → the grants that
allow it, checked once as each call enters the core (`Vfs`), and nowhere else.

A principal's grant on a target is its permission in the key domain the
target belongs to: `owner` in its own tree (and for the virtual folders of
its own view: /.coffer, /Shared), `write` or `read` in a folder shared
with it. A folder not shared with it at all never resolves (NotFound), so
a stranger meets no row here.

Operations, by what the principal asks for:

  read     stat, list, read a file, its checksums, properties or versions
  create   put a new entry (or a file's new content) at a place: the kind is
           the place's, by the layout of the tree (see `Resolver.place`)
  change   set a file's or folder's modification time, mode or properties
  remove   delete (to the trash), move away, or replace the target
  purge    delete for good: every delete in /.coffer, and `coffer-admin purge`
  share    share the folder with another account, or stop sharing it

A session opened with a limited app password (`read-only`, `backup`) is
also held to the operations its scope allows (SCOPE_OPS).

A refusal in a folder shared with the principal (grant `read` or `write`)
is audited as `share_refused`; the front-ends map PermissionDenied to their
own refusal (403, SSH_FX_PERMISSION_DENIED) and decide nothing themselves.
The flags of each `Entry` (`writable`, `removable`) are read from this
table too, so what a client is shown matches what it is allowed.
"""
from __future__ import annotations

import enum

from .errors import PermissionDenied
from .resolve import Kind

OWNER, WRITE, READ = "owner", "write", "read"
GRANTS = (OWNER, WRITE, READ)


class Op(enum.Enum):
    READ = "reading"
    CREATE = "writing"
    CHANGE = "changing"
    REMOVE = "removing"
    PURGE = "purging"
    SHARE = "sharing"

    # A member is equal only to itself, so its identity is its hash: looked
    # up in sets and tables for every member of a listing, where Enum's own
    # (a Python-level hash of the name) shows in the profile.
    __hash__ = object.__hash__


ANY = frozenset(GRANTS)
WRITERS = frozenset({OWNER, WRITE})
OWNERS = frozenset({OWNER})
NOBODY = frozenset()

COFFER = (Kind.META, Kind.HISTORY, Kind.VERSION, Kind.TRASH, Kind.TRASHED, Kind.SNAPSHOT, Kind.SNAPSHOT_FILE)
PURGEABLE = (Kind.HISTORY, Kind.VERSION, Kind.TRASH, Kind.TRASHED)

READ_ONLY = "/.coffer is read-only: copy from it to restore, delete in it to purge"
SHARED_PLACE = ("/Shared is where folders shared with you appear; write inside a shared folder, "
                "not next to it")
TOP_FIXED = "the top folder cannot be replaced or removed"
MOUNT_FIXED = ("a folder shared with you cannot be deleted, moved or renamed by you; "
               "its owner can stop sharing it")
OWN_ONLY = "only folders of your own tree can be shared"

# (operation, kind): (grants that may, why the others may not)
TABLE: dict[tuple[Op, Kind], tuple[frozenset, str]] = {
    **{(Op.READ, k): (ANY, "") for k in Kind},

    (Op.CREATE, Kind.TOP): (NOBODY, TOP_FIXED),
    (Op.CREATE, Kind.LIVE): (WRITERS, ""),
    (Op.CREATE, Kind.MOUNT): (NOBODY, MOUNT_FIXED),
    (Op.CREATE, Kind.SHARED): (NOBODY, SHARED_PLACE),
    **{(Op.CREATE, k): (NOBODY, READ_ONLY) for k in COFFER},

    (Op.CHANGE, Kind.TOP): (NOBODY, TOP_FIXED),
    (Op.CHANGE, Kind.LIVE): (WRITERS, ""),
    (Op.CHANGE, Kind.MOUNT): (OWNERS, ""),            # the top's attributes are its owner's
    (Op.CHANGE, Kind.SHARED): (NOBODY, SHARED_PLACE),
    **{(Op.CHANGE, k): (NOBODY, READ_ONLY) for k in COFFER},

    (Op.REMOVE, Kind.TOP): (NOBODY, TOP_FIXED),
    (Op.REMOVE, Kind.LIVE): (WRITERS, ""),
    (Op.REMOVE, Kind.MOUNT): (NOBODY, MOUNT_FIXED),
    (Op.REMOVE, Kind.SHARED): (NOBODY, SHARED_PLACE),
    **{(Op.REMOVE, k): (NOBODY, READ_ONLY) for k in COFFER},

    (Op.PURGE, Kind.TOP): (NOBODY, "the top folder cannot be purged"),
    (Op.PURGE, Kind.LIVE): (OWNERS, ""),
    (Op.PURGE, Kind.MOUNT): (NOBODY, "a folder shared with you cannot be purged by you"),
    (Op.PURGE, Kind.SHARED): (NOBODY, SHARED_PLACE),
    (Op.PURGE, Kind.META): (NOBODY, "this cannot be deleted; delete entries inside it to purge"),
    **{(Op.PURGE, k): (OWNERS, "") for k in PURGEABLE},
    (Op.PURGE, Kind.SNAPSHOT): (NOBODY, READ_ONLY),
    (Op.PURGE, Kind.SNAPSHOT_FILE): (NOBODY, READ_ONLY),

    **{(Op.SHARE, k): (NOBODY, OWN_ONLY) for k in Kind},
    (Op.SHARE, Kind.LIVE): (OWNERS, ""),
}

WHY_GRANT = {READ: "this shared folder is read-only for you", WRITE: "only the shared folder's owner can do this"}

# What a session opened with a limited app password may ask for at all
# (providers/app_passwords.py), whatever its grant: `backup` adds, overwrites
# and deletes to the trash, and never purges or shares.
SCOPE_OPS = {"read-only": frozenset({Op.READ}),
             "backup": frozenset({Op.READ, Op.CREATE, Op.CHANGE, Op.REMOVE})}
WHY_SCOPE = {"read-only": "this app password is read-only",
             "backup": "a backup app password cannot purge, share or shorten history"}


def allowed(op: Op, kind: Kind, grant: str, scope: str | None = None) -> bool:
    return grant in TABLE[(op, kind)][0] and (scope is None or op in SCOPE_OPS[scope])


def possible(op: Op, place: Kind) -> bool:
    """May anybody do `op` at a place of this kind, as the layout tells it
    (`Resolver.place`: META stands for anything in /.coffer)?"""
    kinds = COFFER if place is Kind.META else (place,)
    return any(TABLE[(op, k)][0] for k in kinds)


def needs_grant(op: Op, kind: Kind) -> bool:
    """Does the answer depend on the grant (else no lookup of it is needed)?"""
    grants = TABLE[(op, kind)][0]
    return bool(grants) and grants != ANY


def check(op: Op, kind: Kind, grant: str, path: str, refused=None, scope: str | None = None) -> None:
    """Raise PermissionDenied unless the table allows `op` on `kind` with
    `grant`, and the session's app-password `scope` (if any) allows `op`;
    `refused(op)` is called first for a refusal to a collaborator (to
    audit it)."""
    check_scope(op, path, scope)
    grants, why = TABLE[(op, kind)]
    if grant in grants:
        return
    if grants and grant in WHY_GRANT:
        why = WHY_GRANT[grant]
    if grant != OWNER and refused is not None:
        refused(op)
    raise PermissionDenied(f"{op.value} {path}: {why}")


def check_scope(op: Op, path: str, scope: str | None) -> None:
    """Raise PermissionDenied if a limited app password's scope does not allow `op`."""
    if scope is not None and op not in SCOPE_OPS[scope]:
        raise PermissionDenied(f"{op.value} {path}: {WHY_SCOPE[scope]}")
