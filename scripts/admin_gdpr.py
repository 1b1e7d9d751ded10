"""coffer-admin commands for the account lifecycle and data protection:

  user set | cancel | reinstate | erase | export
  purge, exclude, versions, restore       (an account's files and history)
  sessions, audit, receipts               (records)
  notify breach | news                    (email through [mail])
  maintenance                             (the periodic job, for cron)

The work is done in providers/lifecycle.py and the filesystem API; this
module only parses, asks for secrets and confirmations, and prints.
"""
from __future__ import annotations

import calendar
import re
import sys
import time
from datetime import datetime, timezone

from providers import export, lifecycle
from providers.errors import Locked

from .admin_common import Progress, Secrets, UsageError, human, out, parse_size, user_dict, when

RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str) -> int:
    """A time as microseconds: ISO 8601 (UTC unless an offset is given),
    a version-style stamp like 2026-01-31T13-45-00Z, or an age like 7d, 12h."""
    text = (text or "").strip()
    m = RELATIVE.match(text)
    if m:
        return int((time.time() - int(m.group(1)) * SECONDS[m.group(2)]) * 1_000_000)
    stamp = re.match(r"^(\d{4}-\d\d-\d\d)[T ](\d\d)-(\d\d)-(\d\d)(\.\d+)?Z?$", text)
    if stamp:
        text = f"{stamp.group(1)}T{stamp.group(2)}:{stamp.group(3)}:{stamp.group(4)}{stamp.group(5) or ''}"
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(f"{text!r} is not a time: write 2026-01-31, 2026-01-31T13:45:00Z or an age like 7d, "
                         "12h, 30m") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return calendar.timegm(dt.utctimetuple()) * 1_000_000 + dt.microsecond


