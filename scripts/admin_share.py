"""`coffer-admin share grant | revoke | list`: an owner's shared folders.

Each command opens the owner's filesystem and calls the same sharing API the
owner reaches over SSH (`coffer share …`): the admin acts as the owner, and the
audit records say an administrator did. A
private owner's folder keys open only with the owner's password, so for such
an account the password is read from a prompt or, with --password-stdin,
from standard input.
"""
from __future__ import annotations

from providers.shares import PERMISSIONS

from .admin_common import UsageError, out
from .admin_gdpr import open_account


def _owner(st, args):
    args.name = args.owner
    return open_account(st, args, "share")


def cmd_grant(st, args):
    if args.permission not in PERMISSIONS:
        raise UsageError(f"the permission is 'read' or 'write', not {args.permission!r}")
    vfs = _owner(st, args)
    owner = vfs.user.name
    try:
        got = vfs.share_grant(args.path, args.grantee, args.permission, actor="admin")
    finally:
        vfs.close()
    got["owner"] = owner
    out(args, got, f"{owner}:{got['folder']} is shared with {got['grantee']} ({got['permission']}); "
                   f"it appears to them as {got['appears_as']}")


def cmd_revoke(st, args):
    vfs = _owner(st, args)
    owner = vfs.user.name
    try:
        got = vfs.share_revoke(args.path, args.grantee, actor="admin")
    finally:
        vfs.close()
    got["owner"] = owner
    out(args, got, f"{owner}:{got['folder']} is no longer shared with {got['grantee']}; "
                   "the folder key was rotated")


def format_listing(owner: str, listing: dict) -> str:
    lines = []
    if listing["shared"]:
        lines.append(f"{'FOLDER':<32} {'WITH':<20} PERMISSION")
        lines += [f"{s['folder']:<32} {s['grantee']:<20} {s['permission']}"
                  + (" (in the trash)" if s["trashed"] else "") for s in listing["shared"]]
    else:
        lines.append(f"{owner} shares no folders")
    if listing["received"]:
        lines.append("")
        lines.append(f"{'SHARED WITH ' + owner:<32} {'BY':<20} PERMISSION")
        lines += [f"{r['folder']:<32} {r['owner']:<20} {r['permission']}" for r in listing["received"]]
    return "\n".join(lines)


def cmd_list(st, args):
    vfs = _owner(st, args)
    owner = vfs.user.name
    try:
        listing = vfs.share_list()
    finally:
        vfs.close()
    out(args, dict(listing, owner=owner), format_listing(owner, listing))


def register(sub, user_sub, add) -> None:
    share = sub.add_parser("share", help="shared folders: grant, revoke, list (acting as the folder's owner)")
    ss = share.add_subparsers(dest="share_command", required=True, metavar="ACTION")
    sp = add(ss, "grant", cmd_grant, "open a folder of OWNER to GRANTEE, read-only or read/write (again: "
             "change the permission); a private OWNER's password is needed", True, True)
    sp.add_argument("owner")
    sp.add_argument("path", help="the folder in OWNER's tree, e.g. /Projects")
    sp.add_argument("grantee", help="the account that gets access")
    sp.add_argument("permission", metavar="read|write")
    sp = add(ss, "revoke", cmd_revoke, "take a folder back from GRANTEE at once (its key is rotated); a "
             "private OWNER's password is needed", True, True)
    sp.add_argument("owner")
    sp.add_argument("path")
    sp.add_argument("grantee")
    add(ss, "list", cmd_list, "folders OWNER shares (with whom, how) and folders shared with OWNER",
        True, True).add_argument("owner")
