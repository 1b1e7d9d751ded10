"""A fast path for PROPFIND Depth 0 and 1, the request clients send most.

wsgidav builds an lxml tree per property and asks the lock manager about
every member; for a folder of 10,000 files that alone takes seconds. Here
one `vfs.list` call yields every member's live properties and the answer is
written as text. Anything unusual — Depth infinity, `propname`, `If:`
headers, an account holding locks — goes to wsgidav's own handler, which
stays the reference behaviour.
"""
from __future__ import annotations

import io
from urllib.parse import quote
from xml.sax.saxutils import escape

from lxml import etree

from providers import errors
from .webdav_errors import dav_error
from .webdav_props import DAV, LiveProps, is_live

HREF_SAFE = "/!*'(),$-_|.~"
CHUNK_ENTRIES = 500


def _empty(clark: str) -> str:
    ns, _, local = clark[1:].partition("}")
    if ns == "DAV:":
        return f"<D:{local}/>"
    return f'<X:{local} xmlns:X="{escape(ns, {chr(34): "&quot;"})}"/>'


class Request:
    """What a PROPFIND asks for, or None when the fast path does not apply."""

    def __init__(self, names, allprop):
        self.names = names            # Clark names, for a <prop> request
        self.allprop = allprop

    @classmethod
    def parse(cls, body: bytes, root=None):
        """From the body, or from its root element when it was parsed already."""
        if not body.strip():
            return cls([], True)
        if root is None:
            try:
                root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
            except etree.XMLSyntaxError:
                return None
        if root.tag != DAV + "propfind" or len(root) != 1:
            return None
        node = root[0]
        if node.tag == DAV + "allprop":
            return cls([], True)
        if node.tag != DAV + "prop":
            return None
        names = [child.tag for child in node if isinstance(child.tag, str)]
        return cls(names, False)

    @property
    def wants_dead(self) -> bool:
        """Whether the answer includes dead properties (allprop, or a name that is not live)."""
        return self.allprop or not all(map(is_live, self.names))


def handle(environ, start_response, lock_view):
    """Answer the PROPFIND, or return None to let wsgidav answer it."""
    depth = environ.get("HTTP_DEPTH", "infinity").lower()
    if depth not in ("0", "1") or environ.get("HTTP_IF"):
        return None
    body = environ["wsgi.input"].read() if environ.get("CONTENT_LENGTH", "0") not in ("", "0") else b""
    req = Request.parse(body, environ.get("coffer.xml"))
    if req is None:
        return _replay(environ, body)
    vfs = environ["coffer.vfs"]
    path = environ["PATH_INFO"] or "/"
    try:
        entry = vfs.stat(path)
    except (errors.NotFound, errors.NotADirectory):
        return _not_found(start_response)
    except errors.CofferError as e:
        raise dav_error(e) from None
    if req.allprop or DAV + "lockdiscovery" in req.names:
        view = lock_view()
        if view is not None and view.has_locks():
            return _replay(environ, body)
    members = []                      # (entry, its dead properties or None to look them up)
    if depth == "1" and entry.is_dir:
        try:
            if req.wants_dead:        # the members' properties in one go, not a lookup per member
                members = vfs.list_with_props(path)
            else:
                members = [(m, None) for m in vfs.list(path)]
        except errors.CofferError as e:
            raise dav_error(e) from None
    writer = _Writer(vfs, req, environ)
    base = path.rstrip("/")
    head = '<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
    first = writer.response(path if path != "" else "/", entry)
    headers = [("Content-Type", "application/xml; charset=utf-8")]
    if len(members) <= CHUNK_ENTRIES:
        # small answers carry a length, so the connection stays open without chunking
        body = "".join([head, first, *(writer.response(base + "/" + m.name, m, dead) for m, dead in members),
                        "</D:multistatus>"]).encode("utf-8")
        start_response("207 Multi-Status", headers + [("Content-Length", str(len(body)))])
        return [body]
    start_response("207 Multi-Status", headers)

    def generate():
        out = [head, first]
        for i, (m, dead) in enumerate(members):
            out.append(writer.response(base + "/" + m.name, m, dead))
            if i % CHUNK_ENTRIES == CHUNK_ENTRIES - 1:
                yield "".join(out).encode("utf-8")
                out = []
        out.append("</D:multistatus>")
        yield "".join(out).encode("utf-8")

    return generate()


def _not_found(start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "10")])
    return [b"Not found\n"]


def _replay(environ, body):
    """Put the body back and let wsgidav handle the request."""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return None


class _Writer:
    def __init__(self, vfs, req: Request, environ):
        self.vfs = vfs
        self.req = req
        self.live = LiveProps(vfs)

    def dead_props(self, path: str) -> dict:
        try:
            return self.vfs.get_props(path)
        except errors.CofferError:
            return {}

    def response(self, path: str, e, dead: dict | None = None) -> str:
        """One <D:response>; `dead` holds the entry's dead properties when
        the caller has them already."""
        href = path.rstrip("/") + "/" if e.is_dir else path
        found, missing = [], []
        if self.req.allprop:
            found.append(self.live.allprop_xml(path, e))
            found.extend(v.decode("utf-8") for v in (self.dead_props(path) if dead is None else dead).values())
        else:
            for name in self.req.names:
                x = self.live.xml(name, path, e)
                if x is None and not is_live(name):
                    if dead is None:
                        dead = self.dead_props(path)
                    x = dead[name].decode("utf-8") if name in dead else None
                if x is None:
                    missing.append(_empty(name))
                else:
                    found.append(x)
        parts = [f"<D:response><D:href>{escape(quote(href, safe=HREF_SAFE))}</D:href>"]
        if found:
            parts.append("<D:propstat><D:prop>" + "".join(found) +
                         "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
        if missing:
            parts.append("<D:propstat><D:prop>" + "".join(missing) +
                         "</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
        parts.append("</D:response>")
        return "".join(parts)
