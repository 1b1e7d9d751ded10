"""WebDAV resources over the filesystem API (wsgidav's DAVProvider interface).

Each request carries the authenticated principal's filesystem in
`environ["coffer.vfs"]` (set by server/webdav_app.py); every resource calls it
and nothing else. Errors from the core become HTTP statuses in
server/webdav_errors.py, the one table of this front-end; live properties
come from server/webdav_props.py, as in the PROPFIND fast path.
"""
from __future__ import annotations

import contextlib
import email.utils
import string
import time
from urllib.parse import quote

from lxml import etree
from wsgidav import util, xml_tools
from wsgidav.dav_error import (HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_INTERNAL_ERROR, HTTP_LOCKED,
                               HTTP_NOT_FOUND, PRECONDITION_CODE_LockConflict,
                               PRECONDITION_CODE_PropfindFiniteDepth, DAVError, DAVErrorCondition)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from providers import errors, paths
from . import webdav_propfind
from .webdav_errors import core, dav_error
from .upload_pipe import UploadPipe
from .webdav_props import DAV, LiveProps, content_type, element, is_live

HASH_HEX = {"md5": 32, "sha1": 40, "sha256": 64}
MS_NS = "{urn:schemas-microsoft-com:}"
WIN32_PROPS = ("Win32CreationTime", "Win32LastAccessTime", "Win32LastModifiedTime", "Win32FileAttributes")


def oc_checksum(header: str | None) -> dict | None:
    """The checksums an `OC-Checksum: SHA1:<hex>` header announces (ownCloud
    and Nextcloud clients, rclone's owncloud/nextcloud modes), as {"sha1": hex};
    None without the header. Algorithms Coffer does not compute are ignored.
    Such uploads keep all their checksums, the way those servers do."""
    if header is None:
        return None
    out = {}
    for token in header.split():
        algo, _, value = token.partition(":")
        algo = algo.lower()
        if algo in HASH_HEX and len(value) == HASH_HEX[algo] and all(ch in string.hexdigits for ch in value):
            out[algo] = value.lower()
    return out


def _etag(entry) -> str | None:
    tag = getattr(entry, "etag", None)
    return tag.strip('"') if tag else None


def _parse_time(text: str | None) -> float | None:
    """An RFC 1123 date (Win32*Time, getlastmodified) as epoch seconds."""
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text.strip()).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _Props:
    """Dead properties and Coffer's extra live properties, shared by files and folders."""

    entry = None
    _dead = None

    @property
    def vfs(self):
        return self.environ["coffer.vfs"]

    def _dead_props(self) -> dict:
        if self._dead is None:
            with core():
                self._dead = dict(self.vfs.get_props(self.path))
        return self._dead

    def get_creation_date(self):
        return self.entry.ctime

    def get_last_modified(self):
        return self.entry.mtime

    def get_display_name(self):
        return self.entry.name if self.path not in ("", "/") else ""

    def get_etag(self):
        return _etag(self.entry)

    def support_etag(self):
        return True

    @property
    def live(self) -> LiveProps:
        return LiveProps(self.vfs, self.environ.setdefault("coffer.live", {}))

    def get_property_names(self, *, is_allprop):
        names = self.live.allprop_names(self.entry)
        if not is_allprop:          # RFC 3744 properties are asked for by name, not sent with allprop
            names.append(DAV + "current-user-privilege-set")
        names.extend(self._dead_props().keys())
        return names

    def get_properties(self, mode, *, name_list=None):
        # Clients that read only the first <propstat> (rclone) must see the
        # found properties first.
        props = super().get_properties(mode, name_list=name_list)
        return sorted(props, key=lambda p: isinstance(p[1], DAVError))

    def get_property_value(self, name):
        if name == DAV + "lockdiscovery" and self.provider.lock_manager is not None:
            return super().get_property_value(name)          # the lock manager's
        x = self.live.xml(name, self.path, self.entry)
        if x is not None:
            return element(x)
        if is_live(name):
            raise DAVError(HTTP_NOT_FOUND)
        value = self._dead_props().get(name)
        if value is None:
            raise DAVError(HTTP_NOT_FOUND)
        try:
            return xml_tools.string_to_xml(value)
        except Exception:
            raise DAVError(HTTP_INTERNAL_ERROR) from None

    def set_property_value(self, name, value, *, dry_run=False):
        if name.startswith(DAV):
            return super().set_property_value(name, value, dry_run=dry_run)
        data = None if value is None else etree.tostring(value)
        if dry_run:
            # PROPPATCH checks every change first: the limits apply to all of
            # the request's changes together (a refusal is 507 for that property)
            pending = dict(getattr(self, "_proppatch", {}), **{name: data})
            with core():
                self.vfs.set_props(self.path, pending, dry_run=True)
            self._proppatch = pending
            return
        if name.startswith(MS_NS) and name[len(MS_NS):] == "Win32LastModifiedTime" and value is not None:
            ts = _parse_time(value.text)
            if ts is not None:
                with core():
                    self.vfs.set_mtime(self.path, ts)
        with core():
            self.vfs.set_props(self.path, {name: data})
        self._dead = None

    def remove_all_properties(self, *, recursive):
        pass     # the core drops a node's properties with the node

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        if dry_run:
            return True
        with core():
            self.vfs.set_mtime(dest_path, float(time_stamp))
        return True

    def is_locked(self):
        return False if self.provider.lock_manager is None else super().is_locked()

    # COPY and MOVE are one core call each, a folder with everything in it:
    # wsgidav's own way walks the tree resource by resource (recursively, and
    # re-resolving every path from the top). Onto an existing file the old
    # content becomes a version (wsgidav would delete the target first, and a
    # version being restored over its own file would vanish with it).
    # wsgidav has checked locks and Overwrite before calling these.
    def handle_copy(self, dest_path, *, depth_infinity):
        with core():
            existed = self.vfs.exists(dest_path)
            self.vfs.copy(self.path, dest_path, overwrite=True, recursive=depth_infinity)
        self._created(existed)
        return True

    def handle_move(self, dest_path):
        with core():
            existed = self.vfs.exists(dest_path)
            self.vfs.move(self.path, dest_path, overwrite=True)
        self.remove_all_locks(recursive=True)
        self._created(existed)
        return True

    def _created(self, existed: bool) -> None:
        # wsgidav answers 204 after handle_copy/handle_move; the application
        # turns it into 201 when the destination is new (RFC 4918 9.8.5, 9.9.4)
        self.environ["coffer.created"] = not existed

    def prevent_locking(self):
        # a lock is a write intent: refused (403) where the principal may not write
        return self.entry is not None and not self.entry.writable

    def get_ref_url(self):
        # The key of locks and of writes in progress: the path as the
        # filesystem names it (NFC, see providers.paths), so every spelling
        # of a name meets the same locks. Locks are per account; the
        # account's view is applied by the lock storage.
        path = paths.join(paths.parse(self.path))
        return quote(path + "/" if self.is_collection and path != "/" else path)


