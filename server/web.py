"""The web pages: a browser's own door to its account, on the WebDAV port.

Who gets a page (`wants`): a request under PREFIX (`/.web/`) that carries no
WebDAV credentials (a request with an `Authorization` header is WebDAV's, so
a folder of one's own named `.web` stays reachable), and a browser's GET of
any other path: a browser User-Agent, `Accept: text/html`, no credentials
and none of the headers only WebDAV clients send. That one is sent to the
same path's page. Windows' WebClient, davfs2, rclone and curl match neither
and get what WebDAV gives them.

Sessions (providers/web_sessions.py): signing in goes through the same
login as every protocol (`open_account(..., protocol="web")`: login guard,
throttle, audit). The cookie holds a random value that only names the
session (HttpOnly, SameSite=Strict, Secure and `__Host-` over TLS); the
database keeps its hash, never a key. The opened filesystem stays in the
memory of the worker process that signed it in. A request that reaches
another worker: a managed account is opened there with the server's key,
as its SSH key logins are; a private account's keys open only with its
password, so the page asks for it again (once per worker process).

An account with TOTP on (providers/totp.py) is asked for a code on a second
form after its password (server/web_security.py): the sign-in waits for it
in the database, named by a cookie of its own, so any worker can take the
code. Codes go through the same guard.

Every POST carries the session's form token (derived from the cookie's
value); the sign-in form carries a random one that must equal a cookie set
with the form (double submit). A POST whose token is missing or wrong, or
whose Origin is another site, changes nothing.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2

from providers import errors
from providers.totp import SecondFactorNeeded
from providers.web_sessions import IDLE_SECONDS, MAX_SECONDS, csrf_of, lookup_of
from . import web_forms
from .web_forms import FormError

log = logging.getLogger(__name__)

PREFIX = "/.web/"
HERE = Path(__file__).resolve().parent
BROWSERS = ("Mozilla/", "Chrome/", "Safari/", "Firefox/")
NOT_BROWSERS = ("WebDAV", "MiniRedir", "davfs", "rclone", "curl", "Microsoft Office", "ms-office", "MSOffice")
DAV_ONLY = ("HTTP_DEPTH", "HTTP_TRANSLATE", "HTTP_IF", "HTTP_LOCK_TOKEN", "HTTP_DESTINATION", "HTTP_OVERWRITE",
            "HTTP_TIMEOUT", "HTTP_AUTHORIZATION")
HEADERS = [("Cache-Control", "no-store"), ("Referrer-Policy", "same-origin"), ("X-Content-Type-Options", "nosniff"),
           ("X-Frame-Options", "DENY"),
           ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; form-action 'self'; "
                                       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")]
LOGIN_CSRF = "coffer_signin"
STATIC = {"coffer.css": "text/css; charset=utf-8", "upload.js": "text/javascript; charset=utf-8"}
PENDING = "coffer_signin_code"          # names a sign-in whose password checked out, waiting for its code

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "web_templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined)


def wants(environ) -> str | None:
    """'page' for a request the web pages answer, 'redirect' for a browser's
    GET of a WebDAV path (sent to its page), None for WebDAV's own."""
    path = environ.get("PATH_INFO", "/")
    if path.startswith(PREFIX) or path == PREFIX[:-1]:
        return None if environ.get("HTTP_AUTHORIZATION") else "page"
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or "text/html" not in environ.get("HTTP_ACCEPT", ""):
        return None
    agent = environ.get("HTTP_USER_AGENT", "")
    if not any(b in agent for b in BROWSERS) or any(n in agent for n in NOT_BROWSERS):
        return None
    if any(h in environ for h in DAV_ONLY):
        return None
    return "redirect"


def page_path(environ) -> str:
    """The request's path as text (WSGI gives the UTF-8 bytes as latin-1)."""
    return environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")


def url(*parts: str) -> str:
    return quote(PREFIX + "/".join(p.strip("/") for p in parts if p.strip("/")), safe="/")


# -- answers --------------------------------------------------------------------

class Answer(Exception):
    """A finished answer, raised from deep in a handler (a redirect, a refusal)."""

    def __init__(self, status: str, body: bytes = b"", headers=()):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, list(headers)


def redirect(to: str, headers=()) -> Answer:
    return Answer("303 See Other", b"", [("Location", to), *headers])


def render(status: str, template: str, headers=(), **values) -> Answer:
    body = _env.get_template(template).render(**values).encode("utf-8")
    return Answer(status, body, [("Content-Type", "text/html; charset=utf-8"), *headers])


def refuse(status: str, title: str, text: str, **values) -> Answer:
    return render(status, "message.html", title=title, text=text, **values)