def confirm(args, what: str, name: str) -> None:
    """Destructive commands: --yes, or type the account name on a terminal."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what} cannot be undone: add --yes to confirm (no terminal to ask on)")
    answer = input(f"{what} cannot be undone. Type the account name ({name}) to go on: ")
    if answer.strip() != name:
        raise UsageError("not confirmed; nothing was changed")


def open_account(st, args, purpose: str, why: str = "only its own password opens its files"):
    """The account's filesystem: managed accounts open with the server key;
    private ones need the user's own password (prompt or --password-stdin),
    and `why` says what for when it is missing. The opening is recorded for
    the account's holder with its purpose and `--reason` (asked for on a
    terminal when an export of a managed account has none) or `--disclosure`."""
    user = st.accounts.get(args.name)
    lifecycle._not_erasing(user)
    reason, disclosure = getattr(args, "reason", None), getattr(args, "disclosure", None)
    if purpose == "export" and user.mode == "managed" and not reason and disclosure is None \
            and sys.stdin.isatty():
        sys.stderr.write(f"Why is {user.name} exported? (recorded; the account holder can read it): ")
        sys.stderr.flush()
        reason = sys.stdin.readline()        # the prompt on stderr: a tar may be going to stdout
    password = None
    if user.mode == "private":
        if not args.password_stdin and not sys.stdin.isatty():
            raise Locked(f"account {user.name!r} is private: {why}; give it on standard input with "
                         "--password-stdin")
        password = Secrets(args.password_stdin).get(
            f"Password of {user.name} (private account: only its own password opens its files): ")
    return st.open_account(user.name, password, how="admin", purpose=purpose, reason=reason,
                           disclosure=disclosure)


# -- user set | cancel | reinstate ------------------------------------------------------------

def cmd_user_set(st, args):
    consent = None if args.consent is None else args.consent == "yes"
    quota = parse_size(args.quota) if args.quota is not None else None
    user, warnings = lifecycle.set_profile(st, args.name, first_name=args.first_name, last_name=args.last_name,
                                           email=args.email, consent=consent, plan=args.plan, quota=quota)
    data = user_dict(st, user)
    data["warnings"] = warnings
    lines = [f"{user.name}: {user.first_name} {user.last_name} <{user.email or '-'}>, plan {user.plan}, quota "
             f"{human(data['quota_bytes'])}, used {human(data['used_bytes'])}, news email "
             f"{'yes' if user.consent_news else 'no'} (since {when(user.consent_changed_us)}, "
             f"{data['email_consent_how']})"]
    lines += [f"warning: {w}" for w in warnings]
    out(args, data, "\n".join(lines))


def cmd_user_cancel(st, args):
    user = lifecycle.cancel(st, args.name)
    out(args, user_dict(st, user),
        f"account {user.name} is cancelled: logins are refused now and it will be erased at "
        f"{when(user.erase_after_us)} (undo before then with `coffer-admin user reinstate {user.name}`)")


def cmd_user_reinstate(st, args):
    user = lifecycle.reinstate(st, args.name)
    out(args, user_dict(st, user), f"account {user.name} is active again; nothing was removed")


# -- erase ----------------------------------------------------------------------------------

def receipt_text(r: dict) -> str:
    note = ["  note: another process held the database log open; erased rows leave it at its next checkpoint"
            ] if r.get("database_log_cleared") is False else []
    return "\n".join([
        f"erasure receipt #{r['id']} ({r['reason']}): started {r['started']}, finished {r['finished']} "
        f"({r['seconds']} s, {r['runs']} run(s))",
        "  keys destroyed first: "
        f"{r['key_memberships']} wrapped domain key(s) and the account's own keys",
        f"  removed: {r['domains']} key domain(s), {r['files']} file(s), {r['folders']} folder(s), "
        f"{r['versions']} version(s), {r['chunks']} chunk(s) in {r['blobs']} blob(s), {human(r['bytes'])}",
        f"  removed: {r['dead_properties']} dead propert(ies), {r['locks']} lock(s), {r['ssh_keys']} SSH key(s)",
        f"  anonymised: {r['session_records_anonymised']} session record(s), "
        f"{r['audit_events_anonymised']} audit event(s)"] + note)


def cmd_user_erase(st, args):
    user = st.accounts.get(args.name)
    if user.status != "erasing":
        confirm(args, f"Erasing account {user.name} with all its files, versions and keys", user.name)
    prog = Progress(args, "chunks removed")
    receipt = lifecycle.erase(st, user.name, progress=prog)
    prog.done()
    if receipt is None:
        raise UsageError("another run finished this erasure meanwhile; see `coffer-admin receipts`")
    out(args, receipt, receipt_text(receipt))


def cmd_receipts(st, args):
    rows = lifecycle.receipts(st, args.id)
    out(args, rows, "\n\n".join(receipt_text(r) if r["kind"] == "erasure" else f"#{r['id']} {r['kind']} {r['at']}"
                                for r in rows) or "no receipts")


# -- export -------------------------------------------------------------------------------------

def cmd_user_export(st, args):
    if args.out == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal: give --out FILE, or redirect")
    vfs = open_account(st, args, "export")
    try:
        prog = Progress(args, "files exported")
        if args.out == "-":
            counts = export.export(st, vfs, sys.stdout.buffer, args.with_versions, prog)
            sys.stdout.buffer.flush()
        else:
            counts = export.export_to_path(st, vfs, args.out, args.with_versions, prog)
        prog.done()
    finally:
        vfs.close()
    data = {"name": vfs.user.name, "out": args.out, **counts}
    text = (f"exported {vfs.user.name} to {args.out}: {counts['files']} file(s), {counts['folders']} folder(s), "
            f"{counts['trash_items']} item(s) in the trash"
            + (f", {counts['versions']} version(s)" if args.with_versions else "")
            + f", {human(counts['bytes'])}, with README.txt and account.json (profile, consents, grants, quota, "
              "sessions, administrator access); the account holder can see this export with `coffer access`")
    if args.out == "-":
        print(text, file=sys.stderr)
    else:
        out(args, data, text)


# -- files and history ----------------------------------------------------------------------------------

def cmd_purge(st, args):
    vfs = open_account(st, args, "purge")
    try:
        confirm(args, f"Purging {args.path} with all its versions and trash entries", vfs.user.name)
        vfs.purge(args.path)
    finally:
        vfs.close()
    out(args, {"name": vfs.user.name, "purged": args.path},
        f"purged {args.path} of {vfs.user.name} with all its versions and trash entries")


def cmd_exclude(st, args):
    if args.action in ("add", "remove") and not args.pattern:
        raise UsageError(f"exclude {args.action} needs a PATTERN, for example '*.tmp'")
    if args.drop_history and args.action != "add":
        raise UsageError("--drop-history goes with add: exclude NAME add PATTERN --drop-history")
    dropped = None
    if args.action == "list":
        pats = lifecycle.exclusions(st, args.name)
    elif args.action == "add" and args.drop_history:
        pats, dropped = _exclude_dropping_history(st, args)
    elif args.action == "add":
        pats = lifecycle.change_exclusions(st, args.name, add=args.pattern)
    else:
        pats = lifecycle.change_exclusions(st, args.name, remove=args.pattern)
    text = "\n".join(pats) or "(no patterns)"
    if dropped is not None:
        text += (f"\nhistory dropped: {dropped['files']} matching file(s) marked, {dropped['versions']} old version(s) "
                 f"purged, {human(dropped['freed_bytes'])} freed")
    elif args.action == "add":
        text += ("\n(applies at once, open sessions included: matching files keep no old versions from their "
                 "next write on; --drop-history purges what they kept)")
    elif args.action == "remove":
        text += "\n(applies at once: files that no longer match keep history again from their next write on)"
    data = {"name": args.name, "patterns": pats}
    if dropped is not None:
        data["dropped"] = dropped
    out(args, data, text)


def _exclude_dropping_history(st, args):
    """Add the pattern and purge the old versions its files already kept:
    their names are encrypted, so the account's keys are needed."""
    user = st.accounts.get(args.name)
    lifecycle._not_erasing(user)
    confirm(args, f"Purging the old versions of {user.name}'s files matching {args.pattern!r}", user.name)
    vfs = open_account(st, args, "exclude", why="matching its files means reading their names, which only its own "
                                     "password decrypts (without --drop-history the pattern needs none, and "
                                     "each matching file drops its history at its next write)")
    try:
        return lifecycle.exclude_dropping_history(st, vfs, args.pattern)
    finally:
        vfs.close()


