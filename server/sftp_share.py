"""`coffer share …` over SSH: an owner manages their own shared folders.

    ssh -p PORT owner@host coffer share grant /Projects bob write
    ssh -p PORT owner@host coffer share revoke /Projects bob
    ssh -p PORT owner@host coffer share list [--json]

The logged-in account is the owner; the work is the filesystem API's
`share_grant`, `share_revoke` and `share_list` (the same calls as
`coffer-admin share`). Exit status: 0 done, 1 refused or failed, 2 usage.

A grant answers alike, after the same work, whether or not the grantee is an
active account, and a revoke says "not shared with" for both: an account
holder cannot probe which accounts exist. `share list` shows the grants
really in place, so an owner can check a name they typed.
"""
from __future__ import annotations

import json

from providers import paths
from providers.errors import CofferError

from .sftp_exec import replies

USAGE = ("usage: coffer share grant FOLDER ACCOUNT read|write\n"
         "       coffer share revoke FOLDER ACCOUNT\n"
         "       coffer share list [--json]\n"
         "       coffer access [--json]\n")


def run(channel, vfs, args: list[str]) -> int:
    say, fail = replies(channel)

    if not args or args[0] != "share" or len(args) < 2:
        return fail(USAGE, 2)
    action, rest = args[1], args[2:]
    try:
        if action == "grant" and len(rest) == 3:
            got = vfs.share_grant(paths.resolve_dots(rest[0], "/"), rest[1], rest[2], disclose=False)
            say(f"{got['folder']}: {got['permission']} access granted to {got['grantee']} if that is the name of an "
                f"active account; it appears to them as {got['appears_as']}. "
                "`coffer share list` shows who has access.")
        elif action == "revoke" and len(rest) == 2:
            got = vfs.share_revoke(paths.resolve_dots(rest[0], "/"), rest[1], disclose=False)
            say(f"{got['folder']} is no longer shared with {got['grantee']}")
        elif action == "list" and rest in ([], ["--json"]):
            listing = vfs.share_list()
            say(json.dumps(listing, indent=2) if rest else _text(listing))
        else:
            return fail(USAGE, 2)
    except CofferError as e:
        return fail(f"coffer share {action}: {e}\n")
    return 0


def _text(listing: dict) -> str:
    lines = [f"{s['folder']}  {s['grantee']}  {s['permission']}" + ("  (in the trash)" if s["trashed"] else "")
             for s in listing["shared"]] or ["you share no folders"]
    lines += [f"{r['folder']}  from {r['owner']}  {r['permission']}" for r in listing["received"]]
    return "\n".join(lines)
