"""Live properties: what a PROPFIND tells of an entry, one copy for every path.

Both PROPFIND handlers ask here: the fast path (server/webdav_propfind.py)
writes the text as it is, wsgidav's handler (server/webdav.py) gets it as an
element. Dead properties are the core's (`vfs.get_props`); the locks in
DAV:lockdiscovery are the lock manager's.
"""
from __future__ import annotations

import logging
import mimetypes
import time
from xml.sax.saxutils import escape

from lxml import etree

from providers import errors
from .webdav_errors import dav_error

log = logging.getLogger("server.webdav")

DAV = "{DAV:}"
OC_NS = "{http://owncloud.org/ns}"
SUPPORTED_LOCK = ("<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>"
                  "</D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype>"
                  "<D:write/></D:locktype></D:lockentry></D:supportedlock>")
# allprop's live properties (RFC 4918), in this order; RFC 3744's and ownCloud's are asked for by name
ALLPROP = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype", "quota-used-bytes",
           "quota-available-bytes", "getlastmodified", "displayname", "getetag", "lockdiscovery", "supportedlock")
OC_LIVE = (OC_NS + "checksums", OC_NS + "permissions")
LOCK_PROPS = ("lockdiscovery", "supportedlock")
FOLDER_ONLY = ("quota-used-bytes", "quota-available-bytes")
FILE_ONLY = ("getcontentlength", "getcontenttype")
# types Python's table lacks (RFC 9512 for YAML); compressed files are their compression's type
MORE_TYPES = {"yaml": "application/yaml", "yml": "application/yaml", "oga": "audio/ogg", "ogg": "audio/ogg",
              "ogv": "video/ogg", "webm": "video/webm", "gz": "application/gzip", "tgz": "application/gzip",
              "bz2": "application/x-bzip2", "xz": "application/x-xz", "zst": "application/zstd"}
_OC_DECL = f'xmlns:oc="{OC_NS[1:-1]}"'
_types: dict = {}


def content_type(name: str) -> str:
    """getcontenttype: by the name's last extension, any case."""
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    t = _types.get(ext)
    if t is None:
        t = _types[ext] = MORE_TYPES.get(ext) or (mimetypes.guess_type("x." + ext)[0] if ext else None) \
            or "application/octet-stream"
    return t


def http_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def iso_date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def privileges(entry) -> tuple[str, ...]:
    """The RFC 3744 privileges the principal holds on an entry, for
    DAV:current-user-privilege-set: read-only entries (read shares, /Shared,
    /.coffer) give read only; writable files add write and write-content; the
    members of a writable folder may be added (bind) and removed (unbind).
    Removing the entry itself is the parent folder's unbind."""
    held = ("read", "read-current-user-privilege-set")
    if entry.writable:
        held += ("write", "write-properties", "write-content")
        if entry.is_dir:
            held += ("bind", "unbind")
    return held


def oc_permissions(entry) -> str:
    """ownCloud's permission letters: delete/rename/move only where the entry
    itself may be removed, write or create where it may be changed."""
    perm = "DNV" if entry.writable and getattr(entry, "removable", True) else ""
    if entry.writable:
        perm += "CK" if entry.is_dir else "W"
    return ("R" + perm) if perm else ""


def checksums_text(hashes: dict) -> str:
    """oc:checksum's text: the known checksums, SHA1 first as ownCloud lists
    them. A listing never computes any: a large file uploaded without one
    has none until something asks for it (md5sum over SSH, for example)."""
    return " ".join(f"{alg.upper()}:{hashes[alg]}" for alg in ("sha1", "md5", "sha256") if hashes.get(alg))


def is_live(name: str) -> bool:
    """Whether a property (Clark notation) is live: computed here, never stored."""
    return name.startswith(DAV) or name in OC_LIVE


def element(xml: str):
    """A property's XML text (prefixes D: and oc:) as an lxml element."""
    return etree.fromstring(f'<r xmlns:D="DAV:" {_OC_DECL}>{xml}</r>')[0]


