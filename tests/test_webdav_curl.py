"""curl sessions that talk the way the Windows WebClient and macOS Finder do,
plus quota, owncloud extensions, session records and a file over 4 GiB."""
import hashlib
import os
import re
import subprocess

import pytest

from webdav_harness import CofferServer, require_client

pytestmark = [pytest.mark.clients]

WIN_UA = "Microsoft-WebDAV-MiniRedir/10.0.19045"
FINDER_UA = "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (arm64)"
QUOTA_PROPFIND = ('<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:prop>'
                  '<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>')
LOCK_BODY = ('<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             '</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>WORKGROUP\\alice</D:href>'
             '</D:owner></D:lockinfo>')
WIN32_PROPPATCH = ('<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
                   'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
                   '<Z:Win32CreationTime>Tue, 07 Nov 2023 10:00:00 GMT</Z:Win32CreationTime>'
                   '<Z:Win32LastAccessTime>Tue, 07 Nov 2023 10:05:00 GMT</Z:Win32LastAccessTime>'
                   '<Z:Win32LastModifiedTime>Tue, 07 Nov 2023 10:04:00 GMT</Z:Win32LastModifiedTime>'
                   '<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>'
                   '</D:prop></D:set></D:propertyupdate>')


class Curl:
    def __init__(self, server, user="alice", ua=WIN_UA, domain=""):
        self.server = server
        self.exe = require_client("curl")
        self.user = user
        self.ua = ua
        self.domain = domain

    def __call__(self, method, path, *args, data=None, user=True):
        cmd = [self.exe, "-sk", "-X", method, "-A", self.ua, "-o", "-", "-D", "/dev/stderr",
               "-w", "\n%{http_code}"]
        if user:
            # the password goes through a config on stdin, never argv
            pass
        cmd += list(args) + [self.server.url.rstrip("/") + path]
        cfg = ""
        if user:
            cfg = f'user = "{self.domain}{self.user}:{self.server.accounts[self.user]}"\n'.replace("\\", "\\\\")
            cmd[1:1] = ["-K", "-"]
        stdin = cfg.encode()
        if data is not None:
            # body from a file so curl's -K stdin stays free
            path_ = self.server.folder / "body.tmp"
            path_.write_bytes(data if isinstance(data, bytes) else data.encode())
            cmd[1:1] = ["--data-binary", "@" + str(path_)]
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120)
        out, _, code = r.stdout.rpartition(b"\n")
        return int(code), r.stderr.decode("latin-1"), out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("curl"), tls=True, accounts={
            "alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-333"},
            quotas={"carol": 1024 * 1024}) as srv:
        yield srv


def header(headers: str, name: str) -> str | None:
    m = re.search(rf"^{name}:\s*(.*?)\r?$", headers, re.I | re.M)
    return m.group(1) if m else None


def test_windows_webclient_session(server):
    curl = Curl(server, domain="WORKGROUP\\")
    code, h, _ = curl("OPTIONS", "/", user=False)
    assert code == 200 and header(h, "MS-Author-Via") == "DAV" and "2" in header(h, "DAV")
    code, h, _ = curl("OPTIONS", "/")
    assert code == 200 and header(h, "MS-Author-Via") == "DAV"
    code, _, body = curl("PROPFIND", "/", "-H", "Depth: 0", "-H", "Content-Type: text/xml", data=QUOTA_PROPFIND)
    assert code == 207
    avail = int(re.search(rb"quota-available-bytes>(\d+)<", body).group(1))
    used = int(re.search(rb"quota-used-bytes>(\d+)<", body).group(1))
    assert avail > 0 and used >= 0
    # Explorer's create sequence: empty PUT, LOCK, PUT with the body, PROPPATCH, UNLOCK
    name = "/New Text Document.txt".replace(" ", "%20")
    code, _, _ = curl("PUT", name, "-H", "Content-Length: 0", data=b"")
    assert code == 201
    code, h, body = curl("LOCK", name, "-H", "Timeout: Second-3600", "-H", "Content-Type: text/xml",
                         data=LOCK_BODY)
    assert code == 200
    token = header(h, "Lock-Token").strip("<>")
    assert token.startswith("opaquelocktoken:")
    code, _, _ = curl("PUT", name, data=b"written by explorer")
    assert code == 423                      # without the token: locked
    code, _, _ = curl("PUT", name, "-H", f"If: (<{token}>)", data=b"written by explorer")
    assert code == 204
    code, _, body = curl("PROPPATCH", name, "-H", f"If: (<{token}>)", "-H", "Content-Type: text/xml",
                         data=WIN32_PROPPATCH)
    assert code == 207 and body.count(b"200 OK") >= 1 and b"403" not in body and b"409" not in body
    code, _, _ = curl("UNLOCK", name, "-H", f"Lock-Token: {token}")     # no angle brackets, as Windows sends
    assert code == 204
    code, _, body = curl("GET", name)
    assert (code, body) == (200, b"written by explorer")
    code, _, body = curl("PROPFIND", name, "-H", "Depth: 0", data=(
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:prop>'
        '<Z:Win32FileAttributes/><Z:Win32CreationTime/><D:getlastmodified/></D:prop></D:propfind>'))
    assert code == 207 and b"00000020" in body and b"Tue, 07 Nov 2023 10:00:00 GMT" in body
    assert b"Tue, 07 Nov 2023 10:04:00 GMT" in body           # Win32LastModifiedTime set the mtime
    # a second LOCK/UNLOCK with angle brackets also works
    code, h, _ = curl("LOCK", name, "-H", "Content-Type: text/xml", data=LOCK_BODY)
    assert code == 200
    code, _, _ = curl("UNLOCK", name, "-H", f"Lock-Token: {header(h, 'Lock-Token')}")
    assert code == 204


