"""The web pages over HTTP, against a real `coffer serve`: who gets a page
and who keeps getting WebDAV, signing in and out, the files pages, and every
way a forged request must fail (no cookie, a forged or signed-out one, no
form token, a second account's addresses)."""
from __future__ import annotations

import hashlib
import os
import re

import pytest
from sqlalchemy import select

import web_client
from web_client import BROWSER, WebClient
from webdav_harness import CofferServer

ALICE, BOB, CAROL = ("alice", "alice-pw-1"), ("bob", "bob-pw-22"), ("carol", "carol-pw-333")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("web"), tls=False, accounts=dict([ALICE, BOB, CAROL])) as s:
        yield s


def account(srv, name, what=lambda st, name: st.accounts.get(name)):
    """What the storage core says of an account now (by default: its profile)."""
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config), upgrade=False)
    try:
        return what(st, name)
    finally:
        st.close()


def signed_in(srv, who=ALICE) -> WebClient:
    return web_client.signed_in(srv, who)


def test_webdav_clients_get_what_they_got(srv):
    """Clients without a browser's signs are WebDAV's: 401 without credentials, no redirect."""
    for agent in ("Microsoft-WebDAV-MiniRedir/10.0.19045", "davfs2/1.7.0 neon/0.32", "rclone/v1.68",
                  "curl/8.5.0", "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)",
                  "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; ms-office; MSOffice 16)"):
        status, headers, _ = srv.request("GET", "/", headers={"User-Agent": agent, "Accept": "*/*"}, user=None)
        assert status == 401, agent
        status, headers, _ = srv.request("GET", "/", headers={"User-Agent": agent, "Accept": "text/html"},
                                         user=None)
        assert status == 401, agent
    status, _, _ = srv.request("PROPFIND", "/", headers={"User-Agent": BROWSER, "Accept": "text/html",
                                                         "Depth": "0"}, user=None)
    assert status == 401
    status, _, _ = srv.request("PROPFIND", "/", headers={"Depth": "1"})
    assert status == 207
    status, _, _ = srv.request("GET", "/", headers={"User-Agent": BROWSER, "Accept": "text/html"})
    assert status != 303                       # with WebDAV credentials: WebDAV's answer


def test_a_browser_is_sent_to_the_pages(srv):
    web = WebClient(srv)
    status, headers, _ = web.get("/Docs/")
    assert status == 303 and headers["location"] == "/.web/files/Docs"
    status, headers, _ = web.get("/.web/files/")
    assert status == 303 and headers["location"].startswith("/.web/login?next=")
    status, headers, html = web.get("/.web/login")
    assert status == 200 and b'<label for="password">' in html and b'name="viewport"' in html
    assert "default-src 'self'" in headers["content-security-policy"]
    status, headers, css = web.get("/.web/static/coffer.css")
    assert status == 200 and headers["content-type"].startswith("text/css")


def test_sign_in_cookie_and_database(srv):
    web = WebClient(srv)
    _, _, html = web.get("/.web/login")
    status, headers, _ = web.post_form("/.web/login", {"name": "alice", "password": "wrong-one",
                                                       "csrf": web.csrf(html)})
    assert status == 401 and "coffer_web" not in web.cookies
    from providers import lifecycle
    failed = account(srv, "alice", lambda st, n: lifecycle.audit_events(st, n, event="login_failed"))
    assert [e["detail"] for e in failed][-1:] == [{"protocol": "web", "reason": "password"}]
    _, _, html = web.get("/.web/login")
    status, headers, _ = web.post_form("/.web/login?next=%2F.web%2Ffiles%2F", {
        "name": "alice", "password": ALICE[1], "csrf": web.csrf(html)})
    assert status == 303 and headers["location"] == "/.web/files/"
    cookie, = [c for c in web.set_cookies if c.startswith("coffer_web=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and "Max-Age=" in cookie
    token = web.cookies["coffer_web"]
    assert len(token) >= 40
    from providers import config
    from providers.meta.schema import web_sessions
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config), upgrade=False)
    try:
        with st.db.read() as c:
            rows = c.execute(select(web_sessions)).mappings().all()
    finally:
        st.close()
    assert hashlib.sha256(token.encode()).hexdigest() in {r["lookup"] for r in rows}
    assert all(token not in str(dict(r)) for r in rows)       # the cookie itself is never stored


def test_sign_in_needs_the_form_token(srv):
    web = WebClient(srv)
    web.get("/.web/login")
    status, _, _ = web.post_form("/.web/login", {"name": "alice", "password": ALICE[1], "csrf": "forged"})
    assert status == 403 and "coffer_web" not in web.cookies
    web = WebClient(srv)                  # no sign-in cookie at all (a cross-site form)
    status, _, _ = web.post_form("/.web/login", {"name": "alice", "password": ALICE[1], "csrf": "x" * 32})
    assert status == 403 and "coffer_web" not in web.cookies


