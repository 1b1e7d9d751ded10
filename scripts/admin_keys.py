"""`coffer-admin user key add|list|remove`: SSH public keys for SFTP logins."""
from __future__ import annotations

import sys

from providers.sshkeys import SSHKeys

from .admin_common import UsageError, out, when


def _keys(st) -> SSHKeys:
    return SSHKeys(st.db, st.accounts)


def _read_key(source: str) -> str:
    if source == "-":
        text = sys.stdin.read(65536)
    else:
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read(65536)
        except OSError as e:
            raise UsageError(f"cannot read {source}: {e.strerror}; give the .pub file or - for stdin") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise UsageError(f"expected exactly one public key line, found {len(lines)}")
    return lines[0]


def cmd_key_add(st, args):
    info, warning = _keys(st).add(args.name, _read_key(args.keyfile), comment=args.comment)
    data = {"name": args.name, "fingerprint": info.fingerprint, "type": info.key_type, "comment": info.comment,
            "warning": warning}
    out(args, data, f"added {info.key_type} key {info.fingerprint} for {args.name}")
    if warning and not getattr(args, "json", False):
        print(f"coffer-admin: warning: {warning}", file=sys.stderr)


def cmd_key_list(st, args):
    keys = _keys(st).list(args.name)
    data = [{"number": i, "fingerprint": k.fingerprint, "type": k.key_type, "comment": k.comment,
             "added": when(k.created_us)} for i, k in enumerate(keys, 1)]
    rows = [f"{'#':>3}  {'TYPE':<20} {'FINGERPRINT':<51} {'ADDED':<23}  COMMENT"]
    rows += [f"{d['number']:>3}  {d['type']:<20} {d['fingerprint']:<51} {d['added']:<23}  {d['comment']}"
             for d in data]
    out(args, data, "\n".join(rows) if data else f"no SSH keys for {args.name}")


def cmd_key_remove(st, args):
    info = _keys(st).remove(args.name, args.key)
    out(args, {"name": args.name, "removed": info.fingerprint},
        f"removed {info.key_type} key {info.fingerprint} from {args.name}")


def register(sub, user_sub, add) -> None:
    key = user_sub.add_parser("key", help="SSH public keys for SFTP logins: add, list, remove")
    ks = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    sp = add(ks, "add", cmd_key_add, "register a public key (a .pub file, or - to read it from stdin)", True)
    sp.add_argument("name")
    sp.add_argument("keyfile", help="the public key file (id_ed25519.pub), or - for standard input")
    sp.add_argument("--comment", help="a label instead of the key's own comment")
    add(ks, "list", cmd_key_list, "list an account's keys", True).add_argument("name")
    sp = add(ks, "remove", cmd_key_remove, "remove a key, named by fingerprint, list number or comment", True)
    sp.add_argument("name")
    sp.add_argument("key", help="SHA256:… fingerprint, the number shown by `list`, or the comment")
