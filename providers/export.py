"""Export (right of access and portability): one tar with everything the
service keeps about an account.

    README.txt     what each part is, in plain words (written first)
    account.json   profile, consents, quota, settings, grants, SSH keys,
                   session records, audit events, administrator accesses,
                   and the list of what is in the trash
    files/<path>   the account's own current tree
    trash/<deleted time>/<original path>
                   what is in the trash, each item under the time it was
                   deleted (an item deleted twice is there twice)
    versions/<path>/<time>_<name>
                   with `with_versions`: every kept older version, of live
                   files and of files in the trash

File contents are streamed from the filesystem API into the tar, never held
whole in memory; only metadata lists (the trash's roots) are gathered first.
Folders others share with the account are theirs to export and are left out.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from . import access, meta, paths
from .errors import CofferError, IsADirectory, NotFound
from .lifecycle import iso
from .meta import sshkeys as sq
from .meta import users as uq
from .resolve import in_shared

EXPORT_FORMAT = "coffer-export/2"
TRASH_PREFIX = "/" + paths.META + "/trash/"


def account_record(st, vfs, trash: list[dict] | None = None) -> dict:
    """Everything the service keeps about an account besides its files:
    profile, consents, quota, shared folders, SSH keys, session records,
    audit events and what administrators did, and the trash's contents."""
    from . import consent
    user = vfs.user
    with st.db.read() as c:
        keys = [dict(r) for r in sq.keys_of(c, user.id)]
        sessions = [dict(r) for r in uq.sessions(c, user.id)]
        events = [dict(r) for r in uq.audit_events_list(c, user.id)]
    limit = st.accounts.quota_limit(user)
    return {
        "format": EXPORT_FORMAT, "exported": iso(meta.now_us()),
        "profile": {"name": user.name, "first_name": user.first_name, "last_name": user.last_name,
                    "email": user.email, "status": user.status, "mode": user.mode,
                    "created": iso(user.created_us), "last_login": iso(user.last_login_us),
                    "erase_after": iso(user.erase_after_us)},
        "consents": {"news_email": user.consent_news, "news_email_changed": iso(user.consent_changed_us),
                     "news_email_how": consent.how_text(user.consent_how),
                     "security_email": "always sent (legitimate interest: breach notification duty)"},
        "quota": {"plan": user.plan, "limit_bytes": limit, "used_bytes": st.accounts.usage(user.id)},
        "settings": {"exclude": list(user.settings.get("exclude", st.cfg.retention.exclude)),
                     "retention": user.settings.get("retention")},
        "grants": vfs.share_list(),
        "ssh_keys": [{"fingerprint": k["fingerprint"], "comment": k["comment"], "added": iso(k["created_us"])}
                     for k in keys],
        "app_passwords": [{"name": a.label, "scope": a.scope, "created": iso(a.created_us),
                           "last_used": iso(a.last_used_us)} for a in st.apps.list(user.id)],
        "two_step_sign_in": _two_step(st.totp.state(user.id)),
        "sessions": [{"protocol": s["protocol"], "address": s["client_addr"], "started": iso(s["started_us"]),
                      "ended": iso(s["ended_us"]), "bytes_in": s["bytes_in"], "bytes_out": s["bytes_out"],
                      "requests": s["requests"]} for s in sessions],
        "audit_events": [{"at": iso(e["at_us"]), "event": e["event"], "actor": e["actor"],
                          "address": e["client_addr"], "detail": e["detail"]} for e in events],
        "administrator_access": [{"id": a["id"], "at": iso(a["at_us"]), "what": a["what"], "event": a["event"]}
                                 for a in access.accesses(st, user.id)],
        "trash": [{"path": e["path"], "deleted": iso(e["deleted_us"]), "folder": e["is_dir"],
                   "in_export": _trash_name(e["at"])} for e in (vfs.trash() if trash is None else trash)],
    }