def test_files_pages(srv):
    web = signed_in(srv)
    status, _, html = web.get("/.web/files/")
    assert status == 200
    csrf = web.csrf(html)
    status, headers, _ = web.post_form("/.web/files/", {"action": "mkdir", "name": "Photos"})
    assert status == 303
    status, _, _ = web.upload("/.web/files/Photos/", {"cat.jpg": b"meow" * 50_000, "dog.jpg": b"woof"}, csrf)
    assert status == 303
    status, _, data = srv.request("GET", "/Photos/cat.jpg")
    assert status == 200 and data == b"meow" * 50_000
    status, _, html = web.get("/.web/files/Photos/")
    assert b"cat.jpg" in html and b"dog.jpg" in html and b"200.0 KB" in html
    status, headers, data = web.get("/.web/files/Photos/dog.jpg")
    assert status == 200 and data == b"woof" and headers["content-disposition"].startswith("attachment")
    assert web.upload("/.web/files/Photos/", {"<script>x & 'q'.txt": b"html"}, csrf)[0] == 303
    _, _, html = web.get("/.web/files/Photos/")
    assert b"<script>" not in html and b"&lt;script&gt;x &amp; &#39;q&#39;.txt</a>" in html
    big = os.urandom(3 * 1024 * 1024 + 1)            # spans many reads and the store's chunks
    assert web.upload("/.web/files/Photos/", {"big.bin": big}, csrf)[0] == 303
    assert web.get("/.web/files/Photos/big.bin")[2] == big
    status, headers, data = web.send("HEAD", "/.web/files/Photos/cat.jpg")
    assert status == 200 and headers["content-length"] == "200000" and data == b""
    status, _, _ = web.post_form("/.web/files/Photos/", {"action": "delete", "name": "dog.jpg"})
    assert status == 303
    assert srv.request("GET", "/Photos/dog.jpg")[0] == 404
    status, _, html = web.get("/.web/trash/")
    assert status == 200 and b"/Photos/dog.jpg" in html
    at = re.search(rb'name="at" value="([^"]+)"', html).group(1).decode()
    assert web.post_form("/.web/trash/", {"at": at, "csrf": "0" * 64}, csrf=False)[0] == 403
    assert srv.request("GET", "/Photos/dog.jpg")[0] == 404
    status, headers, _ = web.post_form("/.web/trash/", {"at": at})
    assert status == 303 and headers["location"] == "/.web/trash/?done=back"
    assert srv.request("GET", "/Photos/dog.jpg")[2] == b"woof"
    status, _, html = web.get("/.web/files/Photos/?rename=cat.jpg")
    assert b'id="new-name"' in html
    status, headers, _ = web.post_form("/.web/files/Photos/", {"action": "rename", "name": "cat.jpg",
                                                                "new": "kitten.jpg"})
    assert status == 303 and headers["location"].endswith("?done=renamed")
    assert srv.request("GET", "/Photos/kitten.jpg")[2] == b"meow" * 50_000
    assert srv.request("GET", "/Photos/cat.jpg")[0] == 404
    status, _, html = web.post_form("/.web/files/Photos/", {"action": "rename", "name": "kitten.jpg",
                                                            "new": "big.bin"})
    assert status == 409 and srv.request("GET", "/Photos/kitten.jpg")[0] == 200
    status, _, html = web.get("/.web/files/Nope/")
    assert status == 404 and b"does not exist" in html and b"Traceback" not in html
    status, _, html = web.post_form("/.web/files/", {"action": "mkdir", "name": "Photos"})
    assert status == 409 and b"already there" in html


def _state_changes(csrf):
    """Every state-changing request of the pages, as (path, form)."""
    return [("/.web/files/", {"action": "mkdir", "name": "Forged", "csrf": csrf}),
            ("/.web/files/", {"action": "rename", "name": "Keep", "new": "Forged", "csrf": csrf}),
            ("/.web/files/", {"action": "delete", "name": "Keep", "csrf": csrf}),
            ("/.web/files/", {"action": "move", "name": "Keep", "to": "/Forged", "csrf": csrf}),
            ("/.web/past/2026-01-01T00-00-00Z/", {"name": "Keep", "csrf": csrf}),
            ("/.web/versions/Keep/k.txt", {"version": "1", "csrf": csrf}),
            ("/.web/profile/", {"action": "profile", "first_name": "Forged", "csrf": csrf}),
            ("/.web/profile/", {"action": "news", "news": "on", "csrf": csrf}),
            ("/.web/profile/", {"action": "password", "current": ALICE[1], "new": "forged-pw-1",
                                "again": "forged-pw-1", "csrf": csrf}),
            ("/.web/trash/", {"at": "/.coffer/trash/x/Keep", "csrf": csrf}),
            ("/.web/trash/", {"at": "/.coffer/trash/x/Keep", "action": "purge", "csrf": csrf}),
            ("/.web/shares/", {"action": "grant", "folder": "/Keep", "account": "bob", "permission": "write",
                               "csrf": csrf}),
            ("/.web/security/", {"action": "totp-begin", "csrf": csrf}),
            ("/.web/security/", {"action": "app-create", "label": "Forged", "scope": "full", "csrf": csrf}),
            ("/.web/security/", {"action": "session-end", "id": "1", "csrf": csrf}),
            ("/.web/security/", {"action": "app-revoke", "id": "1", "csrf": csrf}),
            ("/.web/logout", {"csrf": csrf})]


