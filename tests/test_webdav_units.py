"""In-process tests of the WebDAV front-end's pieces: Basic parsing, the
verified-credential cache, the TLS certificate, the database lock store."""
import base64
import time

import pytest

from providers.errors import AuthenticationFailed, InvalidPath
from providers.locks import LockStore, lock_scope_for
from server import tls
from server.auth import CredentialCache, parse_basic, strip_domain
from server.webdav_app import _check_url_path


def basic(text: bytes) -> str:
    return "Basic " + base64.b64encode(text).decode()


@pytest.mark.parametrize("raw,want", [
    (b"alice:pw", ("alice", "pw")),
    (b"WORKGROUP\\alice:pw", ("alice", "pw")),
    (b"a\\b\\alice:pw:with:colons", ("alice", "pw:with:colons")),
    (b"alice:", ("alice", "")),
    ("j\u00fcrgen:p\u00e4ss".encode(), ("j\u00fcrgen", "p\u00e4ss")),
])
def test_parse_basic(raw, want):
    assert parse_basic(basic(raw)) == want


@pytest.mark.parametrize("header", [None, "", "Basic", "Basic ***", "Bearer x", basic(b"nocolon"),
                                    basic(b":pw"), basic(b"\xff:x"), basic(b"a\x00b:c")])
def test_parse_basic_refuses(header):
    with pytest.raises(AuthenticationFailed):
        parse_basic(header)


def test_strip_domain():
    assert strip_domain("DOM\\bob") == "bob"
    assert strip_domain("bob") == "bob"


@pytest.mark.parametrize("path,ok", [
    ("/a/b", True), ("/", True), ("/caf\u00c3\u00a9", True), ("/a/../b", False), ("/./a", False),
    ("/a\x00", False), ("/\xff", False),
])
def test_url_path_check(path, ok):
    if ok:
        _check_url_path(path)
    else:
        with pytest.raises(InvalidPath):
            _check_url_path(path)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_cache_verifies_once_then_reuses(storage, monkeypatch):
    storage.accounts.create("alice", "alice-password")
    calls = []
    real = storage.open_account
    monkeypatch.setattr(storage, "open_account", lambda *a, **k: calls.append(1) or real(*a, **k))
    clock = Clock()
    cache = CredentialCache(storage, ttl=60, clock=clock)
    first = cache.acquire("alice", "alice-password", "127.0.0.1")
    cache.release(first)
    for _ in range(5):
        e = cache.acquire("alice", "alice-password", "127.0.0.1")
        assert e is first
        cache.release(e)
    assert len(calls) == 1
    # a wrong password is never served from the cache
    with pytest.raises(AuthenticationFailed):
        cache.acquire("alice", "wrong", "127.0.0.1")
    # expiry forces a new verification
    clock.t += 61
    e = cache.acquire("alice", "alice-password", "127.0.0.1")
    cache.release(e)
    assert len(calls) == 3
    cache.close_all()


def test_cache_refuses_at_once_after_password_change_or_disable(storage):
    storage.accounts.create("alice", "alice-password")
    cache = CredentialCache(storage, ttl=300)
    e = cache.acquire("alice", "alice-password", None)
    cache.release(e)
    storage.accounts.set_password("alice", "new-password-1")
    with pytest.raises(AuthenticationFailed):
        cache.acquire("alice", "alice-password", None)
    e = cache.acquire("alice", "new-password-1", None)
    cache.release(e)
    storage.accounts.set_status("alice", "disabled")
    with pytest.raises(AuthenticationFailed):
        cache.acquire("alice", "new-password-1", None)
    cache.close_all()


def test_cache_keeps_no_password(storage):
    storage.accounts.create("alice", "alice-password")
    cache = CredentialCache(storage, ttl=300)
    e = cache.acquire("alice", "alice-password", None)
    cache.release(e)
    for key in cache._entries:
        assert b"alice-password" not in key
    assert "alice-password" not in repr(cache._entries)
    cache.close_all()


def test_self_signed_certificate(cfg):
    cert, key, created = tls.ensure_certificate(cfg)
    assert created and cert.is_file() and key.is_file()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    fp = tls.fingerprint(cert)
    assert len(fp.split(":")) == 32
    again = tls.ensure_certificate(cfg)
    assert again == (cert, key, False) and tls.fingerprint(cert) == fp


