"""The signed-in pages: files (browse, download, upload, new folder,
delete to the trash), a file's versions (download, restore) and My Profile.
Every action goes through the account's filesystem API, where the
permission checks live; these handlers only speak HTML."""
from __future__ import annotations

import posixpath
import time
from urllib.parse import quote

from providers import errors, paths
from providers.resolve import version_path
from . import web_forms
from .web import Answer, core_error, redirect, refuse, render, url

UPLOAD_HEADER = "HTTP_X_COFFER_UPLOAD"     # sent by the page's upload script (static/upload.js)
MOVE_CHOICES = 1000                        # folders offered as a move's destination
MOVE_SCAN = 50_000                         # entries looked at to find them


NOTES = {"back": "Restored from the trash to where it was.", "uploaded": "Uploaded.",
         "folder": "Created the folder.", "renamed": "Renamed.",
         "moved": "Moved.",
         "trash": "Moved to the trash (it stays there for the days your plan keeps it).",
         "restored": "Restored that version: it is now the current one.",
         "purged": "Deleted for good: it and its old versions are gone and cannot be put back."}


def _note(environ) -> str:
    """The line that says what the last action did (a fixed sentence: an
    address cannot put words of its own on the page)."""
    return NOTES.get(web_forms.query(environ).get("done", ""), "")


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _crumbs(path: str) -> list[tuple[str, str]]:
    """(name, link) for each folder from the top down to `path`."""
    out = [("My files", url("files") + "/")]
    done = ""
    for part in [p for p in path.split("/") if p]:
        done += "/" + part
        out.append((part, url("files", done) + "/"))
    return out


class _Download:
    """A file's bytes, read block by block from the store; the reader is
    closed when the server closes the response (sent, cut off, or a HEAD)."""

    def __init__(self, reader):
        self.reader = reader

    def __iter__(self):
        return self.reader.iter_range(0)

    def close(self):
        self.reader.close()


def _download(reader, size: int, name: str):
    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return ("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size)),
                       ("Content-Disposition", disposition)], _Download(reader))


def files(web, visit, environ, method, path):
    vfs = visit.vfs
    folder_link = url("files", path) + "/"
    if method == "POST":
        return _files_post(web, visit, environ, path, folder_link)
    try:
        entry = vfs.stat(path)
        if not entry.is_dir:
            return _download(vfs.open_read(path), entry.size, entry.name)
        if not environ.get("PATH_INFO", "").endswith("/"):
            raise redirect(folder_link)          # a folder's page ends in "/"
        listing = sorted(vfs.list(path), key=lambda e: (not e.is_dir, e.name.lower()))
        quota = vfs.quota()
    except errors.CofferError as e:
        raise core_error(e, url("files") + "/")
    rows = [{"name": e.name, "is_dir": e.is_dir, "size": "" if e.is_dir else human_size(e.size),
             "when": _when(e.mtime), "link": url("files", path, e.name) + ("/" if e.is_dir else ""),
             "versions": None if e.is_dir else url("versions", path, e.name),
             "share": url("shares") + "/?folder=" + quote(posixpath.join(path, e.name), safe="")
             if e.is_dir and not e.virtual else None,
             "removable": e.removable and not e.virtual,
             "rename": folder_link + "?rename=" + quote(e.name, safe=""),
             "move": folder_link + "?move=" + quote(e.name, safe="")} for e in listing]
    here = paths.join(paths.parse(path))
    asked = web_forms.query(environ)
    renaming, moving = asked.get("rename", ""), asked.get("move", "")
    writable = entry.writable and not entry.virtual
    try:
        into = _folders(vfs, here, posixpath.join(here, moving)) if moving and writable else []
    except errors.CofferError as e:
        raise core_error(e, folder_link)
    return render("200 OK", "files.html", title="My files", renaming=renaming, moving=moving, into=into,
                  crumbs=_crumbs(path), rows=rows, path=path, here=here, past=_past_link(here),
                  action=folder_link, csrf=visit.csrf, used=human_size(quota.used), signed_in=True,
                  writable=writable, note=_note(environ))


