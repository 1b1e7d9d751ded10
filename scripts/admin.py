"""coffer-admin: the administrator's command line, a thin layer over providers.

Secrets (passwords, recovery codes) come from a prompt, or from standard input
with --password-stdin (one per line); never from the command line. Listing
commands take --json. Long work shows progress on a terminal and stays quiet
with --json or when not on a terminal. Every failure exits non-zero with one
line naming what failed and what to do.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from providers import config
from providers.accounts import BadRequest
from providers.errors import CofferError
from providers.storage import Storage

from . import admin_access, admin_apps, admin_gdpr, admin_keys, admin_login, admin_share, admin_tls
from .admin_common import Progress, Secrets, UsageError, human, out, parse_size, user_dict

# the modules that add command groups, in the order of --help: register(sub, user_sub, add)
COMMAND_GROUPS = (admin_keys.register, admin_apps.register, admin_gdpr.register, admin_access.register,
                  admin_share.register, admin_login.register, admin_tls.register)


# -- commands ---------------------------------------------------------------------------

def cmd_user_add(st, args):
    secrets = Secrets(args.password_stdin)
    password = secrets.get(f"Password for {args.name}: ", confirm=True)
    quota = parse_size(args.quota) if args.quota is not None else None
    user, recovery = st.accounts.create(args.name, password, mode=args.mode, plan=args.plan, quota=quota,
                                        first_name=args.first_name, last_name=args.last_name,
                                        email=args.email, consent=args.consent == "yes")
    data = user_dict(st, user)
    text = f"created account {user.name} ({user.mode}, plan {user.plan}, quota {human(data['quota_bytes'])})"
    if recovery:
        data["recovery_code"] = recovery
        text += (f"\nrecovery code (shown once, keep it offline): {recovery}\n"
                 "This account is private: without its password or this code its files cannot be recovered.")
    out(args, data, text)


def cmd_user_list(st, args):
    users = [user_dict(st, u) for u in st.accounts.list()]
    rows = [f"{'NAME':<20} {'STATUS':<10} {'MODE':<8} {'PLAN':<10} {'USED':>11} {'QUOTA':>11}  LAST LOGIN"]
    rows += [f"{u['name']:<20} {u['status']:<10} {u['mode']:<8} {u['plan']:<10} {human(u['used_bytes']):>11} "
             f"{human(u['quota_bytes']):>11}  {u['last_login']}" for u in users]
    out(args, users, "\n".join(rows))


def cmd_user_show(st, args):
    user = st.accounts.get(args.name)
    data = dict(user_dict(st, user), two_step_sign_in=st.totp.state(user.id)["on"])
    lines = [f"{k.replace('_', ' ')}: {human(v) if k.endswith('bytes') else v}" for k, v in data.items()
             if not k.startswith("email_consent")]
    lines.append(f"news email: {'yes' if data['email_consent'] else 'no'} since {data['email_consent_changed']} "
                 f"({data['email_consent_how']})")
    out(args, data, "\n".join(lines))


def cmd_user_passwd(st, args):
    secrets = Secrets(args.password_stdin)
    user = st.accounts.get(args.name)
    if args.discard_data:
        return _reset_discarding(st, args, secrets, user)
    old = code = None
    if user.mode == "private":
        if args.recovery_code:
            code = secrets.get("Recovery code: ")
        else:
            old = secrets.get(f"Current password of {user.name} (private account): ")
    new = secrets.get(f"New password for {user.name}: ", confirm=True)
    recovery = st.accounts.set_password(user.name, new, old_password=old, recovery_code=code)
    text = f"password of {user.name} changed; keys re-wrapped, nothing re-encrypted"
    data = {"name": user.name, "changed": True}
    if recovery:
        data["recovery_code"] = recovery
        text += f"\nnew recovery code (the old one no longer works): {recovery}"
    out(args, data, text)


def _reset_discarding(st, args, secrets, user):
    from providers import lifecycle
    if user.mode != "private":
        raise UsageError(f"account {user.name} is managed: change its password without --discard-data")
    warning = (f"account {user.name} is private: without its password or recovery code nobody can decrypt "
               f"its files ({human(st.accounts.usage(user.id))}); resetting deletes them for good and "
               "starts the account again empty")
    if not args.yes:
        if not sys.stdin.isatty() or args.password_stdin:
            raise UsageError(warning + "; add --yes to confirm")
        print(warning, file=sys.stderr)
        if input(f"Type the account name ({user.name}) to confirm: ").strip() != user.name:
            raise UsageError("not confirmed; nothing was changed")
    new = secrets.get(f"New password for {user.name}: ", confirm=True)
    prog = Progress(args, "chunks removed")
    result = lifecycle.reset_password(st, user.name, new, progress=prog)
    prog.done()
    out(args, result, f"password of {user.name} reset; {result['files']} file(s) and "
                      f"{human(result['bytes'])} deleted for good; the account is empty\n"
                      f"new recovery code (shown once, keep it offline): {result['recovery_code']}")


def cmd_user_status(status):
    def run(st, args):
        u = st.accounts.set_status(args.name, status)
        out(args, {"name": u.name, "status": u.status}, f"account {u.name} is now {u.status}")
    return run


def cmd_user_quota(st, args):
    user = st.accounts.get(args.name)
    values = {}
    if args.plan:
        values["plan"] = args.plan
        values["quota_bytes"] = None
    if args.size is not None:
        values["quota_bytes"] = parse_size(args.size)
    if values:
        user = st.accounts.update(user.name, **values)
    data = user_dict(st, user)
    text = f"{user.name}: plan {user.plan}, quota {human(data['quota_bytes'])}, used {human(data['used_bytes'])}"
    if data["quota_bytes"] is not None and data["used_bytes"] > data["quota_bytes"]:
        text += "\nwarning: usage is above the new quota: new writes are refused until files are removed"
    out(args, data, text)


def cmd_user_totp_reset(st, args):
    user = st.accounts.get(args.name)
    was_on = st.totp.state(user.id)["on"]
    removed = st.totp.turn_off(user.id, actor="admin")
    text = (f"{user.name}: two-step sign-in turned off; its password alone signs in again, and it can enrol "
            "a new phone on its Security page" if was_on else
            f"{user.name} had no two-step sign-in" + (" (an unconfirmed enrolment was dropped)" if removed else ""))
    out(args, {"name": user.name, "was_on": was_on, "reset": removed}, text)


def cmd_user_hold(st, args):
    from providers import guard
    user = st.accounts.get(args.name)
    released = guard.release(st.db, user.id) if args.release else False
    with st.db.read() as c:
        data = dict(guard.state(c, user.id), name=user.name, released=released)
    if args.release:
        text = (f"{user.name}: hold ended; retention and purging resume" if released
                else f"{user.name} was not on hold")
    elif data["held"]:
        text = (f"{user.name} is on hold since {data['hold_from']}, until {data['hold_until']}: many of its files "
                "changed at once, and nothing of it is removed meanwhile")
    else:
        text = f"{user.name} is not on hold ({data['changes_in_window']} file(s) changed in the guard's window)"
    out(args, data, text)


def cmd_fsck(st, args):
    password = Secrets(True).get("password") if args.password_stdin else None
    prog = Progress(args, "chunks checked")
    report = st.fsck(user=args.user, password=password, progress=prog)
    prog.done()
    lines = [f"checked {report['chunks_checked']} chunks ({report['chunks_decrypted']} decrypted and re-hashed)"]
    for d in report["damaged"]:
        lines.append(f"DAMAGED in {d['account']}: {d['problem']}: {', '.join(d['files']) or 'no file uses it'}")
    lines.append("no damage found" if not report["damaged"] else
                 f"{len(report['damaged'])} damaged chunk(s): restore the named files from an older version "
                 "or a backup of the blob store")
    out(args, report, "\n".join(lines))
    return 2 if report["damaged"] else 0


def cmd_gc(st, args):
    from providers.leases import holder_id
    from providers.schedule import LEASE_SECONDS
    me = "coffer-admin:" + holder_id()
    taken, by = st.leases.take("gc", me, 24 * 3600)
    if not taken:
        raise UsageError(f"a gc is running already, in {by}; wait for it to finish (at most {LEASE_SECONDS} s "
                         f"after that process stops) and run this again")
    try:
        prog = Progress(args, "blobs scanned")
        grace = st.cfg.storage.gc_grace_seconds if args.grace is None else args.grace
        report = st.gc(grace_seconds=grace, progress=prog)
        prog.done()
    finally:
        st.leases.give_up("gc", me)
    out(args, report, ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report.items()))


def cmd_db_upgrade(st, args):
    out(args, {"upgraded": True}, "database schema is up to date")


# -- wiring ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coffer-admin", description="Administer a Coffer server: accounts, "
                                "storage checks and data-protection duties.")
    p.add_argument("--config", help="config file (default: $COFFER_CONFIG, else built-in defaults under ./var)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent, name, func, help_, json_=False, secrets=False):
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        if json_:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if secrets:
            sp.add_argument("--password-stdin", action="store_true",
                            help="read secrets from standard input, one per line, instead of a prompt")
        return sp

    user = sub.add_parser("user", help="accounts: add, list, show, passwd, disable, enable, quota")
    us = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    sp = add(us, "add", cmd_user_add, "create an account (password from a prompt or stdin)", True, True)
    sp.add_argument("name")
    sp.add_argument("--mode", choices=["private", "managed"],
                    help="private: only the user's password opens the files; managed: the server key does "
                         "(default from the config)")
    sp.add_argument("--plan", help="a plan named in the config")
    sp.add_argument("--quota", help="explicit quota instead of the plan's, e.g. 50G (0 = no limit)")
    sp.add_argument("--first-name", default="")
    sp.add_argument("--last-name", default="")
    sp.add_argument("--email", default="")
    sp.add_argument("--consent", choices=["yes", "no"], default="no",
                    help="the answer to news by email given at sign-up, recorded with its time (default: no); "
                         "security notices need none")
    add(us, "list", cmd_user_list, "list accounts", True)
    add(us, "show", cmd_user_show, "show one account", True).add_argument("name")
    sp = add(us, "passwd", cmd_user_passwd, "change a password (private accounts: current password or "
             "recovery code first)", True, True)
    sp.add_argument("name")
    sp.add_argument("--recovery-code", action="store_true",
                    help="private account: give the recovery code instead of the current password")
    sp.add_argument("--discard-data", action="store_true",
                    help="private account with neither password nor recovery code: delete its files for good "
                         "and start it again empty (asks to confirm)")
    sp.add_argument("--yes", action="store_true", help="confirm --discard-data without a prompt")
    add(us, "disable", cmd_user_status("disabled"), "refuse all logins of an account", True).add_argument("name")
    add(us, "enable", cmd_user_status("active"), "allow logins again", True).add_argument("name")
    sp = add(us, "hold", cmd_user_hold, "show the mass-change guard's hold on an account, or end it", True)
    sp.add_argument("name")
    sp.add_argument("--release", action="store_true", help="end the hold (a false alarm): retention resumes")
    sp = add(us, "totp-reset", cmd_user_totp_reset, "turn off an account's two-step sign-in (TOTP) for a holder "
             "who lost both phone and recovery codes (recorded for the holder to read)", True)
    sp.add_argument("name")
    sp = add(us, "quota", cmd_user_quota, "show or set an account's plan or quota", True)
    sp.add_argument("name")
    sp.add_argument("size", nargs="?", help="explicit quota, e.g. 50G (0 = no limit)")
    sp.add_argument("--plan", help="switch to a plan named in the config")

    sp = add(sub, "fsck", cmd_fsck, "read and check every stored chunk (exit 2 if damage is found)", True)
    sp.add_argument("--user", help="only this account")
    sp.add_argument("--password-stdin", action="store_true",
                    help="private account: its password on stdin, to decrypt and re-hash too")
    sp = add(sub, "gc", cmd_gc, "reclaim blobs and chunks nothing refers to (left by crashes)", True)
    sp.add_argument("--grace", type=int, default=None,
                    help="spare unreferenced blobs younger than this many seconds (uploads in flight; "
                    "default: [storage] gc_grace_seconds)")
    db = sub.add_parser("db", help="database schema")
    ds = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    add(ds, "upgrade", cmd_db_upgrade, "apply schema migrations", True)
    for register in COMMAND_GROUPS:
        register(sub, us, add)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    os.umask(0o077)                  # files it makes under the data folder stay the server's alone
    try:
        cfg = config.load(args.config)
        st = Storage.open(cfg)
    except CofferError as e:
        print(f"coffer-admin: {e}", file=sys.stderr)
        return 1
    try:
        return args.func(st, args) or 0
    except (CofferError, BadRequest) as e:
        print(f"coffer-admin: {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("coffer-admin: interrupted", file=sys.stderr)
        return 130
    finally:
        st.close()


if __name__ == "__main__":
    sys.exit(main())
