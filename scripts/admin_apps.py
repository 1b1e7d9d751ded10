"""`coffer-admin user app-password add | list | revoke`: app passwords, one
per device or backup job (providers/app_passwords.py).

`add` prints the new secret once. It wraps the account's user key, so for
a `private` account the account's password is asked for (a prompt, or a
line on standard input with --password-stdin); listing and revoking need
no key.
"""
from __future__ import annotations

from providers.app_passwords import SCOPES

from .admin_common import out, when
from .admin_gdpr import open_account


def _app_dict(a) -> dict:
    return {"number": a.id, "name": a.label, "scope": a.scope, "created": when(a.created_us),
            "last_used": when(a.last_used_us)}


def cmd_add(st, args):
    vfs = open_account(st, args, "app-password")
    try:
        app, secret = vfs.app_password_create(args.label, args.scope, actor="admin")
    finally:
        vfs.close()
    data = dict(_app_dict(app), account=args.name, password=secret)
    out(args, data, f"app password {app.label!r} ({app.scope}) for {args.name}:\n\n    {secret}\n\n"
                    "It is shown this once. Give it to the device or backup job in place of the account's "
                    "password, with the account name as user name; revoke it with "
                    f"`coffer-admin user app-password revoke {args.name} {app.id}`.")


def cmd_list(st, args):
    user = st.accounts.get(args.name)
    data = [_app_dict(a) for a in st.apps.list(user.id)]
    rows = [f"{'#':>4}  {'NAME':<24} {'SCOPE':<10} {'CREATED':<23}  LAST USED"]
    rows += [f"{d['number']:>4}  {d['name']:<24} {d['scope']:<10} {d['created']:<23}  {d['last_used']}"
             for d in data]
    out(args, data, "\n".join(rows) if data else f"{args.name} has no app passwords")


def cmd_revoke(st, args):
    user = st.accounts.get(args.name)
    app = st.apps.revoke(user.id, args.app, actor="admin")
    out(args, dict(_app_dict(app), account=args.name, revoked=True),
        f"revoked app password {app.label!r} of {args.name}; its sessions end at their next request")


def register(sub, user_sub, add) -> None:
    grp = user_sub.add_parser("app-password", help="app passwords, one per device or backup job: add, list, revoke")
    gs = grp.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    sp = add(gs, "add", cmd_add, "make an app password (printed once); a private account's password is asked for",
             True, secrets=True)
    sp.add_argument("name")
    sp.add_argument("label", help="the device or job it is for, e.g. 'laptop restic'")
    sp.add_argument("--scope", choices=SCOPES, default="full",
                    help="full (default); read-only; backup: add, overwrite and delete to the trash, never purge")
    add(gs, "list", cmd_list, "list an account's app passwords with their last use", True).add_argument("name")
    sp = add(gs, "revoke", cmd_revoke, "revoke an app password, by name or number", True)
    sp.add_argument("name")
    sp.add_argument("app", help="its name or the number `list` shows")