def readme(st, user, with_versions: bool) -> str:
    """README.txt of an export: what each part is, in plain words."""
    days = st.cfg.retention.trash_days
    versions = ("versions/\n"
                "    Older versions of your files, kept by the service's version history.\n"
                "    versions/<path>/<time>_<name> is the version of <path> saved at <time>\n"
                "    (UTC, written 2026-11-22T03-10-00.123456Z). The current version of a\n"
                "    file is in files/; versions of files in the trash are here too.\n"
                if with_versions else
                "versions/\n"
                "    Not in this export. Older versions of your files are kept too: ask for\n"
                "    an export with versions to receive them.\n")
    return f"""\
Your Coffer account "{user.name}", exported {iso(meta.now_us())} (UTC)

This archive holds everything the service keeps about your account: your
files, what is in your trash, and the record of your account. Times are in
UTC.

files/
    Your files and folders as they are now, each at its own path. Folders
    other people share with you are not here: they belong to their owners.

trash/
    What you deleted that is still in the trash (it is kept {days} days, then
    removed for good). Each item is under the time it was deleted, then its
    original path: trash/2026-11-22T03-10-00.123456Z/docs/report.docx was
    /docs/report.docx, deleted on 22 November 2026 at 03:10:00 UTC.
    account.json lists them under "trash".

{versions}
account.json
    The record of your account, as JSON (a text format any program reads):
    profile       your name, email address, the account's status and mode
                  ("private": only your password opens your files;
                  "managed": the service's key opens them too), when it was
                  created and last used
    consents      whether you agreed to news by email, when and how; security
                  notices are sent without consent
    quota         your plan, its limit and how much you use
    settings      names of files that keep no history, your version retention
    grants        folders you share (with whom, read or write) and folders
                  others share with you
    ssh_keys      the SSH keys that can log in to your account
    two_step_sign_in
                  whether signing in on the web pages asks for a code from
                  an authenticator app, since when, and how many recovery
                  codes are left (the key and the codes are not exported)
    sessions      each connection: protocol, address, start and end, bytes
                  sent and received, requests
    audit_events  what happened to your account: logins refused, changes,
                  and what administrators did
    administrator_access
                  every action of an administrator on your account, in
                  words: exports (with their reason), restores, purges,
                  password resets, and disclosures of your data to others
                  (to whom, and why)
    trash         each item in trash/: its original path, when it was
                  deleted, whether it is a folder, and where it is in this
                  archive
"""


def _two_step(state: dict) -> dict:
    return {"on": state["on"], "since": iso(state["since_us"]) if state["on"] else None,
            "recovery_codes_left": state["recovery_left"] if state["on"] else None}


def _trash_name(at: str) -> str:
    return "trash/" + at[len(TRASH_PREFIX):]


def export(st, vfs, out, with_versions: bool = False, progress=None, actor: str = "admin") -> dict:
    """Write the tar (see the module doc) to the binary stream `out`;
    `actor` is "user" when the holder downloads it from the web pages."""
    user = vfs.user
    trash = vfs.trash()
    counts = {"files": 0, "folders": 0, "versions": 0, "trash_items": len(trash), "bytes": 0}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_text(tar, "README.txt", readme(st, user, with_versions).encode())
        _add_text(tar, "account.json", json.dumps(account_record(st, vfs, trash), indent=2, ensure_ascii=False,
                                                  default=str).encode())
        for e in vfs.walk():
            if in_shared(paths.parse(e.path)):
                continue                     # folders others own and share with the account
            _add_entry(tar, vfs, e, "files" + e.path, counts)
            if not e.is_dir and with_versions:
                _add_versions(tar, vfs, e.path, counts)
            if progress:
                progress(counts["files"])
        versioned: set[str] = set()
        for item in trash:
            for e, original in _trash_walk(vfs, item):
                _add_entry(tar, vfs, e, _trash_name(e.path), counts, trashed=True)
                if not e.is_dir and with_versions and original not in versioned and not _live_file(vfs, original):
                    versioned.add(original)
                    _add_versions(tar, vfs, original, counts)
    st.audit("account_exported", user_id=user.id, actor=actor, with_versions=with_versions,
             files=counts["files"], trash_items=counts["trash_items"])
    return counts


def _trash_walk(vfs, item):
    """A trash item's entry and, for a folder, everything in it, each with its original path."""
    top = vfs.stat(item["at"])
    yield top, item["path"]
    if top.is_dir:
        for e in vfs.walk(item["at"]):
            yield e, item["path"] + e.path[len(item["at"]):]


def _live_file(vfs, path: str) -> bool:
    try:
        return not vfs.stat(path).is_dir        # its versions went with it, under files/
    except CofferError:
        return False


def _add_entry(tar, vfs, e, name: str, counts: dict, trashed: bool = False) -> None:
    if e.is_dir:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, e.mtime
        tar.addfile(info)
        if not trashed:
            counts["folders"] += 1
        return
    counts["bytes"] += _add_file(tar, vfs, e.path, name, e.mtime)
    if not trashed:
        counts["files"] += 1


def _add_versions(tar, vfs, path: str, counts: dict) -> None:
    """Every kept version of what has lived at `path` but the live file's current one."""
    try:
        found = vfs.versions(path)
    except (NotFound, IsADirectory):
        return
    for v in found:
        if not v.current:
            counts["bytes"] += _add_file(tar, vfs, f"/{paths.META}/versions{path}/{v.name}",
                                         f"versions{path}/{v.name}", v.mtime)
            counts["versions"] += 1


def _add_text(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), time.time(), 0o600
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar, vfs, path, name, mtime) -> int:
    with vfs.open_read(path) as r:       # the size of what is read, not of an earlier listing
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = r.size, mtime, 0o600
        tar.addfile(info, r)
        return r.size


def export_to_path(st, vfs, path, with_versions: bool = False, progress=None) -> dict:
    """export() into a file readable only by its owner, which appears under
    its name only when complete."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise CofferError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            counts = export(st, vfs, f, with_versions, progress)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counts