def cmd_versions(st, args):
    vfs = open_account(st, args, "versions")
    try:
        vs = vfs.versions(args.path)
    finally:
        vfs.close()
    rows = [{"id": v.id, "size": v.size, "created": when(int(v.created * 1e6)), "mtime": when(int(v.mtime * 1e6)),
             "author": v.author, "current": v.current, "name": v.name} for v in vs]
    lines = [f"{'ID':>8}  {'CREATED':<23}  {'SIZE':>11}  AUTHOR"]
    lines += [f"{r['id']:>8}  {r['created']:<23}  {human(r['size']):>11}  {r['author'] or '-'}"
              + ("  (current)" if r["current"] else "") for r in rows]
    out(args, rows, "\n".join(lines))


def cmd_restore(st, args):
    if args.version is not None and args.at is not None:
        raise UsageError("give --version or --at, not both")
    at = parse_time(args.at) / 1e6 if args.at is not None else None
    vfs = open_account(st, args, "restore")
    try:
        prog = Progress(args, "restoring")
        prog(0)
        entry = vfs.restore(args.path, version_id=args.version, at=at, to=args.to)
        prog.done()
    finally:
        vfs.close()
    src = (f"version {args.version}" if args.version is not None else
           f"its state at {when(int(at * 1e6))}" if at is not None else "the trash")
    out(args, {"name": vfs.user.name, "restored": entry.path, "from": src, "is_dir": entry.is_dir,
               "size": entry.size}, f"restored {entry.path} from {src}")


# -- records ---------------------------------------------------------------------------------------

def cmd_sessions(st, args):
    rows = lifecycle.sessions(st, args.user, parse_time(args.since) if args.since else None,
                              parse_time(args.until) if args.until else None)
    lines = [f"{'USER':<16} {'PROTO':<7} {'ADDRESS':<40} {'STARTED':<28} {'ENDED':<40} {'IN':>10} {'OUT':>10}"]
    lines += [f"{r['user'] or '(erased)':<16} {r['protocol']:<7} {r['address'] or '-':<40} {r['started']:<28} "
              f"{_ended(r):<40} {human(r['bytes_in']):>10} {human(r['bytes_out']):>10}" for r in rows]
    out(args, rows, "\n".join(lines))


def _ended(r: dict) -> str:
    """A record's end as listed: open, ended, or cut short (its process died:
    the end is its last activity seen)."""
    if r["ended"] is None:
        return "(open)"
    return f"{r['ended']} (cut short)" if r["cut_short"] else r["ended"]


def cmd_audit(st, args):
    rows = lifecycle.audit_events(st, args.user, parse_time(args.since) if args.since else None, args.event)
    lines = [f"{r['at']}  {r['event']:<22} {r['user'] or '-':<16} {r['actor']:<7} {r['address'] or '-'}"
             + (f"  {r['detail']}" if r["detail"] else "") for r in rows]
    out(args, rows, "\n".join(lines) or "no audit events")


