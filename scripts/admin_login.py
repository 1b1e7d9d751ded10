"""`coffer-admin login show|clear`: what the login guard holds on an account
or an address, and lifting it (its records are keyed hashes, so they are
asked for by name and address)."""
from __future__ import annotations

from .admin_common import UsageError, out


def _target(args) -> tuple[str | None, str | None]:
    if not args.user and not args.address:
        raise UsageError("give --user NAME, --address ADDR, or both")
    return args.user, args.address


def cmd_login_show(st, args):
    name, addr = _target(args)
    data = st.throttle.status(name, addr)
    rows = [f"{label}: {d['failures']} failure(s) in the window"
            + (f", banned for {d['blocked_for_seconds']} s more" if label == "address" and d["blocked_for_seconds"]
               else f", next guess in {d['blocked_for_seconds']} s" if d["blocked_for_seconds"] else "")
            + (f", {d['bans']} ban(s) so far" if d["bans"] else "")
            + (", trusted (logged in from there)" if d["trusted"] else "")
            for label, d in data.items()]
    out(args, data, "\n".join(rows) if rows else "the login guard holds nothing on that")


def cmd_login_clear(st, args):
    name, addr = _target(args)
    n = st.throttle.clear(name, addr)
    out(args, {"removed": n}, f"removed {n} login guard record(s)")


def register(sub, user_sub, add) -> None:
    login = sub.add_parser("login", help="the login guard: show or lift what it holds on an account or address")
    ls = login.add_subparsers(dest="login_command", required=True, metavar="ACTION")
    for name, func, help_ in (
            ("show", cmd_login_show, "failures, ban and trust held on an account, an address, or the pair"),
            ("clear", cmd_login_clear, "forget them: lifts an address ban or an account's delays "
                                       "(--user alone clears the account with all its addresses)")):
        sp = add(ls, name, func, help_, True)
        sp.add_argument("--user", help="account name")
        sp.add_argument("--address", help="client address (IPv6 counts by its /64)")
