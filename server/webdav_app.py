"""The WebDAV application: login, request hygiene and session records around
wsgidav, with locks kept in the database.

Order of work for every request (`CofferWebDAV.__call__`):
  1. refuse what no handler should see: undecodable or climbing paths, a
     Destination on another host, XML bodies with a DTD (entity bombs) or
     over MAX_XML_BODY; answer the one page reached without a login, the
     unsubscribe link of news mail (server/unsubscribe.py: GET, HEAD and
     POST of exactly /.well-known/coffer/unsubscribe), and the web pages
     (server/web.py: paths under /.web/ without WebDAV credentials, and a
     browser's GET of any other path, sent to its page);
  2. log in (Basic over TLS, verified-credential cache), or answer 401;
  3. hand the request to wsgidav with the account's filesystem in
     `environ["coffer.vfs"]`, counting bytes for the session record.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import time
import uuid
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

import defusedxml.ElementTree as safe_xml
from lxml import etree
from wsgidav.dav_error import HTTP_INTERNAL_ERROR, DAVError
from wsgidav.error_printer import ErrorPrinter
from wsgidav.lock_man.lock_manager import LockManager
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from providers import errors, paths
from providers.locks import LockStore
from . import unsubscribe, web
from .auth import CredentialCache, parse_basic
from .sessions import SessionTracker
from .webdav import CofferProvider
from .webdav_errors import dav_error

log = logging.getLogger(__name__)
# wsgidav keeps its records to itself (a NullHandler, no propagation) unless
# its own logging setup runs: the tracebacks of its 500s must reach ours.
logging.getLogger("wsgidav").propagate = True
access = logging.getLogger(__name__ + ".access")     # one line per request


class _AnsweredErrors(logging.Filter):
    """wsgidav logs any error met while copying a PUT body with its
    traceback ("PUT: byte copy failed"), the clean answers among them: a full
    account's 507, a 503 while the database is away. Those were answered and
    nothing was changed, so their record is one line, a warning; a 500 (a
    fault nobody foresaw) stays an error with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DAVError) and exc.value != HTTP_INTERNAL_ERROR:
            record.msg, record.args = "%s: %s %s", (record.getMessage(), exc.value, exc.context_info or "")
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("wsgidav.request_server").addFilter(_AnsweredErrors())