# What a person reads for each of the core's errors: (status, sentence).
ERRORS = [
    (errors.NotFound, "404 Not Found", "That file or folder does not exist (any more)."),
    (errors.AlreadyExists, "409 Conflict", "Something with that name is already there; pick another name."),
    (errors.NotADirectory, "409 Conflict", "That is a file, not a folder."),
    (errors.IsADirectory, "409 Conflict", "That is a folder, not a file."),
    (errors.DirectoryNotEmpty, "409 Conflict", "That folder is not empty."),
    (errors.PermissionDenied, "403 Forbidden", "You may not change that here (it is read-only for you)."),
    (errors.InvalidPath, "400 Bad Request", "That name cannot be used: avoid `/`, control characters, "
                                            "`.` and `..`, and very long names."),
    (errors.QuotaExceeded, "507 Insufficient Storage", "Your storage space is full: nothing was saved. "
                                                       "Delete files or empty the trash, or ask for more space."),
    (errors.TooLarge, "413 Request Entity Too Large", "That is larger than this server accepts."),
    (errors.Conflict, "409 Conflict", "That cannot be done now: the folder it goes into is missing or it "
                                      "clashes with what is there."),
    (errors.Locked, "423 Locked", "Your files are locked until you sign in again with your password."),
    (errors.StorageUnavailable, "503 Service Unavailable", "The server cannot store or read files at the moment; "
                                                           "try again in a few minutes."),
    (errors.CofferError, "500 Internal Server Error", "The server could not do that; try again, and tell the "
                                                      "administrator if it keeps happening."),
]


def core_error(e: errors.CofferError, back: str) -> Answer:
    for kind, status, text in ERRORS:
        if isinstance(e, kind):
            if kind is errors.CofferError or kind is errors.IntegrityError:
                log.warning("web request failed: %s", type(e).__name__)
            return refuse(status, "That did not work", text, back=back)
    raise AssertionError("unreachable")


# -- the worker's open filesystems --------------------------------------------------

@dataclass
class Opened:
    vfs: object
    used: float


class OpenAccounts:
    """The filesystems this worker opened, by session (its cookie's hash).
    Never written anywhere: a private account's keys live only here."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[str, Opened] = {}

    def get(self, lookup: str):
        with self._lock:
            found = self._open.get(lookup)
            if found is not None:
                found.used = time.monotonic()
                return found.vfs
        return None

    def put(self, lookup: str, vfs) -> None:
        with self._lock:
            old = self._open.pop(lookup, None)
            self._open[lookup] = Opened(vfs, time.monotonic())
        if old is not None:
            _close(old.vfs)

    def drop(self, lookup: str) -> None:
        old = self.take(lookup)
        if old is not None:
            _close(old)

    def take(self, lookup: str):
        """Remove and return a filesystem without closing it (or None)."""
        with self._lock:
            old = self._open.pop(lookup, None)
        return old.vfs if old is not None else None

    def lookups(self) -> list[str]:
        with self._lock:
            return list(self._open)

    def sweep(self, everything: bool = False, live=None) -> None:
        """Close what was idle for IDLE_SECONDS, whose session is not among
        `live` (when given), or everything."""
        limit = time.monotonic() - IDLE_SECONDS
        with self._lock:
            gone = [k for k, o in self._open.items()
                    if everything or o.used < limit or (live is not None and k not in live)]
            closing = [self._open.pop(k).vfs for k in gone]
        for vfs in closing:
            _close(vfs)


def _close(vfs) -> None:
    try:
        vfs.close()
    except Exception:              # closing must never fail a request
        log.exception("closing a web session's filesystem failed")


# -- the application ------------------------------------------------------------

@dataclass
class Visit:
    """One signed-in request: the account's filesystem and the form token."""
    vfs: object
    csrf: str
    lookup: str
    token: str