def test_macos_finder_session(server):
    curl = Curl(server, ua=FINDER_UA)
    assert curl("MKCOL", "/Finder")[0] == 201
    for probe in ("/Finder/._test.bin", "/Finder/.DS_Store", "/._Finder", "/Finder/._.", "/.hidden"):
        code, _, _ = curl("PROPFIND", probe, "-H", "Depth: 0")
        assert code == 404, probe
    data = os.urandom(3 * 1024 * 1024 + 17)
    # chunked PUT without Content-Length, as Finder sends
    code, _, _ = curl("PUT", "/Finder/test.bin", "-H", "Transfer-Encoding: chunked",
                      "-H", "Content-Type: application/octet-stream", data=data)
    assert code == 201
    code, h, body = curl("GET", "/Finder/test.bin")
    assert code == 200 and body == data and header(h, "ETag")
    code, h, body = curl("GET", "/Finder/test.bin", "-H", "Range: bytes=1000-1999")
    assert code == 206 and body == data[1000:2000]
    assert header(h, "Content-Range") == f"bytes 1000-1999/{len(data)}"
    code, _, body = curl("GET", "/Finder/test.bin", "-H", "Range: bytes=-100")
    assert code == 206 and body == data[-100:]
    code, _, body = curl("GET", "/Finder/test.bin", "-H", f"Range: bytes={len(data) - 10}-")
    assert code == 206 and body == data[-10:]
    code, h, body = curl("HEAD", "/Finder/test.bin", "-I")
    assert code == 200 and header(h, "Content-Length") == str(len(data)) and header(h, "Last-Modified")
    # conditional GET with the ETag
    etag = header(h, "ETag")
    code, _, _ = curl("GET", "/Finder/test.bin", "-H", f"If-None-Match: {etag}")
    assert code == 304


def test_owncloud_mtime_and_checksums(server):
    curl = Curl(server, ua="rclone/v1.60")
    data = b"owncloud style\n" * 1000
    code, h, _ = curl("PUT", "/oc.txt", "-H", "X-OC-Mtime: 1600000000", data=data)
    assert code == 201 and header(h, "X-OC-MTime") == "accepted"
    code, _, body = curl("PROPFIND", "/oc.txt", "-H", "Depth: 0", data=(
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
        '<d:getlastmodified/><oc:checksums/><d:getcontentlength/></d:prop></d:propfind>'))
    assert code == 207
    assert b"Sun, 13 Sep 2020 12:26:40 GMT" in body
    assert f"SHA1:{hashlib.sha1(data).hexdigest()}".encode() in body
    assert f"MD5:{hashlib.md5(data).hexdigest()}".encode() in body
    code, _, _ = curl("PUT", "/oc.txt", "-H", "X-OC-Mtime: soon", data=b"x")
    assert code == 400
    assert curl("GET", "/oc.txt")[2] == data