# -- notices ------------------------------------------------------------------------------------------

def _message(args) -> str:
    try:
        with open(args.message_file, encoding="utf-8") as f:
            body = f.read()
    except OSError as e:
        raise UsageError(f"cannot read --message-file {args.message_file}: {e.strerror}") from None
    if not body.strip():
        raise UsageError(f"--message-file {args.message_file} is empty")
    return body


def _notify_out(args, result: dict, kind: str) -> int:
    lines = [f"{kind} sent to {len(result['notified'])} account(s): {', '.join(result['notified']) or '-'}"]
    lines += [f"NOT notified: {f['name']}: {f['reason']}" for f in result["failed"]]
    out(args, result, "\n".join(lines))
    return 3 if result["failed"] else 0


def cmd_notify_breach(st, args):
    body = _message(args)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    result = lifecycle.notify_breach(st, args.subject, body, since, until, args.user or (), everyone=args.all)
    return _notify_out(args, result, "security notice")


def cmd_notify_news(st, args):
    result = lifecycle.notify_news(st, args.subject, _message(args))
    return _notify_out(args, result, "news")


# -- maintenance --------------------------------------------------------------------------------------

def cmd_maintenance(st, args):
    prog = Progress(args, "accounts thinned")
    report = lifecycle.run_maintenance(st, retention=not args.no_retention, progress=prog)
    prog.done()
    lines = [f"erased {report['accounts_erased']} account(s)"
             + (f" (receipts {', '.join('#' + str(r) for r in report['receipts'])})" if report["receipts"] else ""),
             f"retention: {report['retention_accounts']} account(s), {report['versions_expired']} old version(s) "
             f"and {report['trash_expired']} trash entr(ies) removed",
             f"records: {report['session_records_purged']} session record(s), {report['audit_events_purged']} "
             f"audit event(s), {report['locks_purged']} expired lock(s) removed; "
             f"{report['session_records_ended']} session record(s) of dead processes ended (cut short)"]
    if report["accounts_bound"]:
        lines.append(f"sealed values bound to their rows: {report['accounts_bound']} managed account(s)")
    lines += [f"ERROR: {e}" for e in report["errors"]]
    out(args, report, "\n".join(lines))
    return 1 if report["errors"] else 0


# -- wiring -----------------------------------------------------------------------------------------

def _why(sp, what: str) -> None:
    sp.add_argument("--reason", metavar="TEXT", help=f"why this {what} is done: recorded, and the account holder "
                    "can read it (`coffer access`)")


