"""`coffer app-password …` over SSH: an account holder manages their own
app passwords (providers/app_passwords.py).

    ssh -p PORT alice@host coffer app-password add 'laptop restic' --scope backup
    ssh -p PORT alice@host coffer app-password list [--json]
    ssh -p PORT alice@host coffer app-password revoke 'laptop restic'

`add` prints the secret once, on standard output alone (so a script can
capture it). Only a session opened with the account's password, a key, or
a full app password may add or revoke. Exit status: 0 done, 1 refused or
failed, 2 usage.
"""
from __future__ import annotations

import json

from providers.app_passwords import SCOPES
from providers.errors import CofferError

from .sftp_exec import replies

USAGE = ("usage: coffer app-password add NAME [--scope full|read-only|backup]\n"
         "       coffer app-password list [--json]\n"
         "       coffer app-password revoke NAME|NUMBER\n")


def run(channel, vfs, args: list[str]) -> int:
    say, fail = replies(channel)

    action, rest = (args[1], args[2:]) if len(args) > 1 else ("", [])
    try:
        if action == "add" and rest:
            scope = "full"
            if len(rest) == 3 and rest[1] == "--scope":
                scope = rest[2]
            elif len(rest) != 1:
                return fail(USAGE, 2)
            if scope not in SCOPES:
                return fail(f"coffer app-password add: the scope is one of {', '.join(SCOPES)}\n", 2)
            app, secret = vfs.app_password_create(rest[0], scope)
            channel.sendall_stderr(f"app password {app.label!r} ({app.scope}), number {app.id}, shown this once:\n"
                                   .encode("utf-8"))
            say(secret)
        elif action == "list" and rest in ([], ["--json"]):
            apps = [{"number": a.id, "name": a.label, "scope": a.scope, "created_us": a.created_us,
                     "last_used_us": a.last_used_us} for a in vfs.app_password_list()]
            say(json.dumps(apps, indent=2) if rest else "\n".join(
                f"{a['number']}  {a['name']}  {a['scope']}" for a in apps) or "no app passwords")
        elif action == "revoke" and len(rest) == 1:
            app = vfs.app_password_revoke(rest[0])
            say(f"revoked app password {app.label!r}; its sessions end at their next request")
        else:
            return fail(USAGE, 2)
    except CofferError as e:
        return fail(f"coffer app-password {action}: {e}\n")
    return 0