class LiveProps:
    """The live properties of one request's entries. The quota is asked once
    per request (`cache` is a dict that lives as long as the request)."""

    def __init__(self, vfs, cache: dict | None = None):
        self.vfs = vfs
        self.cache = {} if cache is None else cache

    def quota(self) -> tuple[int, int]:
        """(used, available) bytes."""
        q = self.cache.get("quota")
        if q is None:
            try:
                quota = self.vfs.quota()
            except errors.CofferError as e:
                raise dav_error(e) from None
            q = self.cache["quota"] = (quota.used, quota.space()[1])
        return q

    @staticmethod
    def allprop_names(entry) -> list[str]:
        """The {DAV:} names allprop answers for the entry, in Clark notation;
        read-only entries, which cannot be locked, say nothing of locks."""
        skip = FILE_ONLY if entry.is_dir else FOLDER_ONLY
        return [DAV + local for local in ALLPROP
                if local not in skip and (entry.writable or local not in LOCK_PROPS)
                and (local != "getetag" or entry.etag)]

    def allprop_xml(self, path: str, e) -> str:
        """What `xml` gives for each of `allprop_names(e)`, joined: the text
        of every member of an allprop listing, written in one go."""
        name = escape(e.name if path not in ("", "/") else "")
        etag = f"<D:getetag>{escape(e.etag.strip(chr(34)))}</D:getetag>" if e.etag else ""
        locks = "<D:lockdiscovery/>" + SUPPORTED_LOCK if e.writable else ""
        if e.is_dir:
            used, available = self.quota()
            return (f"<D:resourcetype><D:collection/></D:resourcetype><D:creationdate>{iso_date(e.ctime)}"
                    f"</D:creationdate><D:quota-used-bytes>{used}</D:quota-used-bytes><D:quota-available-bytes>"
                    f"{available}</D:quota-available-bytes><D:getlastmodified>{http_date(e.mtime)}"
                    f"</D:getlastmodified><D:displayname>{name}</D:displayname>{etag}{locks}")
        return (f"<D:resourcetype/><D:creationdate>{iso_date(e.ctime)}</D:creationdate><D:getcontentlength>"
                f"{e.size}</D:getcontentlength><D:getcontenttype>{content_type(e.name)}</D:getcontenttype>"
                f"<D:getlastmodified>{http_date(e.mtime)}</D:getlastmodified><D:displayname>{name}"
                f"</D:displayname>{etag}{locks}")

    def xml(self, name: str, path: str, e) -> str | None:
        """The XML of the property named in Clark notation, or None when the
        entry has no such live property."""
        if name.startswith(DAV):
            return self._dav(name[len(DAV):], path, e)
        if name == OC_NS + "checksums" and not e.is_dir:
            try:
                text = checksums_text(self.vfs.hashes(path))
            except errors.CofferError as err:     # the property is missing, the rest of the answer stands
                if isinstance(err, errors.IntegrityError):
                    log.error("integrity error: %s", err)
                return None
            if not text:
                return None
            return f"<oc:checksums {_OC_DECL}><oc:checksum>{text}</oc:checksum></oc:checksums>"
        if name == OC_NS + "permissions":
            return f"<oc:permissions {_OC_DECL}>{oc_permissions(e)}</oc:permissions>"
        return None

    def _dav(self, local: str, path: str, e) -> str | None:
        if local == "resourcetype":
            return "<D:resourcetype><D:collection/></D:resourcetype>" if e.is_dir else "<D:resourcetype/>"
        if local == "getlastmodified":
            return f"<D:getlastmodified>{http_date(e.mtime)}</D:getlastmodified>"
        if local == "creationdate":
            return f"<D:creationdate>{iso_date(e.ctime)}</D:creationdate>"
        if local == "displayname":
            return f"<D:displayname>{escape(e.name if path not in ('', '/') else '')}</D:displayname>"
        if local == "getetag":
            return f"<D:getetag>{escape(e.etag.strip(chr(34)))}</D:getetag>" if e.etag else None
        if local == "lockdiscovery":
            return "<D:lockdiscovery/>"       # for an account without locks; else the lock manager answers
        if local == "supportedlock":
            return SUPPORTED_LOCK
        if local == "current-user-privilege-set":
            return ("<D:current-user-privilege-set>" + "".join(f"<D:privilege><D:{p}/></D:privilege>"
                                                               for p in privileges(e))
                    + "</D:current-user-privilege-set>")
        if e.is_dir:
            if local == "quota-used-bytes":
                return f"<D:quota-used-bytes>{self.quota()[0]}</D:quota-used-bytes>"
            if local == "quota-available-bytes":
                return f"<D:quota-available-bytes>{self.quota()[1]}</D:quota-available-bytes>"
            return None
        if local == "getcontentlength":
            return f"<D:getcontentlength>{e.size}</D:getcontentlength>"
        if local == "getcontenttype":
            return f"<D:getcontenttype>{content_type(e.name)}</D:getcontenttype>"
        return None