def test_forged_requests_change_nothing(srv):
    srv.request("MKCOL", "/Keep")
    srv.request("PUT", "/Keep/k.txt", body=b"one")
    srv.request("PUT", "/Keep/k.txt", body=b"two")
    web = signed_in(srv)
    _, _, html = web.get("/.web/files/")
    good = web.csrf(html)
    token = web.cookies["coffer_web"]

    attempts = []
    nobody = WebClient(srv)                                       # no cookie
    attempts += [(nobody, p, f) for p, f in _state_changes(good)]
    forged = WebClient(srv)
    forged.cookies["coffer_web"] = "A" * 43                       # a made-up cookie
    attempts += [(forged, p, f) for p, f in _state_changes(good)]
    attempts += [(web, p, {k: v for k, v in f.items() if k != "csrf"}) for p, f in _state_changes(good)]
    attempts += [(web, p, dict(f, csrf="0" * 64)) for p, f in _state_changes(good)]
    for client, path, form in attempts:
        status, _, _ = client.post_form(path, form, csrf=False)
        assert status in (403, 303) and status != 200, (path, form)
        if status == 303:          # only the sign-out of a client that has no session: sent to sign in
            assert path == "/.web/logout" and client is not web
    status, _, _ = web.upload("/.web/files/", {"forged.txt": b"x"}, None)
    assert status == 403
    status, _, _ = web.upload("/.web/files/", {"forged.txt": b"x"}, "0" * 64)
    assert status == 403
    assert srv.request("PROPFIND", "/Forged", headers={"Depth": "0"})[0] == 404
    assert srv.request("GET", "/forged.txt")[0] == 404
    assert srv.request("GET", "/Keep/k.txt")[2] == b"two"
    alice = account(srv, "alice")
    assert alice.first_name != "Forged" and not alice.consent_news
    apps, totp = account(srv, "alice", lambda st, n: (st.apps.list(st.accounts.get(n).id),
                                                      st.totp.state(st.accounts.get(n).id)))
    assert apps == [] and not totp["on"] and not totp["pending"]
    assert srv.request("PROPFIND", "/", headers={"Depth": "0"})[0] == 207     # the password is unchanged
    assert srv.request("PROPFIND", "/Shared/alice", headers={"Depth": "0"}, user="bob")[0] == 404   # not shared
    assert web.get("/.web/files/")[0] == 200                     # still signed in

    other_site = web.send("POST", "/.web/files/", f"action=mkdir&name=Forged&csrf={good}".encode(),
                          {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
    assert other_site[0] == 403
    assert srv.request("PROPFIND", "/Forged", headers={"Depth": "0"})[0] == 404

    status, headers, _ = web.post_form("/.web/logout", {"csrf": good}, csrf=False)
    assert status == 303 and "coffer_web" not in web.cookies
    old = WebClient(srv)
    old.cookies["coffer_web"] = token                             # the signed-out cookie, replayed
    assert old.get("/.web/files/")[0] == 303
    for path, form in _state_changes(good):
        assert old.post_form(path, form, csrf=False)[0] in (403, 303)
    assert srv.request("PROPFIND", "/Forged", headers={"Depth": "0"})[0] == 404


MAIN_PAGES = ("/.web/files/", "/.web/trash/", "/.web/shares/", "/.web/profile/", "/.web/account/",
              "/.web/connect/", "/.web/security/", "/.web/past/")


def test_pages_load_nothing_from_elsewhere_and_an_expired_session_opens_nothing(srv):
    """Every main page carries the strict policy and names no resource of
    another site; a session past its expiry (in the database, as every
    worker sees it) opens no page and changes nothing, while bob's own
    session carries on."""
    from sqlalchemy import update

    from providers.meta.schema import web_sessions
    web, bob = signed_in(srv), signed_in(srv, BOB)
    for page in MAIN_PAGES:
        status, headers, html = web.get(page)
        assert status == 200, page
        policy = headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "*" not in policy
        loaded = re.findall(rb'(?:src|href|action)="([^"]+)"', html)
        assert loaded and all(not re.match(rb"(?i)(https?:)?//", u) for u in loaded), (page, loaded)
    lookup = hashlib.sha256(web.cookies["coffer_web"].encode()).hexdigest()

    def expire(st, _name):
        with st.db.write() as c:
            c.execute(update(web_sessions).where(web_sessions.c.lookup == lookup).values(expires_us=1))
    account(srv, "alice", expire)
    for page in MAIN_PAGES:
        status, headers, _ = web.get(page)
        assert status == 303 and headers["location"].startswith("/.web/login"), page
    for path, form in _state_changes(web.csrf(bob.get("/.web/files/")[2])):
        assert web.post_form(path, form, csrf=False)[0] in (403, 303)
    assert srv.request("PROPFIND", "/Forged", headers={"Depth": "0"})[0] == 404
    assert bob.get("/.web/files/")[0] == 200


def test_a_second_account_never_sees_the_first(srv):
    srv.request("PUT", "/alice-only.txt", body=b"private")
    srv.request("PUT", "/alice-gone.txt", body=b"deleted")
    srv.request("DELETE", "/alice-gone.txt")
    assert b"alice-gone" in signed_in(srv, ALICE).get("/.web/trash/")[2]
    web = signed_in(srv, BOB)
    status, _, html = web.get("/.web/files/")
    assert status == 200 and b"alice-only" not in html
    assert b"alice-gone" not in web.get("/.web/trash/")[2]
    for path in ("/.web/files/alice-only.txt", "/.web/versions/alice-only.txt", "/.web/files/Photos/"):
        status, _, body = web.get(path)
        assert status == 404 and b"private" not in body, path


def test_deleting_for_good_from_the_trash(srv):
    """Delete for good asks once more, then takes the file and its old
    versions; a second account posting the first's trash entry purges
    nothing, and another deleted file stays restorable."""
    for body in (b"draft one", b"draft two"):
        srv.request("PUT", "/drafts.txt", body=body)
    srv.request("DELETE", "/drafts.txt")
    srv.request("PUT", "/keep-me.txt", body=b"keep")
    srv.request("DELETE", "/keep-me.txt")
    web = signed_in(srv, ALICE)
    html = web.get("/.web/trash/")[2]
    at = re.search(rb'name="at" value="([^"]*drafts.txt[^"]*)"', html).group(1).decode()
    assert signed_in(srv, BOB).post_form("/.web/trash/", {"at": at, "action": "purge"})[0] == 404
    status, _, html = web.post_form("/.web/trash/", {"at": at, "action": "purge-ask"})
    assert status == 200 and b"Delete /drafts.txt for good?" in html and b"cannot be put back" in html
    assert b"/drafts.txt" in web.get("/.web/trash/")[2]              # asking changed nothing
    trash_folder = "/" + at.strip("/").rsplit("/", 1)[0] + "/"          # as WebDAV lists the trash
    assert b"drafts.txt" in srv.request("PROPFIND", trash_folder, headers={"Depth": "1"})[2]
    status, headers, _ = web.post_form("/.web/trash/", {"at": at, "action": "purge"})
    assert status == 303 and headers["location"] == "/.web/trash/?done=purged"
    html = web.get("/.web/trash/?done=purged")[2]
    assert b"/drafts.txt" not in html and b"Deleted for good" in html and b"/keep-me.txt" in html
    assert b"drafts.txt" not in srv.request("PROPFIND", trash_folder, headers={"Depth": "1"})[2]
    keep = re.search(rb'name="at" value="([^"]*keep-me.txt[^"]*)"', html).group(1).decode()
    assert web.post_form("/.web/trash/", {"at": keep})[0] == 303
    assert srv.request("GET", "/keep-me.txt")[2] == b"keep"


def test_password_change_ends_sessions(srv):
    web = signed_in(srv, BOB)
    assert web.get("/.web/files/")[0] == 200
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config), upgrade=False)
    try:
        st.accounts.set_password("bob", "bob-new-pw-33")
        assert web.get("/.web/files/")[0] == 303
        st.accounts.set_password("bob", BOB[1])
    finally:
        st.close()


