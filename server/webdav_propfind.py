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
import mimetypes
import time
from urllib.parse import quote
from xml.sax.saxutils import escape

from lxml import etree

from providers import errors
from .webdav import NO_QUOTA_AVAILABLE, OC_NS, checksums_text, dav_error, oc_permissions, privilege_set_xml

DAV = "{DAV:}"
SUPPORTED_LOCK = ("<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>"
                  "</D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype>"
                  "<D:write/></D:locktype></D:lockentry></D:supportedlock>")
ALLPROP = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype", "quota-used-bytes",
           "quota-available-bytes", "getlastmodified", "displayname", "getetag", "lockdiscovery", "supportedlock")
HREF_SAFE = "/!*'(),$-_|.~"
CHUNK_ENTRIES = 500
_mime_cache: dict = {}


def _mime(name: str) -> str:
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    m = _mime_cache.get(ext)
    if m is None:
        m = _mime_cache[ext] = mimetypes.guess_type("x." + ext)[0] or "application/octet-stream"
    return m


def _http_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def _iso_date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


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
        """Whether the answer includes dead properties (allprop, or names outside DAV: and oc:)."""
        return self.allprop or any(not n.startswith((DAV, OC_NS)) for n in self.names)


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
        self.environ = environ
        self._quota = None

    def quota(self):
        if self._quota is None:
            try:
                q = self.vfs.quota()
            except errors.CofferError as e:
                raise dav_error(e) from None
            avail = q.available if q.available is not None else NO_QUOTA_AVAILABLE
            self._quota = (q.used, max(0, avail))
        return self._quota

    def live(self, local: str, path: str, e) -> str | None:
        """The XML of one {DAV:} property, or None when it does not apply."""
        if local == "resourcetype":
            return "<D:resourcetype><D:collection/></D:resourcetype>" if e.is_dir else "<D:resourcetype/>"
        if local == "getlastmodified":
            return f"<D:getlastmodified>{_http_date(e.mtime)}</D:getlastmodified>"
        if local == "creationdate":
            return f"<D:creationdate>{_iso_date(e.ctime)}</D:creationdate>"
        if local == "displayname":
            return f"<D:displayname>{escape(e.name if path not in ('', '/') else '')}</D:displayname>"
        if local == "getetag":
            return f"<D:getetag>{escape(e.etag.strip(chr(34)))}</D:getetag>" if e.etag else None
        if local == "lockdiscovery":
            return "<D:lockdiscovery/>"       # accounts with locks take the full path
        if local == "supportedlock":
            return SUPPORTED_LOCK
        if local == "current-user-privilege-set":
            return privilege_set_xml(e)
        if e.is_dir:
            if local == "quota-used-bytes":
                return f"<D:quota-used-bytes>{self.quota()[0]}</D:quota-used-bytes>"
            if local == "quota-available-bytes":
                return f"<D:quota-available-bytes>{self.quota()[1]}</D:quota-available-bytes>"
            return None
        if local == "getcontentlength":
            return f"<D:getcontentlength>{e.size}</D:getcontentlength>"
        if local == "getcontenttype":
            return f"<D:getcontenttype>{_mime(e.name)}</D:getcontenttype>"
        return None

    def other(self, name: str, path: str, e, dead: dict | None) -> str | None:
        if name == OC_NS + "checksums" and not e.is_dir:
            try:
                text = checksums_text(self.vfs.hashes(path))
            except errors.CofferError:
                return None
            if not text:
                return None
            return (f'<oc:checksums xmlns:oc="http://owncloud.org/ns"><oc:checksum>{text}</oc:checksum>'
                    '</oc:checksums>')
        if name == OC_NS + "permissions":
            return f'<oc:permissions xmlns:oc="http://owncloud.org/ns">{oc_permissions(e)}</oc:permissions>'
        if dead is not None and name in dead:
            return dead[name].decode("utf-8")
        return None

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
            for local in ALLPROP:
                x = self.live(local, path, e)
                if x is not None:
                    found.append(x)
            found.extend(v.decode("utf-8") for v in (self.dead_props(path) if dead is None else dead).values())
        else:
            for name in self.req.names:
                if name.startswith(DAV):
                    x = self.live(name[len(DAV):], path, e)
                else:
                    if dead is None and not name.startswith(OC_NS):
                        dead = self.dead_props(path)
                    x = self.other(name, path, e, dead)
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
