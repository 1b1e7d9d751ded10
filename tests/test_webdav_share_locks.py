"""WebDAV locks against a real `coffer serve`, driven with curl, with a
second account: locks in a shared folder survive the key rotation of a
revocation and stay enforced (never a 500), and a lock holds for every
Unicode spelling of its path (NFD as macOS sends it, NFC as Windows does)."""
from __future__ import annotations

import unicodedata
from urllib.parse import quote

import pytest

from test_webdav_curl import Curl, header
from webdav_harness import CofferServer

pytestmark = [pytest.mark.clients]

ACCOUNTS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-333"}
TEAM = "/Team Room"                        # a space: every path below is quoted on the wire
BOBS = "/Shared/alice/Team Room"           # the same folder as bob sees it
LOCK_BODY = ('<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             '</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>')


class Server(CofferServer):
    def prepare(self):
        super().prepare()
        from providers import config
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            a = st.open_account("alice", ACCOUNTS["alice"])
            a.makedirs(TEAM)
            for name in ("doc.txt", "bob.txt", "carol.txt", "Café.txt"):
                a.write_bytes(f"{TEAM}/{name}", b"v1 of " + name.encode())
            a.write_bytes("/Résumé.txt", b"alice's")
            a.share_grant(TEAM, "bob", "write")
            a.share_grant(TEAM, "carol", "write")
            a.close()
        finally:
            st.close()

    def as_alice(self, fn):
        from providers import config
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            a = st.open_account("alice", ACCOUNTS["alice"])
            try:
                return fn(a)
            finally:
                a.close()
        finally:
            st.close()

    def revoke(self, folder: str, who: str):
        self.as_alice(lambda a: a.share_revoke(folder, who))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("share-locks"), tls=False, accounts=ACCOUNTS) as srv:
        yield srv


def q(path: str) -> str:
    return quote(path)


def lock(curl, path):
    code, h, body = curl("LOCK", q(path), "-H", "Timeout: Second-600", "-H", "Depth: 0",
                         "-H", "Content-Type: text/xml", data=LOCK_BODY)
    return code, (header(h, "Lock-Token") or "").strip()


def dest(server, path):
    return ["-H", f"Destination: {server.url.rstrip('/')}{q(path)}", "-H", "Overwrite: F"]


def test_locks_stay_enforced_after_a_revocation_rotates_the_folder_key(server):
    alice, bob, carol = Curl(server, "alice"), Curl(server, "bob"), Curl(server, "carol")
    doc, bobs_doc = f"{TEAM}/doc.txt", f"{BOBS}/doc.txt"
    code, token = lock(alice, doc)
    assert code == 200 and token.startswith("<opaquelocktoken:")
    code, bob_token = lock(bob, f"{BOBS}/bob.txt")
    assert code == 200 and bob_token
    code, carol_token = lock(carol, f"{BOBS}/carol.txt")
    assert code == 200 and carol_token
    # before the revocation, as a baseline: bob is held off alice's lock
    assert bob("PUT", q(bobs_doc), data=b"bob's")[0] == 423

    server.revoke(TEAM, "carol")            # rotates the folder key

    # someone else's lock: 423 for every kind of change, never a 500
    assert bob("PUT", q(bobs_doc), data=b"bob's")[0] == 423
    assert lock(bob, bobs_doc)[0] == 423
    assert bob("DELETE", q(bobs_doc))[0] == 423
    assert bob("MOVE", q(bobs_doc), *dest(server, f"{BOBS}/moved.txt"))[0] == 423
    assert bob("DELETE", q(BOBS + "/"))[0] in (403, 423)        # the folder holds a lock (and is alice's)
    assert bob("UNLOCK", q(bobs_doc), "-H", f"Lock-Token: {token}")[0] == 403
    assert bob("GET", q(bobs_doc))[2] == b"v1 of doc.txt"
    # the owner's other clients without the token are held off too
    assert alice("PUT", q(doc), data=b"no token")[0] == 423
    # the lock holder works with its token
    assert alice("PUT", q(doc), "-H", f"If: ({token})", data=b"v2 by alice")[0] == 204
    assert alice("LOCK", q(doc), "-H", f"If: ({token})", "-H", "Timeout: Second-300")[0] == 200   # refresh
    assert alice("MOVE", q(doc), "-H", f"If: ({token})", *dest(server, f"{TEAM}/doc2.txt"))[0] == 201
    assert bob("GET", q(f"{BOBS}/doc2.txt"))[2] == b"v2 by alice"
    # bob's own lock, taken before the rotation, is his and still holds alice off
    assert alice("PUT", q(f"{TEAM}/bob.txt"), data=b"alice's")[0] == 423
    assert bob("PUT", q(f"{BOBS}/bob.txt"), "-H", f"If: ({bob_token})", data=b"bob's")[0] == 204
    assert bob("UNLOCK", q(f"{BOBS}/bob.txt"), "-H", f"Lock-Token: {bob_token}")[0] == 204
    assert alice("PUT", q(f"{TEAM}/bob.txt"), data=b"alice's")[0] == 204
    # carol can no longer write there, so her lock holds nobody off any more
    assert alice("PUT", q(f"{TEAM}/carol.txt"), data=b"after carol")[0] == 204
    # a second rotation with a lock of alice's in place (MOVE left the first one behind)
    code, token = lock(alice, f"{TEAM}/doc2.txt")
    assert code == 200
    server.revoke(TEAM, "bob")
    assert bob("PUT", q(f"{BOBS}/doc2.txt"), data=b"x")[0] in (403, 404, 409)      # bob has lost the folder
    assert alice("PUT", q(f"{TEAM}/doc2.txt"), data=b"no token")[0] == 423
    assert alice("DELETE", q(TEAM + "/"))[0] == 423                 # the folder holds a lock
    assert alice("UNLOCK", q(f"{TEAM}/doc2.txt"), "-H", f"Lock-Token: {token}")[0] == 204
    assert alice("DELETE", q(f"{TEAM}/doc2.txt"))[0] == 204