def test_private_account_asks_again_on_a_fresh_process(tmp_path):
    """A private account's keys are never stored: a worker that did not see
    the password (here: the server restarted) asks for it again."""
    srv = CofferServer(tmp_path / "srv", tls=False, modes={"alice": "private"}, accounts={"alice": ALICE[1]},
                       extra="[server]\nworkers = 1\n")
    with srv:
        web = signed_in(srv)
        assert web.get("/.web/files/")[0] == 200
        status, _, html = web.post_form("/.web/profile/", {"action": "password", "current": ALICE[1],
                                                           "new": "alice-new-pw-2", "again": "alice-new-pw-2"})
        assert status == 200
        code = re.search(rb'<code id="recovery-code">([0-9A-F-]+)</code>', html)
        assert code and len(code.group(1)) == 6 * 6 + 5          # shown once, to write down
        assert web.get("/.web/files/")[0] == 200
    srv.accounts = {}
    with srv:
        status, headers, _ = web.get("/.web/files/")
        assert status == 303 and "again=1" in headers["location"]
        status, _, html = web.get(headers["location"])
        assert b"has not\nseen it yet" in html or b"has not seen it yet" in html
        _, _, html = web.get("/.web/login")
        assert web.post_form("/.web/files/", {"action": "mkdir", "name": "X", "csrf": "0" * 64},
                             csrf=False)[0] == 403
        status, _ = web.sign_in("alice", "alice-new-pw-2")
        assert status == 303
        assert web.get("/.web/files/")[0] == 200