def _upload(web, visit, environ, path, folder_link):
    """Files sent by the upload form, each streamed into the core as it
    arrives. The page's script first asks, with the form token and no
    file, whether it may send (so a session that ended is said in words
    before any byte of a file is sent, not seen as a cut connection), then
    sends one file a request (marked with UPLOAD_HEADER) and gets a short
    answer instead of the folder's page;
    without the script the form sends them all at once. A file that does
    not fit is dropped whole (its earlier version stays current); the rest
    of the request is read and discarded so the browser sees the answer
    instead of a cut connection."""
    vfs = visit.vfs
    checked, opened = [], []

    def on_field(name, value):
        if name == "csrf":
            web.check_csrf(visit, value)
            checked.append(True)

    def open_file(filename):
        if not checked:
            web.check_csrf(visit, None)
        name = filename.replace("\\", "/").rsplit("/", 1)[-1]
        opened.append(name)
        return vfs.open_write(posixpath.join(path, name))

    try:
        saved = web_forms.stream_upload(environ, on_field, open_file)
    except errors.QuotaExceeded:
        web_forms.discard_rest(environ)
        before = f" Saved before it: {', '.join(opened[:-1])}." if len(opened) > 1 else ""
        raise refuse("507 Insufficient Storage", "Your space is full",
                     f"Your space is full, so nothing of {opened[-1] if opened else 'that upload'} was saved "
                     f"(an earlier version of it stays as it was).{before} Delete files or empty the trash, "
                     "or ask for more space, then upload it again.", back=folder_link)
    except errors.CofferError as e:
        web_forms.discard_rest(environ)
        raise core_error(e, folder_link)
    except Answer:                          # a missing or stale form token
        web_forms.discard_rest(environ)
        raise
    if not checked:
        web.check_csrf(visit, None)
    if not saved and environ.get(UPLOAD_HEADER) == "check":
        return Answer("204 No Content")      # the script's question before it sends: signed in, token good
    if not saved:
        raise refuse("400 Bad Request", "Nothing uploaded", "Choose one or more files first.", back=folder_link)
    if environ.get(UPLOAD_HEADER):
        return Answer("200 OK", b"Uploaded.")
    raise redirect(folder_link + "?done=uploaded")


def _folders(vfs, path: str, moving: str) -> list[str]:
    """The folders something at `moving` may be moved into: those of the
    space it is in (the account's own tree, or the shared folder it is
    under), at most MOVE_CHOICES among the first MOVE_SCAN entries (a page
    must come back quickly in a huge tree), never itself or what is inside it."""
    parts = paths.parse(path)
    top = paths.join(parts[:3]) if parts[:1] == ("Shared",) and len(parts) >= 3 else "/"
    out = [top]
    for seen, e in enumerate(vfs.walk(top)):
        if len(out) >= MOVE_CHOICES or seen >= MOVE_SCAN:
            break
        if e.is_dir and not e.virtual and e.writable and e.path != moving and not e.path.startswith(moving + "/"):
            out.append(e.path)
    return out


def _past_link(here: str) -> str | None:
    """The page of this folder as it was: for the account's own tree (the
    past of a folder shared with the account is its owner's to see)."""
    if paths.parse(here)[:1] in (("Shared",), (paths.META,)):
        return None
    return url("past") + "/?path=" + quote(here, safe="")


