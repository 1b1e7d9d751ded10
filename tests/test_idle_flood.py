"""No client can take the server away from the others: idle, silent,
half-sent and stalled connections against a real `coffer serve` with its
default worker processes, then ordinary requests from curl and OpenSSH."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from sftp_harness import SftpServer
from webdav_harness import CofferServer, require_client

FLOOD_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 12)]      # the client under test comes from 127.0.0.1


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _connect(port: int, i: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30,
                                    source_address=(FLOOD_ADDRESSES[i % len(FLOOD_ADDRESSES)], 0))


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True
    except (socket.timeout, TimeoutError):
        return False


def _curl_seconds(srv: CofferServer, *args: str) -> tuple[int, float]:
    out = subprocess.run(["curl", "-s", "-k", "-o", "/dev/null", "--max-time", "30", "-u", "alice:alice-pw-1",
                          "-w", "%{http_code} %{time_total}", *args], capture_output=True, text=True)
    code, seconds = out.stdout.split()
    return int(code), float(seconds)


def test_idle_silent_and_half_sent_connections_cost_the_others_nothing(tmp_path):
    require_client("curl")
    with CofferServer(tmp_path / "srv", webdav="header_timeout_seconds = 4") as srv:
        assert "worker processes" in srv.output               # the default: one worker per core
        assert srv.request("PUT", "/small.txt", b"x" * 4096)[0] == 201
        ctx = _tls_context()
        idle = []
        for i in range(1000):                                  # kept-alive connections, each after a request
            c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=30, context=ctx,
                                            source_address=(FLOOD_ADDRESSES[i % len(FLOOD_ADDRESSES)], 0))
            c.request("PROPFIND", "/", headers={**srv.auth(), "Depth": "0"})
            r = c.getresponse()
            r.read()
            assert r.status == 207
            idle.append(c)
        half = []
        for i in range(200):                                   # the request line and one header, then nothing
            s = ctx.wrap_socket(_connect(srv.port, i))
            s.sendall(b"PROPFIND / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            half.append(s)
        silent = [_connect(srv.port, i) for i in range(100)]    # not even a TLS hello
        time.sleep(0.5)

        times = []
        for _ in range(3):
            code, seconds = _curl_seconds(srv, "-X", "PROPFIND", "-H", "Depth: 0", srv.url)
            assert code == 207
            times.append(seconds)
            code, seconds = _curl_seconds(srv, srv.url + "small.txt")
            assert code == 200
            times.append(seconds)
        assert max(times) < 1.0, times

        # the half-sent and silent ones are cut off after header_timeout_seconds ...
        started = time.monotonic()
        assert all(_closed_by_server(s, 10) for s in half + silent)
        assert time.monotonic() - started < 10
        # ... while the kept-alive ones are still there and answer at once
        for c in idle[::100]:
            c.request("PROPFIND", "/", headers={**srv.auth(), "Depth": "0"})
            r = c.getresponse()
            r.read()
            assert r.status == 207
        for c in idle:
            c.close()
        for s in half + silent:
            s.close()


def test_connections_per_address_are_capped_and_another_address_gets_in(tmp_path):
    with CofferServer(tmp_path / "srv", tls=False, extra="[server]\nworkers = 1",
                      webdav="max_connections_per_address = 20") as srv:
        held = [socket.create_connection(("127.0.0.1", srv.port), source_address=("127.0.0.5", 0))
                for _ in range(20)]
        over = socket.create_connection(("127.0.0.1", srv.port), source_address=("127.0.0.5", 0))
        over.sendall(b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_by_server(over, 5)                      # refused: the 21st from that address
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=("127.0.0.6", 0))
        c.request("PROPFIND", "/", headers={**srv.auth(), "Depth": "0"})
        assert c.getresponse().status == 207                   # another address is served
        for s in held[:5]:
            s.close()
        time.sleep(0.3)
        c2 = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=("127.0.0.5", 0))
        c2.request("PROPFIND", "/", headers={**srv.auth(), "Depth": "0"})
        assert c2.getresponse().status == 207                  # room again once some closed
        for s in held[5:] + [over]:
            s.close()
        assert "max_connections_per_address" in srv.log.read_text()


def test_stalled_uploads_are_cut_off_and_do_not_hold_the_server(tmp_path):
    """Bodies that stop arriving hold a request thread each; the pool grows
    past them, and each ends after io_timeout_seconds leaving the file as it was."""
    with CofferServer(tmp_path / "srv", tls=False, extra="[server]\nworkers = 1",
                      webdav="threads = 4\nio_timeout_seconds = 3") as srv:
        assert srv.request("PUT", "/doc.txt", b"first version")[0] == 201
        stalled = []
        for i in range(30):
            s = _connect(srv.port, i)
            s.sendall(b"PUT /doc.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nAuthorization: "
                      + srv.auth()["Authorization"].encode() + b"\r\n\r\n" + b"y" * 1000)
            stalled.append(s)
        time.sleep(0.5)
        started = time.monotonic()
        status, _, body = srv.request("GET", "/doc.txt")
        assert (status, body) == (200, b"first version")
        assert time.monotonic() - started < 1.0
        assert all(_closed_by_server(s, 10) for s in stalled)  # cut off after io_timeout_seconds
        status, _, body = srv.request("GET", "/doc.txt")
        assert (status, body) == (200, b"first version")       # nothing half-written took its place
        for s in stalled:
            s.close()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_clients_that_stop_reading_or_sending_mid_request_do_not_hold_the_others(tmp_path, monkeypatch, tls):
    """A request runs in the worker's turn until it would wait on its client
    (providers/turn.py). Downloads nobody reads and uploads whose bodies stop
    must each have left the turn: another account's requests on the same
    worker are answered at once. The turn's slice is made 5 s here, so a
    request that kept the turn while waiting would show as seconds."""
    monkeypatch.setenv("COFFER_TURN_SLICE_SECONDS", "5")
    with CofferServer(tmp_path / "srv", tls=tls, extra="[server]\nworkers = 1",
                      webdav="io_timeout_seconds = 30") as srv:
        wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        big = os.urandom(wmem + 4 * 1024 * 1024)        # more than the server's socket can buffer
        assert srv.request("PUT", "/big.bin", big)[0] == 201
        assert srv.request("PUT", "/note.txt", b"bob's note", user="bob")[0] == 201
        auth = srv.auth()["Authorization"].encode()
        small = b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n"

        def connected(i: int) -> socket.socket:
            """A connection whose first request was answered (its session is
            recorded), as a client's would be before it stops mid-request."""
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.bind((FLOOD_ADDRESSES[i], 0))
            s.connect(("127.0.0.1", srv.port))
            if tls:
                s = _tls_context().wrap_socket(s)
            s.sendall(small)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            return s
        held = [connected(i) for i in range(8)]
        for s in held[:4]:                  # downloads whose client stops reading
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n")
        for s in held[4:]:                  # uploads whose body stops after 1,000 bytes
            s.sendall(b"PUT /stalled.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nAuthorization: "
                      + auth + b"\r\n\r\n" + b"y" * 1000)
        time.sleep(1)
        conn = srv.connection()
        slowest = 0.0
        for _ in range(10):
            for method, path, want in (("GET", "/note.txt", 200), ("PROPFIND", "/note.txt", 207)):
                started = time.monotonic()
                status, _, body = srv.request(method, path, headers={"Depth": "0"}, user="bob", conn=conn)
                slowest = max(slowest, time.monotonic() - started)
                assert status == want
                if method == "GET":
                    assert body == b"bob's note"
        assert slowest < 1.0, f"an ordinary request waited {slowest:.1f} s behind clients that stopped"
        conn.close()
        for s in held:
            s.close()
        status, _, body = srv.request("GET", "/big.bin")
        assert status == 200 and body == big
        assert srv.request("GET", "/stalled.bin")[0] == 404       # no upload was completed


def test_idle_and_half_sent_ssh_connections_do_not_starve_sftp(tmp_path):
    require_client("sftp")
    with SftpServer(tmp_path / "srv", extra="login_timeout_seconds = 4") as srv:
        socks = []
        for i in range(1200):
            try:
                s = _connect(srv.port, i)
            except OSError:
                continue
            if i >= 1000:
                s.sendall(b"SSH-2.0-half\r\n")                  # a banner, then nothing
            socks.append(s)
        time.sleep(0.5)
        times = []
        for _ in range(3):
            started = time.monotonic()
            out = srv.sftp_batch("ls -la\n")
            times.append(time.monotonic() - started)
            assert out.returncode == 0, out.stderr
        assert max(times) < 2.0, times
        for s in socks:
            s.close()