def test_my_profile(srv):
    web = signed_in(srv, CAROL)
    status, _, html = web.get("/.web/profile/")
    assert status == 200 and b"carol" in html and b"basic" in html and b"Space used" in html
    status, headers, _ = web.post_form("/.web/profile/", {"action": "profile", "first_name": "Carol",
                                                          "last_name": "Example", "email": "carol@example.org"})
    assert status == 303 and headers["location"] == "/.web/profile/?done=saved"
    status, _, html = web.post_form("/.web/profile/", {"action": "profile", "email": "not an address"})
    assert status == 400 and b"not an email address" in html
    carol = account(srv, "carol")
    assert (carol.first_name, carol.last_name, carol.email) == ("Carol", "Example", "carol@example.org")
    assert web.post_form("/.web/profile/", {"action": "news", "news": "on"})[0] == 303
    carol = account(srv, "carol")
    assert carol.consent_news and carol.consent_how == "web"
    assert web.post_form("/.web/profile/", {"action": "news"})[0] == 303
    assert not account(srv, "carol").consent_news

    old_token = web.cookies["coffer_web"]
    status, _, html = web.post_form("/.web/profile/", {"action": "password", "current": "wrong-pw-1",
                                                       "new": "carol-new-pw-4", "again": "carol-new-pw-4"})
    assert status == 403 and b"current password is wrong" in html
    status, _, html = web.post_form("/.web/profile/", {"action": "password", "current": CAROL[1],
                                                       "new": "carol-new-pw-4", "again": "carol-new-pw-5"})
    assert status == 400 and b"differ" in html
    status, _, html = web.post_form("/.web/profile/", {"action": "password", "current": CAROL[1],
                                                       "new": "short", "again": "short"})
    assert status == 400 and b"at least 8 characters" in html
    assert srv.request("PROPFIND", "/", headers={"Depth": "0"}, user="carol")[0] == 207
    status, _, html = web.post_form("/.web/profile/", {"action": "password", "current": CAROL[1],
                                                       "new": "carol-new-pw-4", "again": "carol-new-pw-4"})
    assert status == 200 and b"password is changed" in html
    assert web.cookies["coffer_web"] != old_token
    assert web.get("/.web/files/")[0] == 200                     # the new session goes on
    stale = WebClient(srv)
    stale.cookies["coffer_web"] = old_token
    assert stale.get("/.web/files/")[0] == 303                   # the old one ended
    srv.accounts["carol"] = "carol-new-pw-4"
    assert srv.request("PROPFIND", "/", headers={"Depth": "0"}, user="carol")[0] == 207


def test_the_login_guard_holds_on_the_pages(tmp_path):
    """Guessing passwords on the sign-in page meets the same guard as WebDAV."""
    with CofferServer(tmp_path / "srv", tls=False, accounts=dict([ALICE])) as srv:
        web = WebClient(srv)
        statuses = []
        for i in range(12):
            _, _, html = web.get("/.web/login")
            status, _, body = web.post_form("/.web/login", {"name": "alice", "password": f"guess-{i}",
                                                            "csrf": web.csrf(html)})
            statuses.append(status)
            if status == 429:
                assert b"Too many failed sign-ins" in body
                break
        assert statuses[-1] == 429, statuses
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"}, user="alice")[0] in (207, 401)


def test_cookie_over_tls(tmp_path):
    with CofferServer(tmp_path / "srv", tls=True, accounts=dict([ALICE])) as srv:
        web = WebClient(srv)
        _, _, html = web.get("/.web/login")
        status, headers, _ = web.post_form("/.web/login", {"name": "alice", "password": ALICE[1],
                                                           "csrf": web.csrf(html)})
        assert status == 303
        cookie, = [c for c in web.set_cookies if "coffer_web" in c]
        assert cookie.startswith("__Host-coffer_web=") and "; Secure" in cookie and "HttpOnly" in cookie
        assert web.get("/.web/files/")[0] == 200


