"""The Security page: two-step sign-in (TOTP, providers/totp.py), app
passwords (providers/app_passwords.py), the account's web sessions and
session records, and what administrators did with the account
(providers/access.py) — and the second step of a sign-in with TOTP on.

Turning TOTP on and off asks for the password again (and, to turn it off,
a code): a session left open on a shared computer cannot lock its owner
out. Turning it on, and revoking an app password, move the account's
credential generation on, which ends every session; this one carries on
in a new session with the filesystem it already has open."""
from __future__ import annotations

import secrets
import time

import segno

from providers import errors
from providers.app_passwords import SCOPES, BadAppPassword
from providers.totp import SecondFactorError, SecondFactorNeeded
from providers.web_sessions import SIGNIN_SECONDS, lookup_of
from . import web_forms
from .web import PENDING, core_error, redirect, refuse, render, url
from .web_files import human_size

RECORDS_SHOWN = 50
RECORDS_DAYS = 30
NOTES = {"session-ended": "That session is ended: its browser is signed out.",
         "app-revoked": "The app password is revoked: devices using it are refused from now on.",
         "totp-off": "Two-step sign-in is off: your password alone signs you in.",
         "totp-started": "Scan the code with your authenticator app, then confirm below."}


def _when(us) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(us / 1e6)) if us else "never"


# -- the second step of a sign-in ---------------------------------------------------------

def ask_code(web, vfs, nxt):
    """The password was right and the account has TOTP on: the sign-in
    waits for its code in the database (any worker may take it), and this
    worker lets the opened account go."""
    try:
        gen = web.st.account_generation(vfs.user.name)
        token = web.st.web_sessions.wait_for_code(vfs.user.id, gen if gen is not None else -1, vfs.keys.user_key)
        name = vfs.user.name
    finally:
        vfs.close()
    return _code_form(web, nxt, name, [web.pending_cookie(token, SIGNIN_SECONDS)])


def _code_form(web, nxt, name, headers=(), error=None, status="200 OK"):
    value = secrets.token_urlsafe(24)
    return render(status, "login_code.html", [web._signin_cookie(value, 3600), *headers], csrf=value, next=nxt,
                  name=name, error=error, signed_in=False)


def second_step(web, environ, form, nxt):
    token = web_forms.cookie(environ, PENDING)
    name, code = form.get("name", ""), form.get("code", "").strip()
    if not code:
        return _code_form(web, nxt, name, error="Enter the code your authenticator app shows.",
                          status="400 Bad Request")
    try:
        vfs = web.st.open_account(name, token, how="signin", code=code, client_addr=environ.get("REMOTE_ADDR"),
                                  protocol="web")
    except errors.NotFound:
        return web._login_form("401 Unauthorized", nxt, name=name, headers=[web.pending_cookie("", 0)], error=(
            "Your sign-in waited too long for its code: enter your password again."))
    except errors.Throttled as e:
        return _code_form(web, nxt, name, error=f"Too many wrong codes: wait {e.retry_after} seconds, then try "
                          "again.", status="429 Too Many Requests")
    except errors.AuthenticationFailed:
        return _code_form(web, nxt, name, error="That code is wrong or was already used. Type the code the app "
                          "shows now (each code works once), or one of your recovery codes.",
                          status="401 Unauthorized")
    _, headers = web.start_session(vfs, environ)
    raise redirect(nxt, [*headers, web._signin_cookie("", 0), web.pending_cookie("", 0)])


# -- the page -------------------------------------------------------------------------------

def security(web, visit, environ, method, path):
    here = url("security") + "/"
    if path != "/":
        raise refuse("404 Not Found", "No such page", "There is no page at this address.", back=here)
    if method == "POST":
        return _post(web, visit, environ, here)
    return _page(web, visit, "200 OK", note=NOTES.get(web_forms.query(environ).get("done", ""), ""))


def _page(web, visit, status, note="", error=None, headers=(), **shown):
    st, user = web.st, visit.vfs.user
    totp = st.totp.state(user.id)
    secret = st.totp.pending_secret(user.id, visit.vfs.keys.user_key) if totp["pending"] else None
    qr = segno.make(st.totp.uri(user.name, secret), error="m").svg_data_uri(scale=4) if secret else None
    apps = [{"id": a.id, "label": a.label, "scope": a.scope, "created": _when(a.created_us),
             "last_used": _when(a.last_used_us)} for a in visit.vfs.app_password_list()]
    live = [{"id": s["id"], "created": _when(s["created_us"]), "used": _when(s["used_us"]),
             "this": s["lookup"] == visit.lookup} for s in st.web_sessions.of_user(user.id)]
    since = int(time.time() - RECORDS_DAYS * 86400) * 1_000_000
    records = [{"protocol": r["protocol"], "address": r["client_addr"] or "not kept",
                "started": _when(r["started_us"]),
                "ended": _when(r["ended_us"]) if r["ended_us"] else "still open",
                "bytes_in": human_size(r["bytes_in"]), "bytes_out": human_size(r["bytes_out"])}
               for r in reversed(st.sessions.list(user.id, since_us=since)[-RECORDS_SHOWN:])]
    access = [{"at": _when(a["at_us"]), "what": a["what"]} for a in reversed(visit.vfs.administrator_access())]
    return render(status, "security.html", headers, title="Security", signed_in=True, csrf=visit.csrf,
                  action=url("security") + "/", user=user, totp=totp, totp_since=_when(totp["since_us"]),
                  secret=secret, qr=qr, apps=apps, scopes=SCOPES, live=live, records=records,
                  records_days=RECORDS_DAYS, access=access, note=note, error=error,
                  recovery_codes=shown.get("recovery_codes"), new_app=shown.get("new_app"))


