"""What an administrator does with an account, recorded where its holder can
read it.

Every administrator action on an account is an audit event with actor
"admin" and the account's id: opening its files (`account_opened`, written
by Storage.open_account for every `how="admin"` open, with its purpose:
export, restore, purge, versions, share, fsck), an export's counts, password
and key changes, profile and status changes, erasure, and disclosures. A
disclosure to a third party (a court, the police) is recorded *before*
anything is handed over: `disclose` writes it with its recipient and reason,
and the export made for it names it (`purpose="export", disclosure=ID`). An
export of a `managed` account needs a reason or a disclosure: the server key
opens it without its holder, so the holder must be able to see why. (A
`private` account opens only with its holder's own password.)

`accesses` lists them; the holder reads the same list over SSH (`coffer
access`), the administrator with `coffer-admin access NAME`.

The recipient and reason are the only free text in audit events; erasure
removes them together with the account's other personal data
(`forget_free_text`), leaving the anonymised event.
"""
from __future__ import annotations

from .accounts import BadRequest, normalize_name
from .errors import NotFound
from .meta import users as uq

OPENED = "account_opened"
DISCLOSED = "disclosure_recorded"
FREE_TEXT = ("to", "reason")           # detail keys an administrator typed
MAX_TEXT = 500
PURPOSES = {"export": "exported your files and account record",
            "restore": "restored a file or folder",
            "purge": "purged a file or folder with its history",
            "versions": "listed a file's versions",
            "share": "managed your shared folders",
            "fsck": "checked your stored files for damage (read and decrypted them)",
            "app-password": "made an app password for the account",
            "exclude": "dropped the kept history of files matching an exclusion pattern (read their names)",
            "seal": "re-sealed the account's keys and names, bound to their rows (no file was read)"}
# what the other events an administrator causes mean, in the holder's words
DESCRIPTIONS = {"account_created": "created the account",
                "account_updated": "changed your profile, plan or quota",
                "account_exported": "finished an export",
                "password_changed": "changed your password",
                "keys_replaced": "gave the account new keys",
                "password_reset_files_discarded": "reset your password, deleting files nobody could decrypt",
                "ssh_key_added": "added an SSH key", "ssh_key_removed": "removed an SSH key",
                "app_password_created": "made an app password", "app_password_revoked": "revoked an app password",
                "mass_change_released": "ended the hold kept after a mass change",
                "account_disabled": "disabled the account", "account_active": "enabled the account",
                "account_cancelled": "cancelled the account", "erasure_started": "started erasing the account",
                "share_granted": "shared one of your folders", "share_revoked": "stopped sharing one of your folders",
                "history_purged": "purged history", "breach_notified": "sent you a security notice",
                "news_sent": "sent you news by email",
                "second_factor_reset": "turned off your two-step sign-in (TOTP), e.g. for a lost phone",
                DISCLOSED: "recorded a disclosure of your data"}


def text(value: str | None, what: str) -> str | None:
    """A reason or recipient as recorded: one line of at most MAX_TEXT characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_TEXT or any(ch in value for ch in "\r\n\x00"):
        raise BadRequest(f"{what}: one line of at most {MAX_TEXT} characters")
    return value


def opening(c, row, purpose: str, reason: str | None, disclosure: int | None) -> dict:
    """Check an administrator's opening of an account (see the module doc)
    and return the detail its audit event records."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r} for opening an account")
    detail: dict = {"purpose": purpose}
    reason = text(reason, "the reason")
    if disclosure is not None:
        found = disclosure_of(c, row["id"], disclosure)
        detail["disclosure"] = disclosure
        reason = reason or found["reason"]
    if reason:
        detail["reason"] = reason
    if purpose == "export" and row["mode"] == "managed" and not reason:
        raise BadRequest(f"exporting the managed account {row['name']!r} needs a reason, which its holder can "
                         "read: give --reason TEXT, or --disclosure ID for a disclosure recorded with "
                         "`coffer-admin disclose`")
    return detail


def record_opening(c, row, detail: dict) -> None:
    uq.audit(c, OPENED, user_id=row["id"], actor="admin", detail=detail)


def disclosure_of(c, user_id: int, disclosure_id: int) -> dict:
    ev = uq.audit_event(c, disclosure_id)
    if ev is None or ev["user_id"] != user_id or ev["event"] != DISCLOSED:
        raise NotFound(f"no disclosure #{disclosure_id} for this account; see `coffer-admin access NAME`")
    return dict(ev["detail"])


def disclose(st, name: str, to: str, reason: str) -> dict:
    """Record that the account's data is being disclosed to `to` because of
    `reason`; returns the record with its id (what an export names)."""
    to, reason = text(to, "--to"), text(reason, "--reason")
    if not to or not reason:
        raise BadRequest("a disclosure needs whom it goes to (--to) and why (--reason)")
    with st.db.write() as c:
        row = uq.user_by_name(c, normalize_name(name))
        if row is None:
            raise NotFound(f"no account named {normalize_name(name)!r}; see `coffer-admin user list`")
        eid = uq.audit(c, DISCLOSED, user_id=row["id"], actor="admin", detail={"to": to, "reason": reason})
        at = uq.audit_event(c, eid)["at_us"]
    return {"id": eid, "name": row["name"], "at_us": at, "to": to, "reason": reason}


def accesses(st, user_id: int) -> list[dict]:
    """Every event an administrator caused on the account, oldest first,
    each with a plain description."""
    with st.db.read() as c:
        rows = uq.audit_events_list(c, user_id, actor="admin")
    return [{"id": r["id"], "at_us": r["at_us"], "event": r["event"], "what": describe(r["event"], r["detail"]),
             "detail": dict(r["detail"] or {})} for r in rows]


def describe(event: str, detail: dict | None) -> str:
    detail = detail or {}
    if event == OPENED:
        what = PURPOSES.get(detail.get("purpose"), "opened your files")
    else:
        what = DESCRIPTIONS.get(event, event.replace("_", " "))
    if event == "account_exported" and "files" in detail:
        what += f": {detail['files']} file(s)" + (f", {detail['trash_items']} item(s) in the trash"
                                                   if "trash_items" in detail else "")
    if event == DISCLOSED:
        what += f" to {detail.get('to')}"
    if detail.get("disclosure") is not None:
        what += f", for disclosure #{detail['disclosure']}"
    if detail.get("reason"):
        what += f"; reason: {detail['reason']}"
    return what


def forget_free_text(c, user_id: int) -> int:
    """Remove recipients and reasons from the account's audit events (at
    erasure, before they are anonymised); returns how many were changed."""
    n = 0
    for r in uq.audit_events_list(c, user_id, actor="admin"):
        detail = dict(r["detail"] or {})
        if any(k in detail for k in FREE_TEXT):
            uq.set_audit_detail(c, r["id"], {k: v for k, v in detail.items() if k not in FREE_TEXT})
            n += 1
    return n