def test_sharing_pages(srv):
    srv.request("MKCOL", "/Team")
    srv.request("PUT", "/Team/plan.txt", body=b"the plan")
    alice, bob = signed_in(srv, ALICE), signed_in(srv, BOB)
    status, _, html = alice.get("/.web/files/")
    assert b"/.web/shares/?folder=%2FTeam" in html
    status, headers, _ = alice.post_form("/.web/shares/", {"action": "grant", "folder": "/Team", "account": "bob",
                                                           "permission": "read"})
    assert status == 303
    status, _, html = alice.get("/.web/shares/")
    assert b"/Team" in html and b"bob" in html
    status, _, html = bob.get("/.web/shares/")
    assert b"/Shared/alice/Team" in html
    status, _, html = bob.get("/.web/files/Shared/alice/Team/")
    assert status == 200 and b"plan.txt" in html
    assert bob.get("/.web/files/Shared/alice/Team/plan.txt")[2] == b"the plan"
    _, _, html = bob.get("/.web/files/Shared/alice/Team/")
    status, _, html = bob.upload("/.web/files/Shared/alice/Team/", {"bob.txt": b"x"}, bob.csrf(html))
    assert status == 403 and b"read-only for you" in html
    status, _, html = bob.post_form("/.web/files/Shared/alice/Team/", {"action": "delete", "name": "plan.txt"})
    assert status == 403
    assert srv.request("GET", "/Team/plan.txt")[2] == b"the plan"
    status, _, _ = alice.post_form("/.web/shares/", {"action": "revoke", "folder": "/Team", "account": "bob"})
    assert status == 303
    assert b"Team" not in bob.get("/.web/shares/")[2]
    assert bob.get("/.web/files/Shared/alice/Team/")[0] == 404


def test_workers_close_what_ended_elsewhere(srv):
    """A worker's maintenance closes the filesystems of sessions that ended
    on another worker (signed out, password changed), and keeps live ones."""
    from providers import config
    from providers.storage import Storage
    from providers.web_sessions import lookup_of
    from server.web import WebPages
    st = Storage.open(config.load(srv.config), upgrade=False)
    try:
        user = st.accounts.get("bob")
        gen = st.account_generation("bob")
        kept, signed_out, changed = (st.web_sessions.create(user.id, gen) for _ in range(3))
        pages = WebPages(st, tls=False)
        opened = {}
        for token in (kept, signed_out, changed):
            opened[token] = st.open_account("bob", BOB[1], protocol="web")
            pages.opened.put(lookup_of(token), opened[token])
        st.web_sessions.end(signed_out)
        pages.maintain()
        assert pages.opened.get(lookup_of(signed_out)) is None
        assert pages.opened.get(lookup_of(kept)) is opened[kept]
        st.accounts.set_password("bob", "bob-other-pw-9")
        pages.maintain()
        assert pages.opened.lookups() == []
        assert st.web_sessions.find(kept) is None
        st.accounts.set_password("bob", BOB[1])
        pages.close()
    finally:
        st.close()


def _versions_of(srv, path, who="alice"):
    """How many versions the core keeps of a file (from /.coffer over WebDAV)."""
    status, _, body = srv.request("PROPFIND", "/.coffer/versions" + path, headers={"Depth": "1"}, user=who)
    assert status == 207, status
    return body.count(b"<d:response>") + body.count(b"<D:response>") - 1


def test_upload_past_the_quota_saves_nothing(tmp_path):
    """A file bigger than the space left is refused in the middle of its
    upload: 507 with a sentence, nothing half-written, the earlier version
    current; what was left of the request is read so the answer arrives."""
    MB = 1024 * 1024
    with CofferServer(tmp_path / "srv", tls=False, accounts=dict([ALICE]), quotas={"alice": 3 * MB}) as srv:
        web = signed_in(srv)
        csrf = web.csrf(web.get("/.web/files/")[2])
        assert web.upload("/.web/files/", {"keep.bin": b"old" * 1000}, csrf)[0] == 303
        before = account(srv, "alice", lambda st, n: st.open_account(n, ALICE[1]).quota().used)
        kept = _versions_of(srv, "/keep.bin")
        for headers in ({}, {"X-Coffer-Upload": "1"}):          # the plain form, and the page's script
            status, _, html = web.upload("/.web/files/", {"keep.bin": os.urandom(8 * MB)}, csrf, headers)
            assert status == 507, status
            assert b"Your space is full, so nothing of keep.bin was saved" in html and b"Traceback" not in html
            assert srv.request("GET", "/keep.bin")[2] == b"old" * 1000
            assert _versions_of(srv, "/keep.bin") == kept
            assert account(srv, "alice", lambda st, n: st.open_account(n, ALICE[1]).quota().used) == before
        status, _, html = web.upload("/.web/files/", {"small.txt": b"fits", "big.bin": os.urandom(8 * MB)}, csrf)
        assert status == 507 and b"Saved before it: small.txt." in html
        assert srv.request("GET", "/big.bin")[0] == 404 and srv.request("GET", "/small.txt")[2] == b"fits"
        status, _, html = web.upload("/.web/files/", {"big.bin": os.urandom(8 * MB)}, "0" * 64,
                                     {"X-Coffer-Upload": "1"})
        assert status == 403 and b"security token is missing or out of date" in html
        assert web.upload("/.web/files/", {}, csrf, {"X-Coffer-Upload": "check"})[0] == 204
        assert web.upload("/.web/files/", {}, "0" * 64, {"X-Coffer-Upload": "check"})[0] == 403
        assert WebClient(srv).upload("/.web/files/", {}, csrf, {"X-Coffer-Upload": "check"})[0] == 403
        status, _, body = web.upload("/.web/files/", {"next.txt": b"ok"}, csrf, {"X-Coffer-Upload": "1"})
        assert status == 200 and body == b"Uploaded."
        status, _, js = web.get("/.web/static/upload.js")
        assert status == 200 and b"upload.onprogress" in js


