"""My Profile: the account's name, e-mail, plan and space used; its news
consent; changing its password (the current one asked, through the same
login guard as every sign-in). The changes are providers/lifecycle.py's
and providers/accounts.py's, made as the account's holder."""
from __future__ import annotations

import time

from providers import errors, lifecycle
from providers.accounts import BadRequest
from providers.totp import SecondFactorNeeded
from . import web_forms
from .web import core_error, redirect, refuse, render, url
from .web_files import human_size

NOTES = {"saved": "Your profile is saved.", "news-on": "You will receive news by email.",
         "news-off": "You will receive no news by email (security notices are still sent)."}


def profile(web, visit, environ, method, path):
    here = url("profile") + "/"
    if path != "/":
        raise refuse("404 Not Found", "No such page", "There is no page at this address.", back=here)
    if method == "POST":
        return _post(web, visit, environ, here)
    return _page(web, visit, "200 OK", note=NOTES.get(web_forms.query(environ).get("done", ""), ""))


def _page(web, visit, status, note="", error=None, recovery=None, headers=()):
    name = visit.vfs.user.name
    user = web.st.accounts.get(name)
    quota = visit.vfs.quota()
    changed = (time.strftime("%Y-%m-%d", time.gmtime(user.consent_changed_us / 1e6))
               if user.consent_changed_us else None)
    return render(status, "profile.html", headers, title="My Profile", signed_in=True, csrf=visit.csrf,
                  user=user, plan=user.plan, used=human_size(quota.used),
                  limit=None if quota.limit is None else human_size(quota.limit), consent_changed=changed,
                  note=note, error=error, recovery=recovery, action=url("profile") + "/")


def _post(web, visit, environ, here):
    form = web.posted_form(visit, environ)
    name = visit.vfs.user.name
    action = form.get("action")
    try:
        if action == "profile":
            lifecycle.set_profile(web.st, name, first_name=form.get("first_name", ""),
                                  last_name=form.get("last_name", ""), email=form.get("email", ""), by="web")
            raise redirect(here + "?done=saved")
        if action == "news":
            on = form.get("news") == "on"
            lifecycle.set_profile(web.st, name, consent=on, by="web")
            raise redirect(here + ("?done=news-on" if on else "?done=news-off"))
        if action == "password":
            return _change_password(web, visit, environ, form)
    except BadRequest as e:
        return _page(web, visit, "400 Bad Request", error=f"Not saved: {e}.")
    except errors.CofferError as e:
        raise core_error(e, here)
    raise refuse("400 Bad Request", "That did not work", "This page does not know that action.", back=here)


def _change_password(web, visit, environ, form):
    """Check the current password like a sign-in, change it, and carry on in
    a new session (the change ends every session of the account)."""
    name = visit.vfs.user.name
    current, new, again = form.get("current", ""), form.get("new", ""), form.get("again", "")
    if new != again:
        return _page(web, visit, "400 Bad Request", error="The two new passwords differ; nothing was changed.")
    try:
        checked = web.st.open_account(name, current, client_addr=environ.get("REMOTE_ADDR"), protocol="web")
    except SecondFactorNeeded as e:
        checked = e.vfs                 # this session gave its code at sign-in
    except errors.Throttled as e:
        return _page(web, visit, "429 Too Many Requests",
                     error=f"Too many wrong passwords: wait {e.retry_after} seconds, then try again.")
    except errors.AuthenticationFailed:
        return _page(web, visit, "403 Forbidden", error="The current password is wrong; nothing was changed.")
    try:
        recovery = web.st.accounts.set_password(name, new, old_password=current, actor="user")
    except BaseException:
        checked.close()
        raise
    token, headers = web.start_session(checked, environ)
    visit = type(visit)(checked, web.csrf_for(token), "", token)
    return _page(web, visit, "200 OK", note="Your password is changed. Devices that use it must be given "
                 "the new one.", recovery=recovery, headers=headers)
