"""Sharing, in a browser: the folders the account opens to others (with
whom, read or write; take one back) and those others open to it. The
grants are the filesystem API's (`share_grant`, `share_revoke`,
`share_list`: the calls SFTP's `share` command makes), with the same
answer whether or not a name is an account (nobody learns which exist)."""
from __future__ import annotations

from providers import errors
from . import web_forms
from .web import core_error, redirect, refuse, render, url

NOTES = {"granted": "Shared. The other account finds it under /Shared/ with your name, if it exists.",
         "revoked": "Taken back: that account no longer reaches the folder."}


def shares(web, visit, environ, method, path):
    vfs = visit.vfs
    here = url("shares") + "/"
    if method == "POST":
        web.check_origin(environ)
        form = web_forms.small_form(environ)
        web.check_csrf(visit, form.get("csrf"))
        folder, who = form.get("folder", "").strip(), form.get("account", "").strip()
        if not folder.startswith("/") or not who:
            raise refuse("400 Bad Request", "That did not work", "Give a folder (starting with /) and an account "
                         "name.", back=here)
        try:
            if form.get("action") == "grant":
                vfs.share_grant(folder, who, form.get("permission", ""), disclose=False)
                raise redirect(here + "?done=granted")
            if form.get("action") == "revoke":
                vfs.share_revoke(folder, who, disclose=False)
                raise redirect(here + "?done=revoked")
        except errors.CofferError as e:
            raise core_error(e, here)
        raise refuse("400 Bad Request", "That did not work", "This page does not know that action.", back=here)
    try:
        found = vfs.share_list()
    except errors.CofferError as e:
        raise core_error(e, url("files") + "/")
    q = web_forms.query(environ)
    received = [dict(r, link=url("files", r["folder"]) + "/") for r in found["received"]]
    return render("200 OK", "shares.html", title="Sharing", shared=found["shared"], received=received,
                  folder=q.get("folder", ""), action=here, csrf=visit.csrf, signed_in=True,
                  note=NOTES.get(q.get("done", ""), ""))
