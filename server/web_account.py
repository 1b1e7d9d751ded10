"""My account: the plan and the space used (old versions and trash apart),
changing plan, downloading an export, cancelling and reinstating, asking
for erasure and withdrawing it. The changes are providers/lifecycle.py's,
made as the account's holder; those that end the account ask for its
password again, under the same login guard as every sign-in.

A cancelled account cannot sign in (on any door); its holder reinstates it
at /.web/login/reinstate, which checks the password like a sign-in does and
then signs in."""
from __future__ import annotations

import hmac
import logging
import queue
import secrets
import threading
import time

from providers import errors, export, lifecycle
from providers.accounts import BadRequest
from . import web_forms
from .web import LOGIN_CSRF, core_error, redirect, refuse, render, url
from .web_files import human_size

log = logging.getLogger(__name__)

NOTES = {"plan": "Your plan is changed.", "reinstated": "Your account is active again; nothing was removed.",
         "erase": "Your erasure is asked for: see its date below.",
         "withdrawn": "Your erasure request is withdrawn: your account stays."}


def _day(us: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(us / 1e6)) if us else ""


def account(web, visit, environ, method, path):
    here = url("account") + "/"
    if path == "/export" and method in ("GET", "HEAD"):
        return _export(web, visit)
    if path != "/":
        raise refuse("404 Not Found", "No such page", "There is no page at this address.", back=here)
    if method == "POST":
        return _post(web, visit, environ, here)
    return _page(web, visit, "200 OK", note=NOTES.get(web_forms.query(environ).get("done", ""), ""))


def _page(web, visit, status, note="", error=None):
    st = web.st
    user = st.accounts.get(visit.vfs.user.name)
    limit = st.accounts.quota_limit(user)
    used, parts = st.accounts.usage(user.id), st.accounts.usage_parts(user.id)
    plans = [{"name": n, "size": human_size(s) if s else "no limit", "current": n == user.plan}
             for n, s in st.cfg.accounts.plans.items()]
    asked = user.settings.get("erasure_request")
    return render(status, "account.html", title="My account", signed_in=True, csrf=visit.csrf, user=user,
                  used=human_size(used), limit=human_size(limit) if limit else None,
                  files=human_size(max(0, used - parts["old_versions"] - parts["trash"])),
                  old_versions=human_size(parts["old_versions"]), trash=human_size(parts["trash"]),
                  plans=plans, grace=st.cfg.accounts.cancel_grace_days,
                  erasure_asked=_day(asked["requested_us"]) if asked else None,
                  erasure_due=_day(asked["due_us"]) if asked else None,
                  note=note, error=error, action=url("account") + "/", export=url("account", "export"))


def _post(web, visit, environ, here):
    form = web.posted_form(visit, environ)
    name = visit.vfs.user.name
    action = form.get("action")
    try:
        if action == "plan":
            return _change_plan(web, visit, form.get("plan", ""), here)
        if action in ("cancel", "erase"):
            lifecycle.confirm_holder(web.st, name, form.get("password", ""), environ.get("REMOTE_ADDR"))
            if action == "erase":
                lifecycle.request_erasure(web.st, name, actor="user")
                raise redirect(here + "?done=erase")
            return _cancel(web, visit, name)
        if action == "withdraw":
            lifecycle.withdraw_erasure(web.st, name, actor="user")
            raise redirect(here + "?done=withdrawn")
    except errors.Throttled as e:
        return _page(web, visit, "429 Too Many Requests",
                     error=f"Too many wrong passwords: wait {e.retry_after} seconds, then try again.")
    except errors.AuthenticationFailed:
        return _page(web, visit, "403 Forbidden", error="The password is wrong; nothing was changed.")
    except errors.Conflict as e:
        return _page(web, visit, "409 Conflict", error=f"Nothing was changed: {e}.")
    except errors.CofferError as e:
        raise core_error(e, here)
    raise refuse("400 Bad Request", "That did not work", "This page does not know that action.", back=here)


def _change_plan(web, visit, plan, here):
    try:
        lifecycle.change_plan(web.st, visit.vfs.user.name, plan, by="web")
    except lifecycle.PlanTooSmall as e:
        return _page(web, visit, "409 Conflict", error=(
            f"The {plan} plan holds {human_size(e.size)}, but your files take {human_size(e.used)}: nothing "
            "was changed. Delete files, old versions or trash first (or choose a larger plan)."))
    except BadRequest:
        return _page(web, visit, "400 Bad Request", error="Choose one of the plans listed; nothing was changed.")
    raise redirect(here + "?done=plan")


