"""News-email consent: how and when it was given, the unsubscribe link in
every news message, and withdrawing it through that link without logging in.

Consent is off until given: at sign-up (`coffer-admin user add --consent
yes`, the answer recorded either way) or later (`coffer-admin user set
--consent`), each time with when and how (`users.consent_how`: HOW). Every
news message says when and how it was given, and carries a link to

    <[mail] public_url>/.well-known/coffer/unsubscribe?u=<account id>&t=<token>

as RFC 2369 `List-Unsubscribe` with RFC 8058 one-click. The token is an
HMAC-SHA256 of the account's id and creation time under a key derived from
the master key: only this server makes one, one account's token does
nothing for another, and a new account that happens to get an erased
account's id is not reached by an old link. A POST to the link withdraws
consent; a GET only shows a confirmation form (mail scanners open links).
The web side is server/unsubscribe.py.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time

from . import meta
from .errors import CofferError, PermissionDenied
from .meta import users as uq

log = logging.getLogger(__name__)
PATH = "/.well-known/coffer/unsubscribe"
HOW = {"signup": "when the account was created",
       "admin": "recorded by an administrator",
       "link": "with the unsubscribe link of a news email",
       "web": "on the account's My Profile web page"}


class NoPublicAddress(CofferError):
    """News mail needs the address users reach the server at, for its link."""


def how_text(how: str | None) -> str:
    return HOW.get(how or "", "not recorded")


def _key(st) -> bytes:
    return st.master.subkey("news-unsubscribe")


def token(st, user_id: int, created_us: int) -> str:
    mac = hmac.new(_key(st), f"unsubscribe\0{user_id}\0{created_us}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def public_base(cfg) -> str:
    """The HTTPS address users reach the WebDAV port at: `[mail] public_url`,
    else the first ACME name with the WebDAV port."""
    if cfg.mail.public_url:
        return cfg.mail.public_url.rstrip("/")
    if cfg.tls.acme_domains:
        port = "" if cfg.webdav.port == 443 else f":{cfg.webdav.port}"
        return f"https://{cfg.tls.acme_domains[0]}{port}"
    raise NoPublicAddress("news mail carries an unsubscribe link: set [mail] public_url to the HTTPS address "
                          "users reach this server at, e.g. \"https://files.example.org:8443\"")


def link(st, row) -> str:
    return f"{public_base(st.cfg)}{PATH}?u={row['id']}&t={token(st, row['id'], row['created_us'])}"


def statement(row) -> str:
    """Why this person gets news: when and how they agreed, in words."""
    at = row["consent_changed_us"]
    when = time.strftime("on %d %B %Y at %H:%M UTC", time.gmtime(at / 1e6)) if at else "(time not recorded)"
    return f"You receive this because you agreed to news by email {when} ({how_text(row['consent_how'])})."


def footer(st, row) -> str:
    return (f"\n\n-- \n{statement(row)}\n"
            f"To stop news by email, open this link and confirm:\n{link(st, row)}\n"
            "(or use your mail program's Unsubscribe button). Security notices about your account are "
            "still sent.\n")


def headers(st, row) -> dict:
    """RFC 2369 and RFC 8058 headers of one news message."""
    return {"List-Unsubscribe": f"<{link(st, row)}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def check(st, user_id: str, given: str):
    """The account a link names, when its token is right; PermissionDenied
    otherwise (the same for an unknown id, a wrong token, another
    account's token). The comparison takes the same time wherever it differs."""
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        uid = -1
    with st.db.read() as c:
        row = uq.user_by_id(c, uid) if 0 < uid < 1 << 62 else None
    expected = token(st, uid, row["created_us"] if row else -1)
    if not hmac.compare_digest(expected.encode(), (given or "").encode("utf-8", "replace")) or row is None \
            or row["status"] == "erasing":
        raise PermissionDenied("this unsubscribe link is not valid")
    return row


def withdraw(st, user_id: str, given: str, client_addr: str | None = None) -> bool:
    """Withdraw news consent for the account a valid link names, recording
    when, how, and an audit event. Returns False when it was off already."""
    row = check(st, user_id, given)
    with st.db.write() as c:
        row = uq.user_by_id(c, row["id"])
        if row is None or not row["consent_news"]:
            return False
        uq.update_user(c, row["id"], consent_news=False, consent_changed_us=meta.now_us(), consent_how="link")
        uq.audit(c, "news_consent_withdrawn", user_id=row["id"], actor="user", client_addr=client_addr,
                 detail={"how": "link"})
    log.info("news consent withdrawn with an unsubscribe link")
    return True