class WebPages:
    def __init__(self, storage, tls: bool):
        self.st = storage
        self.tls = tls
        self.cookie_name = "__Host-coffer_web" if tls else "coffer_web"
        self.opened = OpenAccounts()
        from . import web_account, web_connect, web_files, web_past, web_profile, web_security, web_shares
        self.routes = {"files": web_files.files, "versions": web_files.versions, "past": web_past.past,
                       "trash": web_files.trash, "shares": web_shares.shares,
                       "profile": web_profile.profile, "account": web_account.account,
                       "connect": web_connect.connect, "security": web_security.security}

    def maintain(self) -> None:
        """Every minute: close the filesystems of sessions that ended (signed
        out on another worker, idle, too old, password changed) or went
        idle here, and delete ended sessions' rows."""
        try:
            self.opened.sweep(live=self.st.web_sessions.live(self.opened.lookups()))
            self.st.web_sessions.purge_expired()
        except Exception:
            log.exception("closing ended web sessions failed")
            self.opened.sweep()

    def close(self) -> None:
        self.opened.sweep(everything=True)

    def __call__(self, environ, start_response, kind: str = "page"):
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if kind == "redirect":
                raise redirect(url("files", page_path(environ)))
            answer = self._route(environ, method)
        except Answer as a:
            answer = a
        except FormError as e:
            answer = refuse("400 Bad Request", "That did not work", str(e), back=url("files"))
        except Exception:
            log.exception("a web page failed")
            answer = refuse("500 Internal Server Error", "Something went wrong",
                            "The server could not show this page. Try again; if it keeps happening, "
                            "tell the administrator.", back=url("files"))
        if isinstance(answer, tuple):        # a download: (status, headers, iterable body)
            status, headers, body = answer
            start_response(status, [*headers, *HEADERS])
            if method == "HEAD":
                body.close()
                return []
            return body
        headers = [h for h in answer.headers]
        if not any(k == "Content-Type" for k, _ in headers):
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        headers += [("Content-Length", str(len(answer.body))), *HEADERS]
        start_response(answer.status, headers)
        return [] if method == "HEAD" else [answer.body]

    def _route(self, environ, method):
        path = page_path(environ)
        rest = path[len(PREFIX):] if path.startswith(PREFIX) else ""
        section, _, sub = rest.partition("/")
        if section == "" and method in ("GET", "HEAD"):
            raise redirect(url("files") + "/")
        if section == "static" and method in ("GET", "HEAD") and sub in STATIC:
            body = (HERE / "web_static" / sub).read_bytes()
            return Answer("200 OK", body, [("Content-Type", STATIC[sub])])
        if section == "login" and sub == "reinstate":
            from .web_account import reinstate
            return reinstate(self, environ, method)
        if section == "login":
            return self.login(environ, method)
        if section == "logout" and method == "POST":
            return self.logout(environ)
        handler = self.routes.get(section)
        if handler is None:
            raise refuse("404 Not Found", "No such page", "There is no page at this address.", back=url("files"))
        visit = self.visit(environ, method, path)
        return handler(self, visit, environ, method, "/" + sub)

    # -- sessions ------------------------------------------------------------------
    def _cookie(self, value: str, max_age: int) -> tuple[str, str]:
        secure = "; Secure" if self.tls else ""
        return ("Set-Cookie", f"{self.cookie_name}={value}; Path=/; Max-Age={max_age}; HttpOnly; "
                              f"SameSite=Strict{secure}")

    def _signin_cookie(self, value: str, max_age: int, name: str = LOGIN_CSRF) -> tuple[str, str]:
        secure = "; Secure" if self.tls else ""
        return ("Set-Cookie", f"{name}={value}; Path={PREFIX}login; Max-Age={max_age}; HttpOnly; "
                              f"SameSite=Strict{secure}")

    def check_origin(self, environ) -> None:
        """A POST from a page of another site changes nothing (with the
        form token, a second fence: browsers send Origin on every POST)."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return
        host = environ.get("HTTP_HOST", "")
        if origin.split("://", 1)[-1].rstrip("/").lower() != host.lower():
            raise refuse("403 Forbidden", "Refused", "This form was sent from another site, so nothing was done.",
                         back=url("files"))

    def visit(self, environ, method: str, path: str) -> Visit:
        """The signed-in account of a request, or the answer that replaces it:
        the sign-in page for a GET, a refusal for anything that would change
        something."""
        token = web_forms.cookie(environ, self.cookie_name)
        session = self.st.web_sessions.find(token)
        if session is None:
            if method in ("GET", "HEAD"):
                raise redirect(url("login") + "?next=" + quote(path, safe=""))
            raise refuse("403 Forbidden", "Signed out", "You are not signed in (or your session ended), so "
                         "nothing was changed. Sign in and try again.", back=url("login"))
        vfs = self.opened.get(session.lookup)
        if vfs is None:
            if session.mode != "managed":
                if method in ("GET", "HEAD"):
                    raise redirect(url("login") + "?again=1&next=" + quote(path, safe=""))
                raise refuse("403 Forbidden", "Password needed", "Your files are encrypted with your password; "
                             "sign in again so this server can open them, then repeat what you did.",
                             back=url("login") + "?again=1")
            vfs = self.st.open_account(session.name, how="key", protocol="web")
            self.opened.put(session.lookup, vfs)
        return Visit(vfs, csrf_of(token), session.lookup, token)

    def posted_form(self, visit: Visit, environ) -> dict[str, str]:
        """A signed-in page's small form, once its origin and token are checked."""
        self.check_origin(environ)
        form = web_forms.small_form(environ)
        self.check_csrf(visit, form.get("csrf"))
        return form

    def check_csrf(self, visit: Visit, given: str | None) -> None:
        if not given or not hmac.compare_digest(given.encode(), visit.csrf.encode()):
            raise refuse("403 Forbidden", "Refused", "This form's security token is missing or out of date, so "
                         "nothing was changed. Reload the page and try again.", back=url("files"))

    def login(self, environ, method):
        q = web_forms.query(environ)
        nxt = q.get("next", "")
        if not nxt.startswith(PREFIX) or nxt.startswith(PREFIX + "login") or "//" in nxt:
            nxt = url("files") + "/"
        if method in ("GET", "HEAD"):
            return self._login_form("200 OK", nxt, again=bool(q.get("again")))
        if method != "POST":
            raise refuse("405 Method Not Allowed", "No such action", "This page only signs in.", back=url("login"))
        self.check_origin(environ)
        form = web_forms.small_form(environ)
        expected = web_forms.cookie(environ, LOGIN_CSRF)
        given = form.get("csrf", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return self._login_form("403 Forbidden", nxt, error="The sign-in form was out of date (or cookies "
                                    "are off for this site). Try again.")
        if form.get("step") == "code":
            from .web_security import second_step
            return second_step(self, environ, form, nxt)
        name, password = form.get("name", "").strip(), form.get("password", "")
        if not name or not password:
            return self._login_form("400 Bad Request", nxt, name=name, error="Enter your account name and password.")
        try:
            vfs = self.st.open_account(name, password, client_addr=environ.get("REMOTE_ADDR"), protocol="web")
        except SecondFactorNeeded as e:
            session = self.st.web_sessions.find(web_forms.cookie(environ, self.cookie_name))
            if session is None or session.user_id != e.vfs.user.id:
                from .web_security import ask_code
                return ask_code(self, e.vfs, nxt)
            vfs = e.vfs          # a private account asked again on another worker: its code opened this session
        except errors.Throttled as e:
            return self._login_form("429 Too Many Requests", nxt, name=name, error=(
                f"Too many failed sign-ins: wait {e.retry_after} seconds, then try again."))
        except errors.AuthenticationFailed:
            return self._login_form("401 Unauthorized", nxt, name=name,
                                    error="The account name or password is wrong.")
        except errors.CofferError as e:
            log.warning("web sign-in not possible now: %s", type(e).__name__)
            return self._login_form("503 Service Unavailable", nxt, name=name,
                                    error="Signing in is not possible at the moment; try again shortly.")
        _, headers = self.start_session(vfs, environ)
        raise redirect(nxt, [*headers, self._signin_cookie("", 0), self.pending_cookie("", 0)])

    def start_session(self, vfs, environ):
        """A new session for an account just opened with its password,
        replacing the browser's old one: (cookie value, headers to send)."""
        try:
            old = web_forms.cookie(environ, self.cookie_name)
            if old:
                self.st.web_sessions.end(old)
                kept = self.opened.take(lookup_of(old))
                if kept is not None and kept is not vfs:      # the same one carries on in the new session
                    _close(kept)
            gen = self.st.account_generation(vfs.user.name)
            token = self.st.web_sessions.create(vfs.user.id, gen if gen is not None else -1)
        except BaseException:
            _close(vfs)
            raise
        self.opened.put(lookup_of(token), vfs)
        return token, [self._cookie(token, MAX_SECONDS)]

    @staticmethod
    def csrf_for(token: str) -> str:
        return csrf_of(token)

    def pending_cookie(self, value: str, max_age: int) -> tuple[str, str]:
        return self._signin_cookie(value, max_age, PENDING)

    def _login_form(self, status, nxt, name="", error=None, again=False, headers=()):
        value = secrets.token_urlsafe(24)
        return render(status, "login.html", [self._signin_cookie(value, 3600), *headers], csrf=value, next=nxt,
                      name=name, error=error, again=again, signed_in=False)

    def logout(self, environ):
        self.check_origin(environ)
        token = web_forms.cookie(environ, self.cookie_name)
        session = self.st.web_sessions.find(token)
        form = web_forms.small_form(environ)
        if session is None:
            raise redirect(url("login"), [self._cookie("", 0)])
        if not hmac.compare_digest(form.get("csrf", "").encode(), csrf_of(token).encode()):
            raise refuse("403 Forbidden", "Refused", "This form's security token is missing or out of date, so "
                         "you are still signed in. Reload the page and try again.", back=url("files"))
        self.st.web_sessions.end(token)
        self.opened.drop(session.lookup)
        raise redirect(url("login"), [self._cookie("", 0)])