def _cancel(web, visit, name):
    """Cancel: the account's sessions end (its credentials change), so the
    answer is a page of its own, with the date and the way back."""
    user = lifecycle.cancel(web.st, name, actor="user")
    web.st.web_sessions.end(visit.token)
    web.opened.drop(visit.lookup)
    return render("200 OK", "cancelled.html", [web._cookie("", 0)], title="Account cancelled",
                  signed_in=False, csrf="", due=_day(user.erase_after_us), grace=web.st.cfg.accounts.cancel_grace_days,
                  reinstate=url("login", "reinstate"))


# -- reinstating a cancelled account -----------------------------------------------------------------

def reinstate(web, environ, method):
    """The page where a cancelled account's holder signs in to reinstate it.
    Its form is guarded like the sign-in form (double submit of LOGIN_CSRF,
    whose cookie's path covers this page)."""
    if method in ("GET", "HEAD"):
        return _reinstate_form(web, "200 OK")
    if method != "POST":
        raise refuse("405 Method Not Allowed", "No such action", "This page only reinstates an account.",
                     back=url("login"))
    web.check_origin(environ)
    form = web_forms.small_form(environ)
    expected, given = web_forms.cookie(environ, LOGIN_CSRF), form.get("csrf", "")
    name, password = form.get("name", "").strip(), form.get("password", "")

    def again(status, error):
        return _reinstate_form(web, status, name, error)

    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return again("403 Forbidden", "The form was out of date (or cookies are off for this site). Try again.")
    addr = environ.get("REMOTE_ADDR")
    try:
        lifecycle.confirm_holder(web.st, name, password, addr, status="cancelled")
        lifecycle.reinstate(web.st, name, actor="user")
        vfs = web.st.open_account(name, password, client_addr=addr, protocol="web")
    except errors.Throttled as e:
        return again("429 Too Many Requests", f"Too many failed attempts: wait {e.retry_after} seconds, then "
                     "try again.")
    except errors.AuthenticationFailed:
        return again("401 Unauthorized", "The account name or password is wrong, or the account is not "
                     "cancelled (then sign in as usual).")
    except errors.Conflict:
        return again("409 Conflict", "The grace period of this account is over: it can no longer be reinstated.")
    _, headers = web.start_session(vfs, environ)
    raise redirect(url("account") + "/?done=reinstated", [*headers, web._signin_cookie("", 0)])


def _reinstate_form(web, status, name="", error=None):
    value = secrets.token_urlsafe(24)
    return render(status, "reinstate.html", [web._signin_cookie(value, 3600)], title="Reinstate your account",
                  csrf=value, name=name, error=error, signed_in=False, action=url("login", "reinstate"))


# -- the export, streamed --------------------------------------------------------------------------

class _Stopped(Exception):
    """The browser went away: the export's writer stops."""


_END, _FAILED = object(), object()


class ExportStream:
    """The export tar (providers/export.py, with old versions and the trash),
    written by a thread while the response is sent: a few blocks at a time
    wait in a small queue, so it is never whole in memory or on disk, and
    the writer stops when the response is closed (sent, cut off, a HEAD)."""

    QUEUED = 16
    KEEP_ALIVE = 60                      # seconds between two signs of life to the session

    def __init__(self, st, vfs, keep_alive=None):
        self._q: queue.Queue = queue.Queue(self.QUEUED)
        self._stop = threading.Event()
        self._keep_alive, self._alive_at = keep_alive, time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(st, vfs), name="web-export", daemon=True)
        self._thread.start()

    def _run(self, st, vfs):
        try:
            export.export(st, vfs, self, with_versions=True, actor="user")
            self._put(_END)
        except _Stopped:          # the browser went away: nothing is left to tell
            pass
        except Exception:
            log.exception("a web export failed")
            try:
                self._put(_FAILED)
            except _Stopped:      # gone too: the log line above says what failed
                pass

    def write(self, data) -> int:
        self._put(bytes(data))
        if self._keep_alive and time.monotonic() - self._alive_at > self.KEEP_ALIVE:
            self._alive_at = time.monotonic()
            self._keep_alive()           # a long export is a session in use: not closed as idle
        return len(data)

    def _put(self, item) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped()
            try:
                self._q.put(item, timeout=1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            if item is _FAILED:     # cut the response short: the browser shows a failed download
                raise OSError("the export could not be completed")
            yield item

    def close(self) -> None:
        self._stop.set()


def _export(web, visit):
    name = visit.vfs.user.name
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    return ("200 OK", [("Content-Type", "application/x-tar"),
                       ("Content-Disposition", f'attachment; filename="coffer-export-{name}-{stamp}.tar"')],
            ExportStream(web.st, visit.vfs, lambda: (web.st.web_sessions.find(visit.token),
                                                      web.opened.get(visit.lookup))))