def test_lock_store_scoped_and_sealed(storage):
    storage.accounts.create("alice", "alice-password")
    storage.accounts.create("bob", "bob-password")
    a = storage.open_account("alice", "alice-password")
    b = storage.open_account("bob", "bob-password")
    store = LockStore(storage.db)
    sa, sb = lock_scope_for(storage, a), lock_scope_for(storage, b)
    lock = store.create(sa, "/Secret Plans/q3.docx", {"type": "write", "scope": "exclusive", "depth": "0",
                                                     "owner": b"<owner>me</owner>", "timeout": 60,
                                                     "principal": "alice"})
    tok = lock["token"]
    assert store.get(sa, tok)["owner"] == b"<owner>me</owner>"
    assert store.get(sb, tok) is None                            # invisible to bob
    assert store.delete(sb, tok) is False
    assert [lk["token"] for lk in store.locks_on(sa, "/Secret Plans/q3.docx")] == [tok]
    assert store.locks_on(sb, "/Secret Plans/q3.docx") == []
    assert [lk["token"] for lk in store.locks_on(sa, "/Secret Plans", include_root=False,
                                                 include_children=True)] == [tok]
    assert store.locks_on(sa, "/Secret", include_children=True) == []
    # nothing readable in the table
    with storage.db.read() as c:
        rows = c.exec_driver_sql("select * from locks").fetchall()
    assert rows and all(b"Secret" not in bytes(r.data_enc) and "Secret" not in r.root_lookup for r in rows)
    # refresh and expiry
    assert store.refresh(sa, tok, 1)["timeout"] == 1
    store.clock = lambda: time.time() + 5
    assert store.get(sa, tok) is None
    assert store.purge_expired() == 1
    a.close()
    b.close()


def test_periodic_maintenance_expires_private_accounts_without_their_keys(storage):
    """`coffer serve`'s timer applies version and trash retention to every
    account, `private` ones included: no login, no password."""
    from providers import lifecycle
    from providers.schedule import Scheduler
    from server.main import _maintain
    for name, mode in (("alice", "managed"), ("pat", "private")):
        storage.accounts.create(name, f"{name}-password", mode=mode)
        vfs = storage.open_account(name, f"{name}-password")
        vfs.write_bytes("/gone.txt", b"deleted long ago")
        vfs.delete("/gone.txt")
        for i in range(5):
            vfs.write_bytes("/f.txt", b"v%d" % i)
        assert len(vfs.versions("/f.txt")) == 5
        vfs.close()
    later = int((time.time() + 40 * 86400) * 1e6)
    report = lifecycle.run_maintenance(storage, now_us=later)
    assert report["errors"] == [] and report["trash_expired"] == 2 and report["versions_expired"] == 2 * 3
    _maintain(Scheduler(storage), [])      # what the server's timer calls; nothing left to do
    for name in ("alice", "pat"):
        vfs = storage.open_account(name, f"{name}-password")
        assert vfs.read_bytes("/f.txt") == b"v4"
        assert len(vfs.versions("/f.txt")) == 2          # the current one, and one for that week
        assert vfs.list("/.coffer/trash") == []
        vfs.close()


@pytest.mark.parametrize("dest,ok", [
    ("/docs/a.txt", True), ("https://files.example:443/a", True), ("https://files.example/a", True),
    ("https://FILES.example/a%20b", True), ("http://files.example/a", False), ("https://other.example/a", False),
    ("https://files.example:8443/a", False), ("/a/../../b", False), ("/a/%2e%2e/b", False), ("/%ff", False),
])
def test_destination_check(dest, ok):
    from server.webdav_app import CofferWebDAV
    env = {"HTTP_HOST": "files.example", "wsgi.url_scheme": "https"}
    problem = CofferWebDAV._check_destination(None, env, dest)
    assert (problem is None) == ok, problem


def test_socket_lines_come_whole_and_in_order_whatever_the_packets_and_limits():
    """Request lines and headers are read a line at a time, from the buffer
    when the line is there; lines that arrive in pieces, straddle a buffer
    refill, or run past the caller's limit (cheroot reads 256 bytes at a
    time and refuses over-long heads) come out exactly as sent, and the
    byte count stays true."""
    import random
    import socket
    import threading

    from cheroot.server import SizeCheckWrapper

    from server.http_io import make_file
    rng = random.Random(7)
    lines = [b"GET /%d HTTP/1.1\r\n" % i for i in range(50)] + \
            [b"X-Long: " + b"v" * rng.randint(200, 9000) + b"\r\n" for _ in range(40)] + \
            [b"H%d: %s\r\n" % (i, b"x" * rng.randint(0, 300)) for i in range(400)] + [b"\r\n"]
    rng.shuffle(lines)
    tail = b"a body line\r\nno newline at the end"
    data = b"".join(lines) + tail
    a, b = socket.socketpair()

    def send():                                      # packets of any size, lines cut anywhere
        at = 0
        while at < len(data):
            n = rng.randint(1, 3000)
            a.sendall(data[at:at + n])
            at += n
        a.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)
    sender.start()
    r = make_file(b, "rb")
    wrapped = SizeCheckWrapper(r, 0)
    got = [wrapped.readline() for _ in lines]         # as cheroot reads a head: 256 bytes at most per call
    assert got == lines
    assert r.readline(6) == b"a body" and r.readline() == b" line\r\n"       # a limit cuts a line short
    assert r.readline(5) == b"no ne" and r.readline() == b"wline at the end" and r.readline() == b""
    assert r.bytes_read == len(data) and wrapped.bytes_read == len(data) - len(tail)
    sender.join()
    a.close()
    b.close()