def test_move_between_folders(srv):
    for path in ("/Move", "/Move/From", "/Move/To"):
        srv.request("MKCOL", path)
    srv.request("PUT", "/Move/From/m.txt", body=b"moving")
    web = signed_in(srv)
    status, _, html = web.get("/.web/files/Move/From/?move=m.txt")
    assert status == 200 and b'id="move-to"' in html and b'<option value="/Move/To"' in html
    status, headers, _ = web.post_form("/.web/files/Move/From/", {"action": "move", "name": "m.txt", "to": "/Move/To"})
    assert status == 303 and headers["location"].endswith("?done=moved")
    assert srv.request("GET", "/Move/To/m.txt")[2] == b"moving" and srv.request("GET", "/Move/From/m.txt")[0] == 404
    _, _, html = web.get("/.web/files/Move/?move=From")
    assert b'value="/Move/From"' not in html and b'value="/Move/To"' in html     # never into itself
    assert web.post_form("/.web/files/Move/", {"action": "move", "name": "From", "to": "/Move/From"})[0] == 409
    assert web.post_form("/.web/files/Move/", {"action": "move", "name": "From", "to": "/Move/To"})[0] == 303
    assert srv.request("PROPFIND", "/Move/To/From", headers={"Depth": "0"})[0] == 207
    srv.request("PUT", "/Move/m.txt", body=b"other")
    status, _, html = web.post_form("/.web/files/Move/", {"action": "move", "name": "m.txt", "to": "/Move/To"})
    assert status == 409 and b"already there" in html and srv.request("GET", "/Move/To/m.txt")[2] == b"moving"
    assert web.post_form("/.web/files/Move/", {"action": "move", "name": "m.txt", "to": "nowhere"})[0] == 400
    assert web.post_form("/.web/files/Move/", {"action": "move", "name": "m.txt", "to": "/Move/To",
                                              "csrf": "0" * 64}, csrf=False)[0] == 403


def test_the_tree_as_it_was(srv):
    import time as _time
    srv.request("MKCOL", "/Past")
    srv.request("PUT", "/Past/p.txt", body=b"then")
    _time.sleep(1.1)
    then = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime())
    _time.sleep(1.1)
    srv.request("PUT", "/Past/p.txt", body=b"now")
    srv.request("PUT", "/Past/new.txt", body=b"new")
    web = signed_in(srv)
    status, _, html = web.get("/.web/past/?path=%2FPast")
    assert status == 200 and b'type="datetime-local"' in html and b"Times with changes" in html
    status, headers, _ = web.get("/.web/past/?path=%2FPast&at=" + then)
    assert status == 303
    folder = headers["location"]
    assert folder.startswith("/.web/past/") and folder.endswith("/Past/")
    status, _, html = web.get(folder)
    assert status == 200 and b"p.txt" in html and b"new.txt" not in html
    status, _, data = web.get(folder + "p.txt")
    assert status == 200 and data == b"then"
    assert web.get(folder + "new.txt")[0] == 404
    status, headers, _ = web.post_form(folder, {"name": "p.txt"})
    assert status == 303 and headers["location"].endswith("?done=restored")
    assert srv.request("GET", "/Past/p.txt")[2] == b"then"
    srv.request("DELETE", "/Past")
    top = folder[:-len("Past/")]
    assert web.post_form(top, {"name": "Past"})[0] == 303          # a whole folder, as it was
    assert srv.request("GET", "/Past/p.txt")[2] == b"then" and srv.request("GET", "/Past/new.txt")[0] == 404
    assert web.post_form(top, {"name": "Past", "csrf": "0" * 64}, csrf=False)[0] == 403
    assert web.get("/.web/past/?at=yesterday")[0] == 400
    assert web.get("/.web/past/2999-01-01T00-00-00Z/")[0] == 400

    bob = signed_in(srv, BOB)                                      # a second account sees its own past only
    status, _, html = bob.get(top)
    assert status == 200 and b"Past" not in html
    assert bob.get(folder)[0] == 404 and bob.get(folder + "p.txt")[0] == 404
    assert bob.post_form(top, {"name": "Past"})[0] == 404
    assert srv.request("PROPFIND", "/Past", headers={"Depth": "0"}, user="bob")[0] == 404