REALM = "Coffer"
MAX_XML_BODY = 1024 * 1024
XML_METHODS = {"PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "REPORT", "SEARCH"}
DAV_METHODS = "OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, PROPFIND, PROPPATCH, LOCK, UNLOCK"
BLOCK_SIZE = 1024 * 1024
SESSION_IDLE_SECONDS = 120           # a connection idle this long is taken as closed (its session record ends)

_current = threading.local()          # the request's login and lock scope, for the lock storage


def _status_response(start_response, status: str, text: str, headers=()):
    body = (text + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]


def _check_url_path(raw: str) -> None:
    """Raise InvalidPath for a WSGI path (latin-1 str of the decoded bytes)
    that the filesystem would refuse (providers.paths: not UTF-8, NUL,
    `.` or `..` components, names or paths too long)."""
    paths.parse(raw.encode("latin-1"))


def _host_port(netloc: str, scheme: str) -> str:
    """`Host` or URL authority without credentials and the scheme's default port."""
    netloc = netloc.rpartition("@")[2].lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return netloc


# -- locks ------------------------------------------------------------------------

class ScopedLockManager(LockManager):
    """wsgidav's lock manager, with its in-flight write markers kept per account."""

    def __init__(self, storage):
        self._writes_by_scope: dict = {}
        super().__init__(storage)

    @property
    def _active_writes(self):
        scope = getattr(_current, "scope_key", None)
        return self._writes_by_scope.setdefault(scope, {})

    @_active_writes.setter
    def _active_writes(self, value):
        pass


class DatabaseLockStorage:
    """wsgidav's lock-storage interface over providers.locks, as the account
    of the request being served sees the locks: its own, and in shared
    folders everyone's there (see providers.locks.PrincipalLocks).

    wsgidav names a lock root by its quoted URL; the store by the path the
    filesystem uses (unquoted, names in NFC, see providers.paths). URLs are
    unquoted on the way in and roots quoted on the way out, in the spelling
    `CofferProvider` gives as every resource's reference URL."""

    def __init__(self, store: LockStore, view_of):
        self.store = store
        self.view_of = view_of            # Login -> PrincipalLocks

    def __repr__(self):
        return "DatabaseLockStorage"

    def current_view(self):
        login = getattr(_current, "login", None)
        if login is None:
            return None
        view = getattr(_current, "scope", None)
        if view is None:
            view = _current.scope = self.view_of(login)
        return view

    @staticmethod
    def _out(lock):
        return None if lock is None else dict(lock, root=quote(lock["root"]))

    def open(self):
        pass

    def close(self):
        pass

    def cleanup(self):
        self.store.purge_expired()

    def clear(self):
        pass

    def get(self, token):
        with _as_dav_errors():
            view = self.current_view()
            return self._out(view.get(token)) if view else None

    def create(self, path, lock):
        with _as_dav_errors():
            view = self.current_view()
            if view is None:
                raise errors.PermissionDenied("locks need a logged-in account")
            lock.update(self._out(view.create(unquote(path), lock)))
        return lock

    def refresh(self, token, *, timeout):
        with _as_dav_errors():
            view = self.current_view()
            lock = view.refresh(token, timeout) if view else None
        if lock is None:
            raise ValueError("no such lock")
        return self._out(lock)

    def delete(self, token):
        with _as_dav_errors():
            view = self.current_view()
            return view.delete(token) if view else False

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        with _as_dav_errors():
            view = self.current_view()
            if view is None:
                return []
            found = view.locks_on(unquote(path), include_root=include_root, include_children=include_children)
        return [lk["token"] for lk in found] if token_only else [self._out(lk) for lk in found]


@contextlib.contextmanager
def _as_dav_errors():
    """The storage core's errors as their HTTP answers (a database that is
    down: 503), not as wsgidav's 500 with a traceback."""
    try:
        yield
    except errors.CofferError as e:
        raise dav_error(e) from None


class _CountingInput:
    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def read(self, *args):
        data = self.stream.read(*args)
        self.count += len(data)
        return data

    def readline(self, *args):
        data = self.stream.readline(*args)
        self.count += len(data)
        return data

    def readlines(self, *args):
        lines = self.stream.readlines(*args)
        self.count += sum(map(len, lines))
        return lines

    def __iter__(self):
        for line in self.stream:
            self.count += len(line)
            yield line


class _Response:
    """Wraps the response body: counts bytes out and ends the request's
    bookkeeping when the server closes it."""

    def __init__(self, body, on_close):
        self.body = body
        self.on_close = on_close
        self.count = 0

    def __iter__(self):
        for chunk in self.body:
            self.count += len(chunk)
            yield chunk

    def close(self):
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.on_close(self.count)


# -- the application ------------------------------------------------------------------

class CofferWebDAV:
    def __init__(self, storage, cfg):
        self.st = storage
        self.cfg = cfg
        self.cache = CredentialCache(storage, cfg.security.credential_cache_seconds)
        self.sessions = SessionTracker(storage, "webdav", idle_seconds=SESSION_IDLE_SECONDS)
        self.lock_store = LockStore(storage.db)
        self.provider = CofferProvider()
        self.web = web.WebPages(storage, tls=bool(cfg.webdav.tls))
        self.dav = WsgiDAVApp({
            "provider_mapping": {"/": self.provider},
            "middleware_stack": [ErrorPrinter, RequestResolver],
            "lock_storage": DatabaseLockStorage(self.lock_store, default_lock_view(self.lock_store)),
            "property_manager": None,
            "http_authenticator": {"domain_controller": None},
            "simple_dc": {"user_mapping": {"*": True}},
            "block_size": BLOCK_SIZE,
            "add_header_MS_Author_Via": True,
            "suppress_version_info": True,
            "verbose": 1,
            "logging": {"enable": False},
            "dir_browser": {"enable": False},
        })
        self.dav.lock_manager = ScopedLockManager(self.dav.lock_manager.storage)
        self.provider.set_lock_manager(self.dav.lock_manager)

    def close(self):
        self.web.close()
        self.sessions.sweep(everything=True)
        self.cache.close_all()

    def maintain(self):
        """Periodic work: expire cached logins, idle sessions and old locks."""
        self.cache.sweep()
        self.sessions.sweep()
        self.web.maintain()
        try:
            self.lock_store.purge_expired()
        except Exception:
            log.exception("purging expired locks failed")

    def __call__(self, environ, start_response):
        """Serve one request and log one line for it when it ends: method,
        status, bytes in and out, time and session record id (never a path or
        a name: logs outlive an erasure)."""
        began = time.monotonic()
        status = ["-"]

        def start(line, headers, exc_info=None):
            status[0] = line.split(" ", 1)[0]
            return start_response(line, headers, exc_info)

        def done(bytes_out):
            if access.isEnabledFor(logging.INFO):
                counted = environ.get("wsgi.input")
                access.info("%s %s in=%d out=%d %.1fms session=%s", environ.get("REQUEST_METHOD", "-"),
                            status[0], getattr(counted, "count", 0), bytes_out,
                            (time.monotonic() - began) * 1000, environ.get("coffer.session", "-"))

        try:
            body = self._serve(environ, start)
        except BaseException:
            done(0)
            raise
        return _Response(body, done)

    def _serve(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        try:
            _check_url_path(environ.get("PATH_INFO", "/"))
        except errors.InvalidPath as e:
            return _status_response(start_response, "400 Bad Request", f"The path is refused: {e}.")
        if environ.get("PATH_INFO") == unsubscribe.PATH and method in unsubscribe.METHODS:
            return unsubscribe.serve(self.st, environ, start_response)     # a link in news mail: no login
        page = web.wants(environ)
        if page:
            return self.web(environ, start_response, page)
        dest = environ.get("HTTP_DESTINATION")
        if dest is not None:
            problem = self._check_destination(environ, dest)
            if problem:
                return _status_response(start_response, "400 Bad Request", problem)

        if method == "OPTIONS" and not environ.get("HTTP_AUTHORIZATION"):
            # Windows asks anonymously first; answer without touching any account.
            return _status_response(start_response, "200 OK", "", [
                ("DAV", "1, 2"), ("MS-Author-Via", "DAV"), ("Allow", DAV_METHODS)])

        addr = environ.get("REMOTE_ADDR")
        try:
            name, password = parse_basic(environ.get("HTTP_AUTHORIZATION"))
            login = self.cache.acquire(name, password, addr, "webdav")
        except errors.AuthenticationFailed as e:
            headers = [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')]
            if isinstance(e, errors.Throttled):
                headers.append(("Retry-After", str(e.retry_after)))
            return _status_response(start_response, "401 Unauthorized", str(e), headers)
        except errors.IntegrityError as e:      # keys damaged, or moved between rows in the database
            log.error("login refused: the account's keys are damaged or were tampered with (%s); "
                      "restore the database from a backup", e)
            return _status_response(start_response, "500 Internal Server Error",
                                    "this account cannot be opened: its keys are damaged; "
                                    "the administrator must restore them", [])
        except errors.CofferError as e:
            log.warning("login not possible now: %s", e if isinstance(e, errors.StorageUnavailable)
                        else type(e).__name__)
            return _status_response(start_response, "503 Service Unavailable",
                                    "login is not possible now; try again shortly", [("Retry-After", "5")])

        if method in XML_METHODS:
            refused = self._guard_xml(environ)
            if refused:
                self.cache.release(login)
                return _status_response(start_response, *refused)

        vfs = login.vfs
        session = self.sessions.start((addr, environ.get("REMOTE_PORT"), vfs.user.id), vfs.user.id, addr)
        counting = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counting
        environ["coffer.session"] = session.sid if session.sid is not None else "-"
        environ["coffer.vfs"] = vfs
        environ["coffer.login"] = login
        environ["wsgidav.auth.user_name"] = vfs.user.name
        environ["wsgidav.auth.realm"] = REALM
        environ["wsgidav.auth.roles"] = ("editor",)
        environ["wsgidav.auth.permissions"] = ()
        _current.login = login
        _current.scope = None
        _current.scope_key = vfs.user.id

        done = [False]

        def finish(bytes_out):
            if done[0]:
                return
            done[0] = True
            _current.login = None
            _current.scope = None
            _current.scope_key = None
            self.sessions.add(session, counting.count, bytes_out)
            self.cache.release(login)

        def start(status, headers, exc_info=None):
            if environ.get("coffer.oc_mtime"):
                headers.append(("X-OC-MTime", "accepted"))
            if environ.get("coffer.created") and status.startswith("204"):
                status = "201 Created"          # a COPY or MOVE to a new destination (see webdav.py)
            return start_response(status, headers, exc_info)

        try:
            body = self.dav(environ, start)
        except BaseException:
            finish(0)
            raise
        return _Response(body, finish)

    def _check_destination(self, environ, dest: str) -> str | None:
        try:
            parts = urlsplit(dest)
        except ValueError:
            return "The Destination header is not a URL."
        if parts.netloc:
            scheme = environ.get("wsgi.url_scheme", "http")
            schemes = {scheme, environ.get("HTTP_X_FORWARDED_PROTO", scheme).lower()}
            if parts.scheme and parts.scheme.lower() not in schemes:
                return "The Destination must use this server's scheme."
            hosts = {_host_port(h, s) for h in (environ.get("HTTP_HOST", ""), environ.get("HTTP_X_FORWARDED_HOST", ""))
                     if h for s in schemes}
            if _host_port(parts.netloc, (parts.scheme or scheme).lower()) not in hosts:
                return "The Destination must be on this server."
        try:
            _check_url_path(unquote_to_bytes(parts.path).decode("latin-1"))
        except errors.InvalidPath as e:
            return f"The Destination path is refused: {e}."
        return None

    def _guard_xml(self, environ):
        """Read a small XML body up front and refuse DTDs (entity expansion)."""
        length = environ.get("CONTENT_LENGTH", "").strip()
        if not length:
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                body = environ["wsgi.input"].read(MAX_XML_BODY + 1)
            else:
                return None
        else:
            try:
                n = int(length)
            except ValueError:
                return ("400 Bad Request", "Content-Length is not a number.")
            if n < 0:
                return ("400 Bad Request", "Content-Length is negative.")
            if n > MAX_XML_BODY:
                return ("413 Request Entity Too Large", f"XML bodies are limited to {MAX_XML_BODY} bytes.")
            body = environ["wsgi.input"].read(n) if n else b""
        if len(body) > MAX_XML_BODY:
            return ("413 Request Entity Too Large", f"XML bodies are limited to {MAX_XML_BODY} bytes.")
        if body.strip():
            try:
                root = parse_xml_body(body)
            except ValueError:
                return ("400 Bad Request", "The XML body is malformed or declares a DTD or entities.")
            if root is not None:
                environ["coffer.xml"] = root      # the PROPFIND fast path does not parse it again
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None


_XML_ENCODING = re.compile(rb'^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*["\']([^"\']*)["\']')
_PLAIN_ENCODINGS = {b"utf-8", b"utf8", b"us-ascii", b"ascii"}


def parse_xml_body(body: bytes):
    """Check a request's XML body: raise ValueError when it is malformed or
    declares a DTD or entities (entity bombs, XXE).

    A body in UTF-8 or ASCII without any "<!" cannot hold a DTD (nor an
    entity declaration): lxml only checks that it is well-formed, and its
    root element is returned for reuse. Anything else goes through
    defusedxml, which refuses a DTD outright; then None is returned."""
    m = _XML_ENCODING.match(body)
    if b"<!" not in body and b"\x00" not in body and (m is None or m.group(1).lower() in _PLAIN_ENCODINGS):
        try:
            root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
        except etree.XMLSyntaxError:
            raise ValueError("malformed XML") from None
        info = root.getroottree().docinfo
        if info.doctype or info.internalDTD is not None:
            raise ValueError("a DTD")
        return root
    try:
        safe_xml.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except Exception:
        raise ValueError("malformed XML, or a DTD or entities") from None
    return None


def default_lock_view(store):
    """Login -> PrincipalLocks: the locks of every key domain the account reaches."""
    from providers.locks import principal_locks
    return lambda login: principal_locks(store, login.vfs)


def request_id() -> str:
    return uuid.uuid4().hex[:12]