def test_owncloud_upload_checksums_are_verified_and_kept(server):
    curl = Curl(server, ua="rclone/v1.60")
    big = os.urandom(3 * 1024 * 1024 + 7)
    sha1, md5 = hashlib.sha1(big).hexdigest(), hashlib.md5(big).hexdigest()
    checksums = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
                 '<oc:checksums/></d:prop></d:propfind>')
    # a large upload without a checksum header has none to list (a listing never reads files)
    assert curl("PUT", "/plain.bin", data=big)[0] == 201
    code, _, body = curl("PROPFIND", "/plain.bin", "-H", "Depth: 0", data=checksums)
    assert code == 207 and b"SHA1:" not in body
    # with OC-Checksum the upload is verified, and its checksums are listed
    assert curl("PUT", "/oc.bin", "-H", f"OC-Checksum: SHA1:{sha1}", data=big)[0] == 201
    code, _, body = curl("PROPFIND", "/", "-H", "Depth: 1", data=checksums)
    assert f"SHA1:{sha1}".encode() in body and f"MD5:{md5}".encode() in body
    # a damaged upload (its last byte changed) is refused and the previous version stays
    damaged = big[:-1] + bytes([big[-1] ^ 0xFF])
    code, _, body = curl("PUT", "/oc.bin", "-H", f"OC-Checksum: SHA1:{sha1}", data=damaged)
    assert code == 400 and b"checksum" in body
    assert hashlib.sha1(curl("GET", "/oc.bin")[2]).hexdigest() == sha1


def test_quota_exceeded_is_507_and_keeps_the_old_version(server):
    curl = Curl(server, user="carol")
    old = b"the first version" * 100
    assert curl("PUT", "/big.bin", data=old)[0] == 201
    code, _, _ = curl("PUT", "/big.bin", data=os.urandom(2 * 1024 * 1024))
    assert code == 507
    code, _, _ = curl("PUT", "/other.bin", "-H", "Transfer-Encoding: chunked", data=os.urandom(2 * 1024 * 1024))
    assert code == 507
    assert curl("GET", "/big.bin")[2] == old
    assert curl("GET", "/other.bin")[0] == 404
    code, _, body = curl("PROPFIND", "/", "-H", "Depth: 0", data=QUOTA_PROPFIND)
    avail = int(re.search(rb"quota-available-bytes>(\d+)<", body).group(1))
    assert 0 < avail < 1024 * 1024


def test_versions_are_browsable_under_dot_coffer(server):
    curl = Curl(server, user="bob")
    assert curl("PUT", "/v.txt", data=b"one")[0] == 201
    assert curl("PUT", "/v.txt", data=b"two")[0] == 204
    code, _, body = curl("PROPFIND", "/.coffer/versions/v.txt/", "-H", "Depth: 1")
    assert code == 207
    hrefs = re.findall(rb"<D:href>([^<]+)</D:href>", body)
    assert len(hrefs) >= 3          # the folder and two versions
    contents = {curl("GET", h.decode().replace(server.url.rstrip("/"), ""))[2] for h in hrefs[1:]}
    assert {b"one", b"two"} <= contents
    assert curl("PUT", "/.coffer/versions/v.txt/x", data=b"no")[0] == 403
    code, _, body = curl("PROPFIND", "/", "-H", "Depth: 1")
    assert b".coffer" not in body


def test_session_records_are_written(tmp_path):
    with CofferServer(tmp_path / "s", tls=True) as srv:
        for _ in range(3):
            assert srv.request("PUT", "/x.txt", body=b"12345")[0] in (201, 204)
        assert srv.request("GET", "/x.txt")[0] == 200
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config))
    try:
        uid = st.accounts.get("alice").id
        rows = list(st.sessions.list(user_id=uid))
    finally:
        st.close()
    assert rows, "no session record"
    total_in = sum(r["bytes_in"] for r in rows)
    total_req = sum(r["requests"] for r in rows)
    assert total_in >= 15 and total_req >= 4
    assert all(r["protocol"] == "webdav" and r["ended_us"] for r in rows)


@pytest.mark.slow
def test_file_over_4_gib_streams(server):
    size = 4 * 1024 ** 3 + 12345
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)

    def body():
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            sent += len(piece)
            yield piece

    want = hashlib.sha256()
    for piece in body():
        want.update(piece)
    conn = server.connection()
    conn.putrequest("PUT", "/huge.bin")
    for k, v in server.auth("bob").items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    for piece in body():
        conn.send(piece)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 201
    conn.request("GET", "/huge.bin", headers=server.auth("bob"))
    resp = conn.getresponse()
    got = hashlib.sha256()
    n = 0
    while True:
        piece = resp.read(1024 * 1024)
        if not piece:
            break
        got.update(piece)
        n += len(piece)
    assert n == size and got.hexdigest() == want.hexdigest()
    conn.request("GET", "/huge.bin", headers=dict(server.auth("bob"), Range=f"bytes={size - 10}-"))
    resp = conn.getresponse()
    assert resp.status == 206 and len(resp.read()) == 10
    conn.request("DELETE", "/huge.bin", headers=server.auth("bob"))
    assert conn.getresponse().status == 204
    conn.close()
