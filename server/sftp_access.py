"""`coffer access` over SSH: an account holder lists what administrators did
on their account.

    ssh -p PORT alice@host coffer access [--json]

Exports (with their reason), restores, purges, password resets, erasure,
disclosures to third parties (to whom, and why) and every other event an
administrator caused, oldest first, as providers/access.py records them.
Only the logged-in account's own record is shown. Exit status: 0 done,
1 failed, 2 usage.
"""
from __future__ import annotations

import json

from providers.errors import CofferError
from providers.lifecycle import iso

USAGE = "usage: coffer access [--json]\n"


def run(channel, vfs, args: list[str]) -> int:
    if args not in ([], ["--json"]):
        channel.sendall_stderr(USAGE.encode())
        return 2
    try:
        rows = vfs.administrator_access()
    except CofferError as e:
        channel.sendall_stderr(f"coffer access: {e}\n".encode("utf-8"))
        return 1
    listing = [{"id": r["id"], "at": iso(r["at_us"]), "event": r["event"], "what": r["what"],
                "detail": r["detail"]} for r in rows]
    if args:
        text = json.dumps(listing, indent=2, ensure_ascii=False)
    else:
        text = "\n".join(f"{r['at']}  #{r['id']}  {r['what']}" for r in listing) or \
            "no administrator action is recorded on your account"
    channel.sendall((text + "\n").encode("utf-8"))
    return 0