class _Reading:
    """A file's reader whose storage errors are HTTP answers (an object store
    that is down: 503) when wsgidav reads the first block, not a 500; later
    ones cut the response short, the status being sent already."""

    def __init__(self, reader):
        self.reader = reader

    def read(self, size=-1):
        with core():
            return self.reader.read(size)

    def seek(self, *args):
        with core():
            return self.reader.seek(*args)

    def __getattr__(self, name):
        return getattr(self.reader, name)


class CofferFile(_Props, DAVNonCollection):
    def __init__(self, path, environ, entry, *, pending=False):
        super().__init__(path, environ)
        self.entry = entry
        self.pending = pending            # a PUT target that does not exist yet
        self._writer = None

    def get_content_length(self):
        return self.entry.size if self.entry is not None else 0

    def get_content_type(self):
        return content_type(self.entry.name if self.entry is not None else util.get_uri_name(self.path))

    def get_creation_date(self):
        return self.entry.ctime if self.entry is not None else time.time()

    def get_last_modified(self):
        return self.entry.mtime if self.entry is not None else time.time()

    def get_display_name(self):
        return self.entry.name if self.entry is not None else util.get_uri_name(self.path)

    def get_etag(self):
        return _etag(self.entry) if self.entry is not None else None

    def support_ranges(self):
        return True

    def get_content(self):
        with core():
            return _Reading(self.vfs.open_read(self.path))

    def begin_write(self, *, content_type=None):
        mtime = None
        header = self.environ.get("HTTP_X_OC_MTIME")
        if header:
            try:
                mtime = float(header)
            except ValueError:
                raise DAVError(HTTP_BAD_REQUEST, "X-OC-Mtime must be a number of seconds") from None
            self.environ["coffer.oc_mtime"] = True
        expect = oc_checksum(self.environ.get("HTTP_OC_CHECKSUM"))
        with core():
            self._writer = self.vfs.open_write(self.path, mtime=mtime, checksums=expect is not None,
                                               expect=expect)
        self._stream = _WriteStream(self._writer)
        return self._stream

    def end_write(self, *, with_errors):
        w, self._writer = self._writer, None
        if w is None:
            return
        if with_errors:
            self._stream.abort()
            with contextlib.suppress(Exception):
                w.abort()
            return
        try:
            self._stream.drain()
            self._check_whole_body(w.size)
            with core():
                self.entry = w.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                w.abort()
            raise
        self.pending = False

    def _check_whole_body(self, received: int) -> None:
        """wsgidav ends a body at the first empty read, so a client that hangs
        up mid-upload would otherwise publish what came until then. With a
        Content-Length, all of it must have come (a chunked body's framing
        is checked by cheroot, which fails on a body cut short)."""
        if "chunked" in self.environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return
        try:
            expected = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return                      # cheroot refuses a malformed length before this
        if received < expected:
            raise DAVError(HTTP_BAD_REQUEST, f"the request body ended after {received} of {expected} bytes "
                           "(the connection was cut): nothing was changed; upload it again")

    def delete(self):
        with core():
            self.vfs.delete(self.path)
        self.remove_all_locks(recursive=False)


