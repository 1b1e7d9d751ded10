"""Hostile requests against a real server: each gets a clear 4xx, the server
keeps serving, and nothing changes. Also: two accounts cannot reach each
other's files by any path."""
import base64
import socket
import ssl

import pytest

from webdav_harness import CofferServer

pytestmark = pytest.mark.slow

LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b'<D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>')
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lolololololololololololololololololololololololololololol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol9;</D:displayname></D:prop></D:propfind>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><Z:a xmlns:Z="urn:z">&x;</Z:a></D:prop></D:set></D:propertyupdate>"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("hostile"), tls=True) as srv:
        assert srv.request("MKCOL", "/docs")[0] == 201
        assert srv.request("PUT", "/docs/secret.txt", body=b"alice's secret")[0] == 201
        assert srv.request("PUT", "/bobfile.txt", body=b"bob's", user="bob")[0] == 201
        yield srv


def unchanged(server):
    st, _, body = server.request("GET", "/docs/secret.txt")
    assert (st, body) == (200, b"alice's secret")
    st, _, body = server.request("GET", "/bobfile.txt", user="bob")
    assert (st, body) == (200, b"bob's")
    st, _, body = server.request("PROPFIND", "/", headers={"Depth": "1"})
    assert st == 207
    assert b"/docs/" in body and b"bobfile" not in body
    assert server.alive()