def _files_post(web, visit, environ, path, folder_link):
    web.check_origin(environ)
    vfs = visit.vfs
    if environ.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
        return _upload(web, visit, environ, path, folder_link)
    form = web_forms.small_form(environ)
    web.check_csrf(visit, form.get("csrf"))
    action, name = form.get("action"), form.get("name", "").strip()
    if not name or "/" in name:
        raise refuse("400 Bad Request", "That did not work", "Give a name without `/`.", back=folder_link)
    target = posixpath.join(path, name)
    try:
        if action == "mkdir":
            vfs.mkdir(target)
            done = "folder"
        elif action == "delete":
            vfs.delete(target)
            done = "trash"
        elif action == "rename":
            new = form.get("new", "").strip()
            if not new or "/" in new:
                raise refuse("400 Bad Request", "That did not work", "Give a new name without `/`.",
                             back=folder_link)
            vfs.move(target, posixpath.join(path, new), overwrite=False)
            done = "renamed"
        elif action == "move":
            into = form.get("to", "")
            if not into.startswith("/"):
                raise refuse("400 Bad Request", "That did not work", "Pick the folder to move it into.",
                             back=folder_link)
            vfs.move(target, posixpath.join(into, name), overwrite=False)
            done = "moved"
        else:
            raise refuse("400 Bad Request", "That did not work", "This page does not know that action.",
                         back=folder_link)
    except errors.CofferError as e:
        raise core_error(e, folder_link)
    raise redirect(folder_link + "?done=" + done)


def versions(web, visit, environ, method, path):
    vfs = visit.vfs
    here = url("versions", path)
    folder_link = url("files", posixpath.dirname(path)) + "/"
    try:
        if method == "POST":
            web.check_origin(environ)
            form = web_forms.small_form(environ)
            web.check_csrf(visit, form.get("csrf"))
            try:
                vid = int(form.get("version", ""))
            except ValueError:
                raise refuse("400 Bad Request", "That did not work", "Pick a version to restore.", back=here)
            vfs.restore(path, version_id=vid)
            raise redirect(here + "?done=restored")
        found = vfs.versions(path)
        want = web_forms.query(environ).get("download")
        if want:
            for v in found:
                if str(v.id) == want:
                    where = paths.join(version_path(paths.parse(path), v.name))
                    return _download(vfs.open_read(where), v.size, posixpath.basename(path))
            raise errors.NotFound("no such version")
    except errors.CofferError as e:
        raise core_error(e, folder_link)
    rows = [{"id": v.id, "when": _when(v.created), "modified": _when(v.mtime), "size": human_size(v.size),
             "author": v.author or "", "current": v.current, "download": f"{here}?download={v.id}"}
            for v in sorted(found, key=lambda v: v.created, reverse=True)]
    return render("200 OK", "versions.html", title="Versions of " + posixpath.basename(path),
                  crumbs=_crumbs(posixpath.dirname(path)), name=posixpath.basename(path), rows=rows, action=here,
                  csrf=visit.csrf, signed_in=True, note=_note(environ))



def trash(web, visit, environ, method, path):
    """What the account deleted, newest first, each with a button that puts
    it back where it was (with its history) and one that deletes it for
    good (asked once more first: that cannot be undone)."""
    vfs = visit.vfs
    here = url("trash") + "/"
    asked = None
    try:
        found = vfs.trash()
        if method == "POST":
            web.check_origin(environ)
            form = web_forms.small_form(environ)
            web.check_csrf(visit, form.get("csrf"))
            entry = next((e for e in found if e["at"] == form.get("at")), None)
            if entry is None:
                raise errors.NotFound("no such trash entry")
            if form.get("action") == "purge-ask":
                asked = entry
            elif form.get("action") == "purge":
                vfs.purge(entry["at"])
                raise redirect(here + "?done=purged")
            else:
                vfs.copy(entry["at"], entry["path"], overwrite=False)
                raise redirect(here + "?done=back")
    except errors.CofferError as e:
        raise core_error(e, here)
    rows = [{"path": e["path"], "is_dir": e["is_dir"], "when": _when(e["deleted_us"] / 1e6), "at": e["at"]}
            for e in reversed(found)]
    return render("200 OK", "trash.html", title="Trash", rows=rows, action=here, csrf=visit.csrf,
                  signed_in=True, note=_note(environ), asked=asked)