def register(sub, user_sub, add):
    sp = add(user_sub, "set", cmd_user_set, "change an account's profile, email consent, plan or quota", True)
    sp.add_argument("name")
    sp.add_argument("--first-name")
    sp.add_argument("--last-name")
    sp.add_argument("--email", help="email address ('' to remove)")
    sp.add_argument("--consent", choices=["yes", "no"],
                    help="news by email: opt in or withdraw (the time is recorded); security notices need none")
    sp.add_argument("--plan", help="a plan named in the config (upgrade or downgrade; a quota below current "
                                   "usage keeps the files but refuses new writes)")
    sp.add_argument("--quota", help="explicit quota instead of the plan's, e.g. 50G (0 = no limit)")

    add(user_sub, "cancel", cmd_user_cancel, "disable an account now and erase it after the grace period "
        "([accounts] cancel_grace_days)", True).add_argument("name")
    add(user_sub, "reinstate", cmd_user_reinstate, "undo a cancellation within its grace period",
        True).add_argument("name")

    sp = add(user_sub, "erase", cmd_user_erase, "erase an account for good: its keys first, then files, "
             "versions, shares, SSH keys and personal data; prints a receipt (run again to resume)", True)
    sp.add_argument("name")
    sp.add_argument("--yes", action="store_true", help="confirm without a prompt")

    sp = add(user_sub, "export", cmd_user_export, "write a tar of an account's files, its trash, README.txt and "
             "account.json (profile, consents, grants, quota, sessions, administrator access); a managed account "
             "needs a reason, a private one its password on stdin", True, True)
    sp.add_argument("name")
    sp.add_argument("--out", required=True, metavar="FILE", help="the tar to write ('-' for standard output)")
    sp.add_argument("--with-versions", action="store_true", help="also every kept old version, under versions/")
    _why(sp, "export")
    sp.add_argument("--disclosure", type=int, metavar="ID", help="the export is for this disclosure (recorded "
                    "first with `coffer-admin disclose`); its reason is the export's")

    sp = add(sub, "purge", cmd_purge, "delete a file or folder with all its versions and trash entries, for "
             "good", True, True)
    sp.add_argument("name")
    sp.add_argument("path")
    _why(sp, "purge")
    sp.add_argument("--yes", action="store_true", help="confirm without a prompt")

    sp = add(sub, "exclude", cmd_exclude, "list, add or remove an account's patterns of files that keep no "
             "history (at once, open sessions included)", True, True)
    sp.add_argument("name")
    sp.add_argument("action", choices=["list", "add", "remove"])
    sp.add_argument("pattern", nargs="?", help="a file-name pattern, e.g. '*.tmp'")
    sp.add_argument("--drop-history", action="store_true",
                    help="with add: also purge the old versions matching files already kept, for good (a "
                         "private account needs its password)")
    sp.add_argument("--yes", action="store_true", help="confirm --drop-history without a prompt")

    sp = add(sub, "versions", cmd_versions, "list the kept versions of a file", True, True)
    sp.add_argument("name")
    sp.add_argument("path")
    _why(sp, "listing")

    sp = add(sub, "restore", cmd_restore, "bring a file or folder back: a version, its state at a time, or "
             "(by default) its newest trash entry", True, True)
    sp.add_argument("name")
    sp.add_argument("path")
    sp.add_argument("--version", type=int, metavar="ID", help="a version id from `coffer-admin versions`")
    sp.add_argument("--at", metavar="TIME", help="the state at a time, e.g. 2026-01-31T13:45:00Z or 2d")
    sp.add_argument("--to", metavar="PATH", help="restore to another path (default: in place)")
    _why(sp, "restore")

    sp = add(sub, "sessions", cmd_sessions, "session records: protocol, address (as [accounts] "
             "session_addresses keeps it), start, end (cut short: its process died), bytes in and out", True)
    sp.add_argument("--user", metavar="NAME")
    sp.add_argument("--since", metavar="TIME", help="e.g. 2026-01-31, 2026-01-31T13:45Z or 7d")
    sp.add_argument("--until", metavar="TIME")

    sp = add(sub, "audit", cmd_audit, "audit events", True)
    sp.add_argument("--user", metavar="NAME")
    sp.add_argument("--since", metavar="TIME", help="e.g. 2026-01-31, 2026-01-31T13:45Z or 7d")
    sp.add_argument("--event", help="only this event, e.g. login_failed")

    sp = add(sub, "receipts", cmd_receipts, "show stored erasure receipts", True)
    sp.add_argument("id", nargs="?", type=int)

    notify = sub.add_parser("notify", help="email accounts through the [mail] SMTP server: breach, news")
    ns = notify.add_subparsers(dest="notify_command", required=True, metavar="KIND")
    sp = add(ns, "breach", cmd_notify_breach, "security notice to the accounts that may have been active in a "
             "time window, to every account, or to the named ones (always allowed); exit 3 if some could not "
             "be notified", True)
    sp.add_argument("--since", metavar="TIME", help="start of the window (e.g. 2026-01-31T00:00Z or 7d): "
                    "accounts last seen since then and created before its end")
    sp.add_argument("--until", metavar="TIME", help="end of the window (default: now)")
    sp.add_argument("--all", action="store_true", help="every account with its erasure not begun: active, "
                    "disabled and cancelled alike")
    sp.add_argument("--user", action="append", metavar="NAME", help="notify this account (repeatable) "
                    "instead of those active in the window")
    sp.add_argument("--message-file", required=True, metavar="FILE", help="the plain-text message body")
    sp.add_argument("--subject", default="Security notice about your Coffer account")
    sp = add(ns, "news", cmd_notify_news, "news to the active accounts that opted in, and no one else; exit 3 "
             "if some could not be notified", True)
    sp.add_argument("--message-file", required=True, metavar="FILE", help="the plain-text message body")
    sp.add_argument("--subject", default="News from Coffer")

    sp = add(sub, "maintenance", cmd_maintenance, "the periodic job (for cron): erase accounts whose grace "
             "period is over, resume interrupted erasures, apply version, trash and record retention", True)
    sp.add_argument("--no-retention", action="store_true", help="skip version and trash retention")