def raw_request(server, request: bytes) -> bytes:
    """Send bytes as they are (no client-side normalisation of the path)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        with ctx.wrap_socket(s) as t:
            t.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = t.recv(65536)
                if not piece:
                    break
                data += piece
    return data


def raw_status(server, method: str, target: bytes, user="alice", extra=b"") -> int:
    auth = server.auth(user)["Authorization"].encode()
    req = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(server.port).encode()
           + b"\r\nAuthorization: " + auth + b"\r\nContent-Length: 0\r\nConnection: close\r\n" + extra + b"\r\n")
    head = raw_request(server, req)
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("target", [
    b"/../etc/passwd", b"/docs/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/docs/%2e%2e/%2e%2e/x",
    b"/a%00b", b"/docs/%00", b"/%ff%fe", b"/docs/\xff.txt", b"/" + b"n" * 300, b"/docs/" + b"%C3%A9" * 200,
])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "MKCOL", "PROPFIND"])
def test_bad_paths_are_refused(server, method, target):
    status = raw_status(server, method, target)
    assert 400 <= status < 500, (method, target, status)


def test_bad_paths_changed_nothing(server):
    unchanged(server)


@pytest.mark.parametrize("method,body", [
    ("PROPFIND", BOMB), ("PROPPATCH", BOMB), ("LOCK", BOMB), ("PROPPATCH", XXE),
    ("PROPFIND", b"<D:propfind xmlns:D='DAV:'><D:prop>"), ("PROPPATCH", b"not xml at all"),
    ("LOCK", b"<?xml version='1.0'?><lockinfo"), ("PROPFIND", b"\xff\xfe<\x00"),
])
def test_malformed_and_hostile_xml(server, method, body):
    st, _, _ = server.request(method, "/docs/secret.txt", body=body,
                              headers={"Content-Type": "application/xml", "Depth": "0"})
    assert 400 <= st < 500, st
    assert server.alive()


def test_protected_property_cannot_be_set(server):
    body = (b"<D:propertyupdate xmlns:D='DAV:'><D:set><D:prop><D:getetag>x</D:getetag></D:prop></D:set>"
            b"</D:propertyupdate>")
    st, _, data = server.request("PROPPATCH", "/docs/secret.txt", body=body)
    assert st == 207 and b"403 Forbidden" in data


def test_oversized_xml_body(server):
    # the answer comes before the body is sent: nothing that large is read
    auth = server.auth()["Authorization"].encode()
    head = raw_request(server, b"PROPFIND / HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
                       b"\r\nContent-Length: 2097152\r\nDepth: 0\r\n\r\n")
    assert int(head.split(b" ", 2)[1]) == 413


def test_xml_attacks_changed_nothing(server):
    st, _, body = server.request("PROPFIND", "/docs/secret.txt", headers={"Depth": "0"})
    assert st == 207 and b"lockdiscovery/>" in body and b"passwd" not in body and b"root:" not in body
    unchanged(server)


@pytest.mark.parametrize("dest", [
    "https://evil.example.com/docs/stolen.txt",
    "http://127.0.0.1:1/docs/stolen.txt",
    "/../bob/stolen.txt", "/%2e%2e/stolen.txt", "/docs/%00x", "/%ff",
])
@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_bad_destinations(server, method, dest):
    st, _, _ = server.request(method, "/docs/secret.txt", headers={"Destination": dest})
    assert 400 <= st < 500, (method, dest, st)


def test_bad_destinations_changed_nothing(server):
    unchanged(server)


@pytest.mark.parametrize("header", [
    None, "", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b"alice:wrong").decode(), "Basic " + base64.b64encode(b":").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Bearer abc", "Digest username=alice",
    "Basic " + base64.b64encode(b"nobody:x").decode(), "Basic " + "A" * 10000,
])
def test_bad_credentials_get_401(server, header):
    headers = {} if header is None else {"Authorization": header}
    st, h, _ = server.request("PROPFIND", "/", headers=dict(headers, Depth="0"), user=None)
    assert st == 401
    assert h["www-authenticate"].startswith("Basic realm=")


def test_windows_domain_prefix_is_ignored(server):
    token = base64.b64encode(b"WORKGROUP\\alice:" + server.accounts["alice"].encode()).decode()
    st, _, _ = server.request("PROPFIND", "/", headers={"Authorization": "Basic " + token, "Depth": "0"},
                              user=None)
    assert st == 207


# -- two accounts ------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,extra", [
    ("GET", "/docs/secret.txt", {}), ("PROPFIND", "/docs/", {"Depth": "1"}),
    ("DELETE", "/docs/secret.txt", {}), ("LOCK", "/docs/secret.txt", {}),
])
def test_bob_cannot_reach_alice(server, method, path, extra):
    body = LOCK_BODY if method == "LOCK" else None
    st, _, data = server.request(method, path, body=body, headers=extra, user="bob")
    # bob sees his own (empty) namespace: alice's files are simply not there
    assert st in (404, 409) or (method == "LOCK" and st in (200, 201)), st
    assert b"alice's secret" not in data


def test_bob_writes_land_in_his_own_tree(server):
    st, _, _ = server.request("PUT", "/docs-bob.txt", body=b"mine", user="bob")
    assert st == 201
    assert server.request("GET", "/docs-bob.txt")[0] == 404
    server.request("DELETE", "/docs-bob.txt", user="bob")
    # bob's lock on a path of the same name (if the LOCK created it) does not lock alice's file
    server.request("DELETE", "/docs/secret.txt", user="bob")
    st, _, _ = server.request("PUT", "/docs/secret.txt", body=b"alice's secret")
    assert st in (200, 204)
    unchanged(server)


def test_lock_token_of_one_account_is_useless_to_the_other(server):
    st, h, _ = server.request("LOCK", "/docs/secret.txt", body=LOCK_BODY)
    assert st == 200
    token = h["lock-token"].strip("<>")
    try:
        # bob cannot unlock or use it
        st, _, _ = server.request("UNLOCK", "/docs/secret.txt", headers={"Lock-Token": f"<{token}>"}, user="bob")
        assert 400 <= st < 500
        st, _, _ = server.request("PUT", "/bobfile.txt", body=b"x", user="bob",
                                  headers={"If": f"(<{token}>)"})
        assert st in (400, 412, 423)
        # and alice's file stays locked against a write without the token
        st, _, _ = server.request("PUT", "/docs/secret.txt", body=b"overwrite")
        assert st == 423
    finally:
        st, _, _ = server.request("UNLOCK", "/docs/secret.txt", headers={"Lock-Token": token})
        assert st == 204
    unchanged(server)


@pytest.fixture(scope="module")
def servers(server, tmp_path_factory):
    """The module's HTTPS server, and one on plain HTTP (where large bodies
    take another read path)."""
    with CofferServer(tmp_path_factory.mktemp("plain"), tls=False) as plain:
        yield {"https": server, "http": plain}


def blob_files(srv):
    return sorted(p for p in (srv.folder / "var" / "blobs").rglob("*") if p.is_file())


@pytest.mark.parametrize("hangup", ["reset", "close"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_client_that_vanishes_mid_upload_changes_nothing(servers, scheme, framing, hangup):
    """Cut off mid-body, by a reset or an orderly close: the file keeps its
    old content and versions, the upload's packs are deleted, and the
    server goes on serving."""
    import hashlib
    import os
    import struct
    import time
    srv = servers[scheme]
    path = f"/vanish-{framing}.bin"
    old = os.urandom(3 * 1024 * 1024 + 7)
    assert srv.request("PUT", path, body=old)[0] in (201, 204)
    versions = srv.request("PROPFIND", f"/.coffer/versions{path}", headers={"Depth": "1"})[2].count(b"<D:response>")
    blobs = blob_files(srv)
    head = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: {srv.auth()['Authorization']}\r\n").encode()
    part = os.urandom(6 * 1024 * 1024)                  # six chunks on their way into packs
    if framing == "length":
        head += b"Content-Length: 20000000\r\n\r\n"
        body = part
    else:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (part[i:i + 65536] for i in range(0, len(part), 65536)))
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    s.sendall(head + body)
    time.sleep(0.5)                                     # the server is reading and storing
    if hangup == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # gone, no goodbye
    s.close()
    st, _, got = srv.request("GET", path)
    assert st == 200 and hashlib.sha256(got).digest() == hashlib.sha256(old).digest()
    after = srv.request("PROPFIND", f"/.coffer/versions{path}", headers={"Depth": "1"})[2].count(b"<D:response>")
    assert after == versions                            # no version half-made
    deadline = time.monotonic() + 20
    while blob_files(srv) != blobs and time.monotonic() < deadline:
        time.sleep(0.2)                                 # the abandoned upload's packs are deleted
    assert blob_files(srv) == blobs
    assert srv.alive()
    new = os.urandom(2 * 1024 * 1024)
    assert srv.request("PUT", path, body=new)[0] in (201, 204)
    assert srv.request("GET", path)[2] == new


@pytest.mark.parametrize("depth", ["infinity", "Infinity", None])
def test_propfind_of_the_whole_tree_is_refused(server, depth):
    """One request must not walk every file of an account (RFC 4918 9.1)."""
    headers = {"Depth": depth} if depth else {}
    st, _, body = server.request("PROPFIND", "/", headers=headers)
    assert st == 403 and b"propfind-finite-depth" in body
    st, _, body = server.request("PROPFIND", "/", headers={"Depth": "1"})
    assert st == 207 and b"/docs/" in body