def test_a_read_only_collaborator_cannot_move_or_restore(srv):
    srv.request("MKCOL", "/Ro")
    srv.request("PUT", "/Ro/r.txt", body=b"one")
    srv.request("PUT", "/Ro/r.txt", body=b"two")
    alice, bob = signed_in(srv, ALICE), signed_in(srv, BOB)
    assert alice.post_form("/.web/shares/", {"action": "grant", "folder": "/Ro", "account": "bob",
                                             "permission": "read"})[0] == 303
    srv.request("PUT", "/bob-own.txt", body=b"bob's", user="bob")
    base = "/.web/files/Shared/alice/Ro/"
    assert bob.post_form(base, {"action": "move", "name": "r.txt", "to": "/"})[0] == 403
    assert bob.post_form("/.web/files/", {"action": "move", "name": "bob-own.txt",
                                          "to": "/Shared/alice/Ro"})[0] == 403
    assert b'id="move-to"' not in bob.get(base + "?move=r.txt")[2]
    _, _, html = bob.get("/.web/versions/Shared/alice/Ro/r.txt")
    first = re.findall(rb'name="version" value="(\d+)"', html)
    vid = first[-1].decode() if first else "1"
    assert bob.post_form("/.web/versions/Shared/alice/Ro/r.txt", {"version": vid},
                         page="/.web/files/")[0] == 403
    assert srv.request("GET", "/Ro/r.txt")[2] == b"two"
    assert srv.request("GET", "/bob-own.txt", user="bob")[2] == b"bob's"
    assert srv.request("GET", "/Ro/bob-own.txt")[0] == 404


def test_stored_basic_credentials_get_webdav(srv):
    """A browser that keeps Basic credentials for the WebDAV address sends
    them on every request: those requests get WebDAV's answers, also under
    /.web/ (a folder of one's own named .web stays reachable)."""
    srv.request("MKCOL", "/.web")
    srv.request("PUT", "/.web/notes.txt", body=b"mine")
    h = {"User-Agent": BROWSER, "Accept": "text/html,application/xhtml+xml"}
    status, headers, body = srv.request("GET", "/.web/notes.txt", headers=h)
    assert status == 200 and body == b"mine"
    status, headers, _ = srv.request("GET", "/.web/files/", headers=h)
    assert status == 404 and "set-cookie" not in headers
    status, headers, _ = srv.request("GET", "/Docs/", headers=h)
    assert status != 303 and "location" not in headers
    status, _, _ = srv.request("GET", "/.web/files/", headers=h, user=None)
    assert status == 303


def test_a_collaborator_moves_within_the_shared_folder_only(srv):
    for path in ("/Rw", "/Rw/A", "/Rw/B", "/Private"):
        srv.request("MKCOL", path)
    srv.request("PUT", "/Rw/A/f.txt", body=b"shared")
    alice, bob = signed_in(srv, ALICE), signed_in(srv, BOB)
    assert alice.post_form("/.web/shares/", {"action": "grant", "folder": "/Rw", "account": "bob",
                                             "permission": "write"})[0] == 303
    status, _, html = bob.get("/.web/files/Shared/alice/Rw/A/?move=f.txt")
    assert status == 200 and b'<option value="/Shared/alice/Rw/B"' in html
    assert b"Private" not in html and b"This folder as it was" not in html    # alice's own tree stays hers
    status, _, _ = bob.post_form("/.web/files/Shared/alice/Rw/A/", {"action": "move", "name": "f.txt",
                                                                   "to": "/Shared/alice/Rw/B"})
    assert status == 303 and srv.request("GET", "/Rw/B/f.txt")[2] == b"shared"
    status, _, html = bob.post_form("/.web/files/Shared/alice/Rw/B/", {"action": "move", "name": "f.txt",
                                                                      "to": "/Private"})
    assert status == 404 and b"does not exist" in html             # bob's /Private: he has none; alice's is hers
    assert srv.request("GET", "/Private/f.txt")[0] == 404 and srv.request("GET", "/Rw/B/f.txt")[2] == b"shared"