class _WriteStream:
    """What wsgidav writes a PUT body into: the upload pipe
    (server/upload_pipe.py), so hashing, encryption and disk writes overlap
    receiving the next bytes. Closing does not publish: end_write drains the
    pipe and commits."""

    def __init__(self, writer):
        self.pipe = UploadPipe(writer.write, "webdav-put")

    def write(self, data):
        try:
            self.pipe.put(bytes(data) if self.pipe.puts else data, len(data))
        except errors.CofferError as e:
            raise dav_error(e) from None

    def writelines(self, chunks):
        for data in chunks:
            self.write(data)

    def drain(self):
        """Wait until every queued block is written; raise what the worker hit."""
        try:
            self.pipe.close()
        except errors.CofferError as e:
            raise dav_error(e) from None

    def abort(self):
        """Drop the queued blocks; the worker's block in progress ends first."""
        self.pipe.abort()

    def close(self):
        pass


class CofferFolder(_Props, DAVCollection):
    def __init__(self, path, environ, entry):
        super().__init__(path, environ)
        self.entry = entry

    def get_display_name(self):
        return self.entry.name if self.path not in ("", "/") else ""

    def get_used_bytes(self):
        return self.live.quota()[0]

    def get_available_bytes(self):
        return self.live.quota()[1]

    def get_member_names(self):
        with core():
            return [e.name for e in self.vfs.list(self.path)]

    def get_member_list(self):
        with core():
            entries = self.vfs.list(self.path)
        base = self.path.rstrip("/")
        return [self.provider.resource_for(base + "/" + e.name, self.environ, e) for e in entries]

    def get_member(self, name):
        return self.provider.get_resource_inst(self.path.rstrip("/") + "/" + name, self.environ)

    def create_empty_resource(self, name):
        path = self.path.rstrip("/") + "/" + name
        if self.environ.get("REQUEST_METHOD") == "PUT":
            # the PUT body follows at once; one version, not an empty one first
            return CofferFile(path, self.environ, None, pending=True)
        with core():                      # LOCK on an unmapped URL creates an empty file
            w = self.vfs.open_write(path)
            entry = w.commit()
        return CofferFile(path, self.environ, entry)

    def create_collection(self, name):
        with core():
            self.vfs.mkdir(self.path.rstrip("/") + "/" + name)

    def handle_delete(self):
        # One check of the locks of the whole folder and one core call, not
        # wsgidav's check of every member down the tree (a deep tree cost it
        # seconds and its recursion limit): a member locked by someone else,
        # or by this principal without the token in If, refuses it all.
        self._check_locks_below()
        with core():
            self.vfs.delete(self.path)
        self.remove_all_locks(recursive=True)
        return True

    def _check_locks_below(self):
        lock_man = self.provider.lock_manager
        if lock_man is None:
            return
        env = self.environ
        if "wsgidav.conditions.if" not in env:
            util.parse_if_header_dict(env)
        tokens, who = env["wsgidav.ifLockTokenList"], env["wsgidav.user_name"]
        url = self.get_ref_url()
        lock_man.check_write_permission(url=url, depth="0", token_list=tokens, principal=who)
        cond = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
        for lock in lock_man.storage.get_lock_list(url, include_root=False, include_children=True,
                                                   token_only=False):
            if not (lock["principal"] == who and lock["token"] in tokens):
                cond.add_href(lock["root"])
        if cond.hrefs:
            raise DAVError(HTTP_LOCKED, err_condition=cond)


class CofferProvider(DAVProvider):
    """Maps request paths to the principal's files; one instance serves every account."""

    def is_readonly(self):
        return False

    def custom_request_handler(self, environ, start_response, default_handler):
        if environ["REQUEST_METHOD"] == "PROPFIND":
            if environ.get("HTTP_DEPTH", "infinity").strip().lower() == "infinity":
                # RFC 4918 9.1: a server may refuse; one request would walk
                # every file of the account into one answer (Apache refuses
                # by default too). Explorer, Finder, davfs2, rclone and
                # Cyberduck all ask for Depth 0 or 1.
                raise DAVError(HTTP_FORBIDDEN, "PROPFIND with Depth: infinity (or no Depth) is not served: "
                               "ask for Depth 0 or 1", err_condition=PRECONDITION_CODE_PropfindFiniteDepth)
            answer = webdav_propfind.handle(environ, start_response, self._lock_view)
            if answer is not None:
                return answer
        return default_handler(environ, start_response)

    def _lock_view(self):
        """The locks the request's account sees, for the PROPFIND fast path."""
        storage = getattr(self.lock_manager, "storage", None)
        return storage.current_view() if hasattr(storage, "current_view") else None

    def resource_for(self, path, environ, entry):
        if entry.is_dir:
            return CofferFolder(path, environ, entry)
        return CofferFile(path, environ, entry)

    def get_resource_inst(self, path, environ):
        vfs = environ["coffer.vfs"]
        try:
            entry = vfs.stat(path or "/")
        except (errors.NotFound, errors.NotADirectory):
            return None
        except errors.CofferError as e:
            raise dav_error(e) from None
        return self.resource_for(path or "/", environ, entry)