def test_socket_files_keep_stream_order_across_small_and_large_reads():
    import os
    import socket
    import threading

    from server.http_io import make_file
    a, b = socket.socketpair()
    body = os.urandom(3 * 1024 * 1024 + 17)
    head = b"PUT /f HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    sender = threading.Thread(target=lambda: (a.sendall(head + body), a.shutdown(socket.SHUT_WR)))
    sender.start()
    r = make_file(b, "rb")
    assert r.readline() == b"PUT /f HTTP/1.1\r\n"
    assert r.readline().startswith(b"Content-Length")
    assert r.readline() == b"\r\n"
    got = [r.read(10), r.read(1024 * 1024), r.read(100), r.read(2 * 1024 * 1024)]
    assert all(type(x) is bytes for x in got)
    assert b"".join(got) == body[:len(b"".join(got))]
    rest = r.read(1024 * 1024)                    # the end of the stream: what is left, then nothing
    assert b"".join(got) + rest == body and r.read(1024 * 1024) == b""
    assert r.bytes_read == len(head) + len(body)
    sender.join()
    a2, b2 = socket.socketpair()
    w = make_file(a2, "wb")
    reader = threading.Thread(target=lambda: out.append(b"".join(iter(lambda: b2.recv(1 << 20), b""))))
    out = []
    reader.start()
    w.write(body)
    w.write(b"tail")
    a2.shutdown(socket.SHUT_WR)
    reader.join()
    assert out[0] == body + b"tail" and w.bytes_written == len(body) + 4
    for s in (a, b, a2, b2):
        s.close()


def test_an_unexpected_error_is_a_500_with_its_traceback_in_the_log(storage, cfg, monkeypatch):
    """A fault below the handlers answers 500 and leaves its traceback in the
    server's log (wsgidav kept its records to itself, so such 500s were silent)."""
    from providers.vfs import Vfs
    from server.webdav_app import CofferWebDAV
    storage.accounts.create("erin", "erin-password")
    app = CofferWebDAV(storage, cfg)

    def broken(self, path):
        raise RuntimeError("a fault nobody foresaw")
    monkeypatch.setattr(Vfs, "mkdir", broken)
    status, log = _logged_request(app, "MKCOL", "/new/", b"erin:erin-password")
    assert status.startswith("500")
    assert "a fault nobody foresaw" in log and "Traceback" in log


def _logged_request(app, method, path, login, body=b""):
    """One request through the application: its status and what it logged
    where `coffer serve` sends its log (the root logger)."""
    import io
    import logging
    from wsgiref.util import setup_testing_defaults
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_AUTHORIZATION": basic(login),
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "SCRIPT_NAME": ""}
    setup_testing_defaults(environ)
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))   # as `coffer serve` logs
    logging.getLogger().addHandler(handler)
    statuses = []
    try:
        out = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        b"".join(out)
        out.close()
    finally:
        logging.getLogger().removeHandler(handler)
    return statuses[0], seen.getvalue()


def test_an_upload_refused_cleanly_logs_one_line_and_a_fault_in_it_its_traceback(storage, cfg, monkeypatch):
    """wsgidav logs every error of a PUT's copy with a traceback. A clean
    answer (the database away: 503, nothing changed) is one line in the log,
    so a real fault's traceback stands out; that one keeps it. Another
    account's upload meanwhile goes through."""
    from providers import errors
    from providers.vfs import Vfs
    from server.webdav_app import CofferWebDAV
    storage.accounts.create("erin", "erin-password")
    storage.accounts.create("fay", "fay-password")
    app = CofferWebDAV(storage, cfg)
    real_open_write = Vfs.open_write

    def failing(self, path, **kw):
        if self.user.name == "erin":
            raise (errors.StorageUnavailable("the database is not available; nothing was changed; try again")
                   if path.endswith("away.txt") else RuntimeError("a fault nobody foresaw"))
        return real_open_write(self, path, **kw)
    monkeypatch.setattr(Vfs, "open_write", failing)
    status, log = _logged_request(app, "PUT", "/away.txt", b"erin:erin-password", b"hello")
    assert status.startswith("503") and "the database is not available" in log and "Traceback" not in log
    assert "ERROR" not in log                          # a warning: answered, nothing changed
    status, log = _logged_request(app, "PUT", "/fault.txt", b"erin:erin-password", b"hello")
    assert status.startswith("500") and "a fault nobody foresaw" in log and "Traceback" in log
    status, _ = _logged_request(app, "PUT", "/kept.txt", b"fay:fay-password", b"hello")
    assert status.startswith("201")
    vfs = storage.open_account("fay", "fay-password")
    assert vfs.read_bytes("/kept.txt") == b"hello"
    vfs.close()
