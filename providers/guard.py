"""The mass-change guard: ransomware encrypting every file a backup client
or a mapped drive reaches, or a sync gone wrong, changes an unusual share of
an account's files in a short time. Versions and the trash keep what was
there, but retention would later thin them, and quota pressure would push
out the good old versions first to make room for the new bad ones.

Every overwrite, deletion (a folder counts its contents) and rename of a
file not changed since the window began is counted per account (the owner of the folder it happens
in), across every process and node (a row in the database, written in the
transaction that makes the change). When, within `[retention]
guard_window_minutes`, the count reaches `guard_min_files` and
`guard_share` of the account's files, the account is put on hold for
`guard_hold_days`: nothing of it is removed meanwhile, not by retention
(versions, trash) nor by a purge, whoever asks; an audit event
`mass_change_held` is recorded and the account holder and the operator
(`[mail] operator`) are e-mailed. `coffer-admin user hold NAME --release`
ends a hold that was a false alarm.
"""
from __future__ import annotations

import logging
import threading

from . import meta
from .errors import PermissionDenied
from .meta import guard as q
from .meta import users as uq

log = logging.getLogger(__name__)

MINUTE = 60 * 1_000_000
DAY = 24 * 60 * MINUTE


def note(fs, c, owner_id: int, count: int = 1, changed_us: int | None = None) -> None:
    """Count `count` changes of existing files of `owner_id`'s account, in
    the caller's write transaction; start a hold when they pass the bar.
    `changed_us`: when the file last changed; one changed since the window
    began is not counted again (a file saved a hundred times is one file)."""
    if count <= 0:
        return
    cfg = fs.cfg.retention
    now = meta.now_us()
    r = q.row(c, owner_id)
    if r is None or now - r["window_start_us"] > cfg.guard_window_minutes * MINUTE:
        changes, start, checked = count, now, 0
    elif changed_us is not None and changed_us >= r["window_start_us"]:
        return
    else:
        changes, start, checked = r["changes"] + count, r["window_start_us"], r["checked_at"]
    values = {"window_start_us": start, "changes": changes}
    held = r is not None and (r["hold_until_us"] or 0) > now
    # the account's files are counted only past the minimum, and again every fifth of it
    if not held and changes >= cfg.guard_min_files and changes >= checked + max(1, cfg.guard_min_files // 5):
        values["checked_at"] = changes
        files = q.live_files(c, owner_id)
        if changes >= cfg.guard_share * max(files, 1):
            values.update(hold_until_us=now + cfg.guard_hold_days * DAY, hold_from_us=now)
            detail = {"changes": changes, "files": files, "window_minutes": cfg.guard_window_minutes,
                      "hold_days": cfg.guard_hold_days, "by": fs.user.id,
                      "app_password": getattr(fs, "app_password", None)}
            uq.audit(c, "mass_change_held", user_id=owner_id, actor="system", detail=detail)
            log.warning("account #%d: %d of its %d files changed within %d minutes: nothing of it is removed "
                        "for %d days", owner_id, changes, files, cfg.guard_window_minutes, cfg.guard_hold_days)
            fs.alerts.append((owner_id, detail))
    q.put(c, owner_id, **values)


def holding(c, owner_id: int, now: int | None = None) -> bool:
    """Is the account on hold (nothing of it may be removed)?"""
    until = q.hold_until(c, owner_id)
    return until is not None and until > (now or meta.now_us())


def refuse_purge(c, owner_id: int, what: str) -> None:
    """Purging is paused while the account is on hold."""
    until = q.hold_until(c, owner_id)
    if until is not None and until > meta.now_us():
        raise PermissionDenied(
            f"{what}: nothing can be purged until {_when(until)}: many files of this account were changed at "
            "once (ransomware?) and everything is kept; the administrator can end the hold with "
            "`coffer-admin user hold NAME --release`")


def state(c, owner_id: int) -> dict:
    r = q.row(c, owner_id)
    now = meta.now_us()
    return {"held": bool(r and (r["hold_until_us"] or 0) > now),
            "hold_from": _when(r["hold_from_us"]) if r and r["hold_from_us"] else None,
            "hold_until": _when(r["hold_until_us"]) if r and r["hold_until_us"] else None,
            "changes_in_window": r["changes"] if r else 0}


def release(db, owner_id: int) -> bool:
    with db.write() as c:
        held = holding(c, owner_id)
        q.put(c, owner_id, hold_until_us=None, hold_from_us=None, changes=0, checked_at=0,
              window_start_us=meta.now_us())
        if held:
            uq.audit(c, "mass_change_released", user_id=owner_id, actor="admin", detail={})
    return held


def send_alerts(storage, alerts: list) -> None:
    """E-mail the account holder and the operator about new holds (after
    the transaction that started them; in the background, so the request
    that tipped the count is not kept waiting)."""
    def run():
        from .mail import Mailer, MailError
        try:
            mailer = Mailer(storage.cfg)
        except MailError as e:
            log.warning("a mass change was held, and nobody could be told: %s", e)
            return
        messages = []
        for owner_id, d in alerts:
            with storage.db.read() as c:
                user = uq.user_by_id(c, owner_id)
            body = (f"Between {_when(meta.now_us() - d['window_minutes'] * MINUTE)} and now, {d['changes']} files "
                    f"of the account {user['name']} (of {d['files']}) were overwritten, deleted or renamed.\n\n"
                    "That is what ransomware or a sync gone wrong does. Nothing of the account will be removed "
                    f"for {d['hold_days']} days: every earlier version and every deleted file stays under "
                    "/.coffer/ to be restored, whatever the retention settings.\n\n"
                    "If you did not do this: change your password, revoke the app password of the device "
                    "concerned, and restore from /.coffer/snapshots/ (a view of the whole tree at a chosen "
                    "time). If you did: nothing needs doing; the hold ends by itself.\n")
            subject = f"Coffer: many files of {user['name']} changed at once; everything is kept"
            messages += [(to, subject, body) for to in {user["email"], storage.cfg.mail.operator} if to]
        for (to, _, _), err in zip(messages, mailer.send_each(messages)):
            if err:
                log.warning("the mass-change alert could not be sent: %s", err)
    threading.Thread(target=run, name="mass-change-alert", daemon=True).start()


def _when(us: int) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(us / 1e6))