def _post(web, visit, environ, here):
    web.check_origin(environ)
    form = web_forms.small_form(environ)
    web.check_csrf(visit, form.get("csrf"))
    action = form.get("action")
    handler = ACTIONS.get(action)
    if handler is None:
        raise refuse("400 Bad Request", "That did not work", "This page does not know that action.", back=here)
    try:
        return handler(web, visit, environ, form, here)
    except (SecondFactorError, BadAppPassword) as e:
        return _page(web, visit, "400 Bad Request", error=f"Nothing was changed: {e}.")
    except errors.AlreadyExists as e:
        return _page(web, visit, "409 Conflict", error=f"Nothing was changed: {e}.")
    except errors.NotFound:
        return _page(web, visit, "404 Not Found", error="Nothing was changed: there is no such session or app "
                     "password of your account (any more).")
    except errors.CofferError as e:
        raise core_error(e, here)


def _password_checked(web, visit, environ, form, code=None):
    """Check the password (and the code, when TOTP is on) like a sign-in;
    None when right, else the page saying what was wrong."""
    try:
        checked = web.st.open_account(visit.vfs.user.name, form.get("password", ""), protocol="web", code=code,
                                      client_addr=environ.get("REMOTE_ADDR"))
    except SecondFactorNeeded as e:
        checked = e.vfs
    except errors.Throttled as e:
        return _page(web, visit, "429 Too Many Requests",
                     error=f"Too many wrong passwords or codes: wait {e.retry_after} seconds, then try again.")
    except errors.AuthenticationFailed:
        return _page(web, visit, "403 Forbidden", error="The password" + (" or the code" if code else "") +
                     " is wrong (or the code was already used); nothing was changed.")
    checked.close()
    return None


def _renewed(web, visit, environ):
    """This session, carried on after the account's credential generation
    moved on (which ended it): (visit, cookie headers)."""
    token, headers = web.start_session(visit.vfs, environ)
    return type(visit)(visit.vfs, web.csrf_for(token), lookup_of(token), token), headers


def _totp_begin(web, visit, environ, form, here):
    web.st.totp.begin(visit.vfs.user.id, visit.vfs.keys.user_key)
    raise redirect(here + "?done=totp-started#totp")


def _totp_confirm(web, visit, environ, form, here):
    wrong = _password_checked(web, visit, environ, form)
    if wrong is not None:
        return wrong
    codes = web.st.totp.confirm(visit.vfs.user.id, visit.vfs.keys.user_key, form.get("code", ""))
    visit, headers = _renewed(web, visit, environ)
    return _page(web, visit, "200 OK", headers=headers, recovery_codes=codes,
                 note="Two-step sign-in is on. WebDAV and SFTP clients now need an app password (or an SSH key) "
                      "instead of your password.")


def _totp_disable(web, visit, environ, form, here):
    code = form.get("code", "").strip()
    if not code:
        return _page(web, visit, "400 Bad Request", error="Enter a code from your authenticator app (or a "
                     "recovery code) with your password; nothing was changed.")
    wrong = _password_checked(web, visit, environ, form, code=code)
    if wrong is not None:
        return wrong
    web.st.totp.turn_off(visit.vfs.user.id)
    raise redirect(here + "?done=totp-off")


def _app_create(web, visit, environ, form, here):
    app, secret = visit.vfs.app_password_create(form.get("label", ""), form.get("scope", "full"))
    return _page(web, visit, "200 OK", new_app={"label": app.label, "scope": app.scope, "secret": secret})


def _app_revoke(web, visit, environ, form, here):
    mine = {str(a.id): a for a in visit.vfs.app_password_list()}
    if form.get("id", "") not in mine:
        raise errors.NotFound("no such app password")
    visit.vfs.app_password_revoke(mine[form["id"]].label)
    visit, headers = _renewed(web, visit, environ)
    raise redirect(here + "?done=app-revoked", headers)


def _session_end(web, visit, environ, form, here):
    ref = form.get("id", "")
    if not ref.isdigit() or not web.st.web_sessions.end_of_user(visit.vfs.user.id, int(ref)):
        raise errors.NotFound("no such session")
    raise redirect(here + "?done=session-ended")


ACTIONS = {"totp-begin": _totp_begin, "totp-confirm": _totp_confirm, "totp-disable": _totp_disable,
           "app-create": _app_create, "app-revoke": _app_revoke, "session-end": _session_end}