def test_a_lock_on_the_nfd_spelling_holds_off_writes_to_the_nfc_spelling(server):
    alice = Curl(server, "alice")
    nfc, nfd = unicodedata.normalize("NFC", "/Résumé.txt"), unicodedata.normalize("NFD", "/Résumé.txt")
    assert nfc != nfd
    code, token = lock(alice, nfd)                     # macOS Finder sends decomposed names
    assert code == 200 and token
    try:
        assert alice("PUT", q(nfc), data=b"another client")[0] == 423
        assert alice("DELETE", q(nfc))[0] == 423
        assert alice("PUT", q(nfc), "-H", f"If: ({token})", data=b"the holder")[0] == 204
    finally:
        assert alice("UNLOCK", q(nfc), "-H", f"Lock-Token: {token}")[0] == 204     # either spelling names it
    assert alice("GET", q(nfd))[2] == b"the holder"
    assert alice("PUT", q(nfc), data=b"free again")[0] == 204


def test_a_collaborators_nfd_lock_holds_off_the_owner_in_nfc(tmp_path):
    with Server(tmp_path, tls=False, accounts=ACCOUNTS) as srv:
        alice, bob = Curl(srv, "alice"), Curl(srv, "bob")
        name = "Café.txt"
        code, token = lock(bob, unicodedata.normalize("NFD", f"{BOBS}/{name}"))
        assert code == 200 and token
        assert alice("PUT", q(unicodedata.normalize("NFC", f"{TEAM}/{name}")), data=b"alice's")[0] == 423
        assert bob("PUT", q(unicodedata.normalize("NFC", f"{BOBS}/{name}")), "-H", f"If: ({token})",
                   data=b"bob's")[0] == 204
        assert bob("UNLOCK", q(f"{BOBS}/{name}"), "-H", f"Lock-Token: {token}")[0] == 204
        assert alice("PUT", q(f"{TEAM}/{name}"), data=b"alice's")[0] == 204


def test_locks_in_a_folder_move_with_it_when_it_becomes_shared(server):
    alice, bob = Curl(server, "alice"), Curl(server, "bob")
    assert alice("MKCOL", q("/Later/"))[0] == 201
    assert alice("PUT", q("/Later/x.txt"), data=b"alice's")[0] == 201
    code, token = lock(alice, "/Later/x.txt")
    assert code == 200
    server.as_alice(lambda a: a.share_grant("/Later", "bob", "write"))

    assert bob("PUT", q("/Shared/alice/Later/x.txt"), data=b"bob's")[0] == 423
    assert alice("PUT", q("/Later/x.txt"), data=b"no token")[0] == 423
    assert alice("UNLOCK", q("/Later/x.txt"), "-H", f"Lock-Token: {token}")[0] == 204
    assert bob("PUT", q("/Shared/alice/Later/x.txt"), data=b"bob's")[0] == 204
