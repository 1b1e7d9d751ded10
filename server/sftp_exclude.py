"""`coffer exclude …` over SSH: an account holder chooses which of their
files keep no history (temporary files, caches, what they do not want kept
in old versions), as the service policy promises them.

    ssh -p PORT alice@host coffer exclude list [--json]
    ssh -p PORT alice@host coffer exclude add '*.tmp' [--drop-history]
    ssh -p PORT alice@host coffer exclude remove '*.tmp'

Patterns match file names (shell style: *, ?, [..]), not paths, in the
account's home and the folders it shares. They apply at once, in every
session: a matching file keeps only its current version from its next
write on; `--drop-history` also purges the old versions matching files
kept so far. A limited app password may list but not change them. Exit
status: 0 done, 1 refused or failed, 2 usage.
"""
from __future__ import annotations

import json

from providers.errors import CofferError

from .sftp_exec import replies

USAGE = ("usage: coffer exclude list [--json]\n"
         "       coffer exclude add PATTERN [--drop-history]\n"
         "       coffer exclude remove PATTERN\n")


def run(channel, vfs, args: list[str]) -> int:
    say, fail = replies(channel)
    action, rest = (args[0], args[1:]) if args else ("", [])
    dropped = None
    try:
        if action == "list" and rest in ([], ["--json"]):
            pats = vfs.exclusions()
            say(json.dumps(pats) if rest else "\n".join(pats) or "no patterns: every file keeps its history")
            return 0
        if action == "add" and len(rest) in (1, 2) and rest[1:] in ([], ["--drop-history"]):
            pats, dropped = vfs.exclusion_change(add=rest[0], drop_history=len(rest) == 2)
        elif action == "remove" and len(rest) == 1:
            pats, _ = vfs.exclusion_change(remove=rest[0])
        else:
            return fail(USAGE, 2)
    except CofferError as e:
        return fail(f"coffer exclude {action}: {e}\n")
    say("\n".join(pats) or "no patterns: every file keeps its history")
    if dropped is not None:
        channel.sendall_stderr(f"history dropped: {dropped['files']} matching file(s), {dropped['versions']} old "
                               f"version(s) purged, {dropped['freed_bytes']} bytes freed\n".encode())
    elif action == "add":
        channel.sendall_stderr(b"matching files keep no old versions from their next write on "
                               b"(add --drop-history to purge what they kept)\n")
    else:
        channel.sendall_stderr(b"files that no longer match keep history again from their next write on\n")
    return 0
