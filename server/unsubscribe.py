"""The unsubscribe link of news mail, answered on the WebDAV port without a login.

    GET  /.well-known/coffer/unsubscribe?u=ID&t=TOKEN   a small page with a
                                                        confirm button (no script)
    POST the same URL                                   withdraws news consent (a mail
                                                        program's one-click, RFC 8058, too)

A GET changes nothing (mail scanners open links). A link whose token is not
this server's for that account gets 403 and changes nothing. The check and
the change are providers/consent.py; this module only speaks HTTP. The page
sends no referrer (the token is in its address) and may not be framed.
"""
from __future__ import annotations

import html
import logging
import time
from urllib.parse import parse_qs, urlencode

from providers import consent
from providers.errors import CofferError, PermissionDenied

log = logging.getLogger(__name__)
PATH = consent.PATH
METHODS = ("GET", "HEAD", "POST")
MAX_BODY = 4096
HEADERS = [("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"), ("X-Content-Type-Options", "nosniff"),
           ("Content-Security-Policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'")]
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>News email</title></head>
<body>
<h1>{title}</h1>
<p>{text}</p>
{form}</body></html>
"""
INVALID = ("This unsubscribe link is not valid, so nothing was changed. Use the link in your latest news "
           "email, or ask the administrator of this server.")


def serve(st, environ, start_response):
    """Answer a GET, HEAD or POST of PATH."""
    method = environ.get("REQUEST_METHOD", "")
    fields = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=8)
    if method == "POST":
        body = _read_body(environ)
        if body is None:
            return _reply(start_response, method, "413 Request Entity Too Large", "text/plain",
                          f"The form is limited to {MAX_BODY} bytes.")
        if "application/x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            for k, v in parse_qs(body.decode("latin-1"), max_num_fields=8).items():
                fields.setdefault(k, v)
    uid, token = (fields.get(k, [""])[0] for k in ("u", "t"))
    try:
        if method == "POST":
            changed = consent.withdraw(st, uid, token, environ.get("REMOTE_ADDR"))
            text = ("You will receive no more news by email from this server (recorded "
                    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})." if changed else
                    "News email was already off for this account: nothing changed.")
            return _page(start_response, method, "News email is off",
                         text + " Security notices about the account are still sent.")
        row = consent.check(st, uid, token)
    except PermissionDenied:
        return _reply(start_response, method, "403 Forbidden", "text/plain", INVALID)
    except CofferError as e:
        log.warning("unsubscribe link not answered: %s", type(e).__name__)
        return _reply(start_response, method, "503 Service Unavailable", "text/plain",
                      "The server cannot answer now; try the link again shortly.")
    if not row["consent_news"]:
        return _page(start_response, method, "News email is off",
                     "This account receives no news by email. Security notices are still sent.")
    action = html.escape(f"{PATH}?{urlencode({'u': uid, 't': token})}", quote=True)
    form = (f'<form method="post" action="{action}">\n<input type="hidden" name="List-Unsubscribe" '
            'value="One-Click">\n<button type="submit">Stop news email</button>\n</form>\n')
    return _page(start_response, method, "Stop news email?",
                 "Confirm, and this account will receive no more news by email from this server. "
                 "Security notices about the account are still sent.", form)


def _read_body(environ) -> bytes | None:
    """The request body, or None when it is longer than MAX_BODY."""
    length = environ.get("CONTENT_LENGTH", "").strip()
    try:
        n = int(length) if length else None
    except ValueError:
        n = MAX_BODY + 1
    if n is not None and (n < 0 or n > MAX_BODY):
        return None
    body = environ["wsgi.input"].read(MAX_BODY + 1 if n is None else n)
    return None if len(body) > MAX_BODY else body


def _page(start_response, method, title: str, text: str, form: str = ""):
    page = PAGE.format(title=html.escape(title), text=html.escape(text), form=form)
    return _reply(start_response, method, "200 OK", "text/html", page)


def _reply(start_response, method, status: str, kind: str, text: str):
    body = (text if text.endswith("\n") else text + "\n").encode("utf-8")
    start_response(status, [("Content-Type", f"{kind}; charset=utf-8"), ("Content-Length", str(len(body))),
                            *HEADERS])
    return [] if method == "HEAD" else [body]
