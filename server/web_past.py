"""The whole tree as it was at a chosen time: pick a date and time, browse
the folders as they were, download a file as it was, restore a file or a
folder from then. A view of the core's snapshots (`/.coffer/snapshots/<time>/`);
restoring is the core's `restore(at=...)`, so what is there now is kept as
a version (a file) or in the trash (a folder)."""
from __future__ import annotations

import calendar
import posixpath
import re
import time

from providers import errors, paths
from providers.resolve import parse_stamp, stamp
from . import web_forms
from .web import core_error, redirect, refuse, render, url
from .web_files import _download, _when, human_size

# what an <input type="datetime-local"> sends, read as UTC
PICKED = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?$")
LISTED_TIMES = 48                 # the most recent times with changes offered as links
NOTES = {"restored": "Restored as it was then. What was there before is kept: a file's among its versions, "
                     "a folder in the trash."}


def _picked(text: str) -> int | None:
    """Seconds since 1970 of a picked time, or None if it is not one."""
    m = PICKED.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g or 0) for g in m.groups())
    try:
        return calendar.timegm(time.struct_time((y, mo, d, h, mi, s, 0, 0, 0)))
    except (OverflowError, ValueError):
        return None


def _crumbs(label: str, path: str) -> list[tuple[str, str]]:
    out = [("My files then", url("past", label) + "/")]
    done = ""
    for part in [p for p in path.split("/") if p]:
        done += "/" + part
        out.append((part, url("past", label, done) + "/"))
    return out


def past(web, visit, environ, method, sub):
    """/.web/past/ (the form), /.web/past/<time>/<path> (a folder or a file then)."""
    vfs = visit.vfs
    label, _, rest = sub.strip("/").partition("/") if sub.strip("/") else ("", "", "")
    if not label:
        return _pick(vfs, visit, environ)
    try:
        at_us = parse_stamp(label)
    except errors.NotFound:
        raise refuse("404 Not Found", "No such time", "That address does not name a time; pick one again.",
                     back=url("past") + "/")
    if at_us > time.time() * 1e6:
        raise refuse("400 Bad Request", "That time is still to come", "Pick a time in the past.",
                     back=url("past") + "/")
    path = paths.join(paths.parse("/" + rest))
    here = url("past", label, path) + "/"
    if method == "POST":
        return _restore(web, visit, environ, label, at_us, path, here)
    try:
        entry = vfs.stat(_in_snapshot(label, path))
        if not entry.is_dir:
            return _download(vfs.open_read(_in_snapshot(label, path)), entry.size, entry.name)
        if not environ.get("PATH_INFO", "").endswith("/"):
            raise redirect(here)
        listing = sorted(vfs.list(_in_snapshot(label, path)), key=lambda e: (not e.is_dir, e.name.lower()))
    except errors.NotFound:
        raise refuse("404 Not Found", "Not there then", "That file or folder did not exist at that time.",
                     back=url("past", label) + "/")
    except errors.CofferError as e:
        raise core_error(e, url("past") + "/")
    rows = [{"name": e.name, "is_dir": e.is_dir, "size": "" if e.is_dir else human_size(e.size),
             "when": _when(e.mtime), "link": url("past", label, path, e.name) + ("/" if e.is_dir else "")}
            for e in listing]
    when = _when(at_us / 1e6)
    return render("200 OK", "past.html", title="My files as they were on " + when, when=when, rows=rows,
                  crumbs=_crumbs(label, path), action=here, csrf=visit.csrf, signed_in=True,
                  now_link=url("files", path) + "/", note=NOTES.get(web_forms.query(environ).get("done", ""), ""))


def _in_snapshot(label: str, path: str) -> str:
    return paths.join(("/.coffer", "snapshots", label) + paths.parse(path)) if path != "/" else \
        "/.coffer/snapshots/" + label


def _pick(vfs, visit, environ):
    """The form that picks a time, with the latest times that had changes."""
    asked = web_forms.query(environ)
    where = asked.get("path", "/")
    if "at" in asked:
        secs = _picked(asked["at"])
        if secs is None:
            raise refuse("400 Bad Request", "That is not a time", "Pick a date and a time, like 2026-01-31 "
                         "13:45.", back=url("past") + "/")
        try:
            folder = paths.join(paths.parse(where))
        except errors.CofferError:
            folder = "/"
        raise redirect(url("past", stamp(secs * 1_000_000, False), folder) + "/")
    try:
        times = [e.name for e in vfs.list("/.coffer/snapshots")]
    except errors.CofferError as e:
        raise core_error(e, url("files") + "/")
    recent = [{"when": _when(parse_stamp(t) / 1e6), "link": url("past", t) + "/"}
              for t in sorted(times, reverse=True)[:LISTED_TIMES]]
    return render("200 OK", "past_pick.html", title="My files as they were", recent=recent, path=where,
                  default=time.strftime("%Y-%m-%dT%H:%M", time.gmtime()), signed_in=True, csrf=visit.csrf)


def _restore(web, visit, environ, label, at_us, path, here):
    web.check_origin(environ)
    form = web_forms.small_form(environ)
    web.check_csrf(visit, form.get("csrf"))
    name = form.get("name", "")
    if not name or "/" in name:
        raise refuse("400 Bad Request", "That did not work", "Pick a file or folder to restore.", back=here)
    try:
        visit.vfs.restore(posixpath.join(path, name), at=at_us / 1e6)
    except errors.CofferError as e:
        raise core_error(e, here)
    raise redirect(here + "?done=restored")
