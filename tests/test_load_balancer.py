"""Behind HAProxy (TCP mode, send-proxy-v2), each client keeps its own
address: the login guard bans the guesser, not everyone behind the
balancer; the balancer's connections must carry the header, and nobody
else can claim an address with one."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from sftp_harness import SftpServer
from webdav_harness import CofferServer, free_port, require_client

PROXIED = '[server]\nproxy_protocol_from = ["127.0.0.1"]\n'


class HAProxy:
    def __init__(self, folder: Path, backend_port: int):
        self.port = free_port()
        self.config = folder / "haproxy.cfg"
        self.config.write_text(f"""
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind 127.0.0.1:{self.port}
    default_backend nodes
backend nodes
    server node1 127.0.0.1:{backend_port} send-proxy-v2
""")
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([require_client("haproxy"), "-db", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    def __exit__(self, *exc):
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)


def curl(port: int, user: str, password: str, source: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-k", "--interface", source, "-o", "/dev/null", "-w", "%{http_code}",
                          "--max-time", "20", "-u", f"{user}:{password}", "-X", "PROPFIND", "-H", "Depth: 0",
                          f"https://127.0.0.1:{port}/"], capture_output=True, text=True)
    return out.returncode, out.stdout


def test_behind_haproxy_the_guesser_is_banned_and_its_neighbours_are_not(tmp_path):
    require_client("curl")
    with CofferServer(tmp_path / "srv", extra=PROXIED) as srv, HAProxy(tmp_path, srv.port) as lb:
        assert curl(lb.port, "alice", "alice-pw-1", "127.0.0.9") == (0, "207")
        for i in range(10):                                  # guesses from one client, through the balancer
            assert curl(lb.port, f"nobody{i}", "guess", "127.0.0.9")[1] == "401"
        assert curl(lb.port, "bob", "bob-pw-22", "127.0.0.9")[1] == "401"      # that address is banned ...
        assert curl(lb.port, "bob", "bob-pw-22", "127.0.0.10") == (0, "207")   # ... its neighbour is not
        assert curl(lb.port, "alice", "alice-pw-1", "127.0.0.11") == (0, "207")
        # the balancer's own address without a header is refused; another address cannot claim one
        assert curl(srv.port, "alice", "alice-pw-1", "127.0.0.1")[1] == "000"
        assert "sent no PROXY protocol header" in srv.log.read_text()
        with socket.create_connection(("127.0.0.1", srv.port), source_address=("127.0.0.12", 0)) as s:
            s.sendall(b"PROXY TCP4 127.0.0.10 127.0.0.1 5555 443\r\n")
            s.settimeout(10)
            try:
                assert s.recv(100) == b""                           # not TLS: closed, and nothing was claimed
            except ConnectionResetError:
                pass
        assert curl(srv.port, "alice", "alice-pw-1", "127.0.0.12")[1] == "207"   # direct clients go on as they are


def test_sftp_behind_haproxy(tmp_path):
    require_client("sftp")
    with SftpServer(tmp_path / "srv", extra="\n" + PROXIED) as srv, HAProxy(tmp_path, srv.port) as lb:
        srv.port, direct = lb.port, srv.port                       # OpenSSH talks to the balancer
        r = srv.sftp_batch("mkdir /through\nls /\n")
        assert r.returncode == 0 and "through" in r.stdout, r.stderr
        srv.port = direct                                           # straight to the node: no header
        r = srv.sftp_batch("ls /\n")
        assert r.returncode != 0
        assert "sent no PROXY protocol header" in srv.log.read_text()
