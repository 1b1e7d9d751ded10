"""Run the WebDAV application on cheroot, over HTTPS (plain HTTP only on a
loopback address, and only when the config says so).

The certificate is checked every `[tls] check_seconds`: an ACME one due for
renewal is renewed, a local one re-issued when stale, and a replaced file is
loaded; new connections get the new certificate while open ones go on.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path

from cheroot import errors as cheroot_errors
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from providers.config import ConfigError
from . import http_io, proxy_protocol, tls
from .http_gate import Gate
from .webdav_app import CofferWebDAV

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReloadingSSLAdapter(BuiltinSSLAdapter):
    """cheroot's adapter, with a certificate that can be replaced while
    serving, and answers to TLS-ALPN-01 checks while one is pending."""

    def __init__(self, cert: Path, key: Path, pending=None):
        super().__init__(str(cert), str(key))
        self.pending = pending

    def reload(self, cert: Path, key: Path) -> None:
        ctx = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert), str(key))
        self.context = ctx                 # one assignment: each handshake sees the old or the new

    def wrap(self, sock):
        if self.pending is not None and self.pending.alpn:
            from .tls_acme import challenge_context
            ctx = challenge_context(sock, self.pending)
            if ctx is not None:
                try:
                    ctx.wrap_socket(sock, server_side=True).close()
                except (ssl.SSLError, OSError):
                    sock.close()
                raise cheroot_errors.FatalSSLAlert("answered an ACME tls-alpn-01 check")
        return super().wrap(sock)


def _stamp(*paths: Path) -> tuple:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class CertificateKeeper:
    """Obtains, renews and reloads the served certificate in the background."""

    def __init__(self, cfg, adapter: ReloadingSSLAdapter, stamp: tuple, https_port: int, acme: bool = True):
        """`stamp`: the files' `_stamp` taken before the adapter loaded them
        (taken after, a certificate replaced in between would never be
        loaded by this process)."""
        self.cfg, self.adapter = cfg, adapter
        self.stamp = stamp
        self.acme = self.http = None
        if cfg.tls.acme_domains and acme:
            from .tls_acme import AcmeManager, HTTPChallengeServer
            self.acme = AcmeManager(cfg, adapter.pending)
            if cfg.tls.acme_challenge == "http-01":
                try:
                    self.http = HTTPChallengeServer(cfg.webdav.host, cfg.tls.acme_http_port, https_port,
                                                    adapter.pending)
                except OSError as e:
                    raise ConfigError(f"[tls] acme_http_port {cfg.tls.acme_http_port}: cannot listen ({e}); "
                                      f"HTTP-01 needs port 80 reachable from the internet (or use "
                                      f"acme_challenge = \"tls-alpn-01\" with the HTTPS port on 443)") from None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tls-keeper", daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        # a worker without ACME looks often for the certificate the ACME worker writes
        often = min(self.cfg.tls.check_seconds, 2) if self.cfg.tls.acme_domains else self.cfg.tls.check_seconds
        wait = 0.0 if self.acme else often
        while not self.stopping.wait(wait):
            try:
                self.check()
            except Exception:
                log.exception("checking the TLS certificate failed")
            wait = self.cfg.tls.check_seconds if self.acme else often

    def check(self) -> None:
        if self.acme is not None:
            reason = self.acme.due()
            if reason:
                log.info("requesting a certificate for %s from %s: %s", ", ".join(self.cfg.tls.acme_domains),
                         self.cfg.tls.acme_directory, reason)
                try:
                    self.acme.obtain()
                except Exception as e:
                    log.error("ACME: no certificate for %s from %s (%s: %s); retrying in %d s",
                              ", ".join(self.cfg.tls.acme_domains), self.cfg.tls.acme_directory,
                              type(e).__name__, e, self.cfg.tls.check_seconds)
        if self._renewing():
            return
        cert, key, _ = tls.ensure_certificate(self.cfg)
        stamp = _stamp(cert, key)
        if stamp != self.stamp:
            self.adapter.reload(cert, key)
            self.stamp = stamp
            log.info("now serving the TLS certificate %s (SHA-256 %s)", cert, tls.fingerprint(cert))

    def _renewing(self) -> bool:
        """Is an ACME certificate half written (its new key there, the chain
        not yet: the worker holding the renewal writes them one after the
        other)? Then keep serving the current one and look again shortly;
        falling back to the local certificate meanwhile would show clients a
        certificate they do not trust. (At start, a pair left unmatched by a
        crash does fall back: tls.ensure_certificate.)"""
        if not self.cfg.tls.acme_domains or self.cfg.webdav.cert_file:
            return False
        a = tls.acme_dir(self.cfg)
        if not ((a / "cert.pem").is_file() and (a / "key.pem").is_file()):
            return False
        return not tls.pair_matches(a / "cert.pem", a / "key.pem")

    def stop(self):
        self.stopping.set()
        if self.http is not None:
            self.http.stop()
        if self.thread.is_alive():
            self.thread.join(timeout=10)


class HTTPServer(wsgi.Server):
    """cheroot's server with the Gate in front (server/http_gate.py), on a
    socket bound here or handed over already listening (a worker process)."""

    listening: socket.socket | None = None
    limits = None
    loads = None                      # (workers.Loads, this worker's slot) when there are several

    def prepare(self):
        if self.listening is None:
            super().prepare()
            self._connections.close()     # the plain manager never ran: only the selector to let go
        else:
            self._interrupt = None
            if self.software is None:
                self.software = f"{self.version} Server"
            self.socket = self.listening
            self.bind_addr = self.socket.getsockname()[:2]
            self.requests.start()
            self.ready = True
            self._start_time = time.time()
        self._connections = Gate(self, self.limits)


def listen_webdav(cfg) -> socket.socket:
    """Bind and listen on `[webdav] host:port` (before worker processes start)."""
    w = cfg.webdav
    family = socket.AF_INET6 if ":" in w.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((w.host, w.port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"[webdav] cannot listen on {w.host} port {w.port}: {e.strerror or e}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class WebDAVServer:
    def __init__(self, app: CofferWebDAV, server: wsgi.Server, url: str, fingerprint: str | None,
                 keeper: CertificateKeeper | None = None):
        self.app = app
        self.server = server
        self.url = url
        self.fingerprint = fingerprint
        self.keeper = keeper
        self.thread = threading.Thread(target=self._serve, name="webdav", daemon=True)

    def _serve(self):
        try:
            self.server.serve()
        except Exception:
            log.exception("the WebDAV server stopped with an error")

    def stop(self):
        if self.keeper is not None:
            self.keeper.stop()
        self.server.stop()
        self.thread.join(timeout=10)
        self.app.close()


def check_webdav(cfg) -> None:
    """Raise ConfigError for a plain-HTTP setup not explicitly allowed on loopback."""
    w = cfg.webdav
    if not w.tls:
        if not w.allow_plain_http:
            raise ConfigError("[webdav] tls = false needs allow_plain_http = true (and a loopback host)")
        if not is_loopback(w.host):
            raise ConfigError(f"[webdav] plain HTTP is only allowed on a loopback address, not {w.host!r}")


def start_webdav(storage, cfg, app=None, sock: socket.socket | None = None, acme: bool = True,
                 loads=None) -> WebDAVServer:
    """Serve in a background thread, on `sock` (already listening) or on a
    socket bound now. Only one process of a node runs ACME (`acme`); the
    others load the certificate it writes. A worker process shares new
    connections with the others by `loads`: (workers.Loads, its slot).
    Raises ConfigError for a
    plain-HTTP setup that is not explicitly allowed on loopback."""
    w = cfg.webdav
    check_webdav(cfg)
    app = app or CofferWebDAV(storage, cfg)
    server = HTTPServer((w.host, w.port), app, numthreads=w.threads, max=w.max_threads, server_name="Coffer",
                        request_queue_size=1024, timeout=w.io_timeout_seconds, shutdown_timeout=5)
    server.listening, server.limits, server.loads = sock, w, loads
    server.proxies = proxy_protocol.networks(cfg.server.proxy_protocol_from)
    server.max_request_body_size = 0
    server.max_request_header_size = 64 * 1024
    server.ConnectionClass = http_io.Connection
    fp = keeper = loaded = None
    if w.tls:
        cert, key, created = tls.ensure_certificate(cfg)
        loaded = _stamp(cert, key)
        pending = None
        if cfg.tls.acme_domains:
            from .tls_acme import Challenges
            pending = Challenges(tls.acme_dir(cfg) / "pending")     # shared by the worker processes
        server.ssl_adapter = ReloadingSSLAdapter(cert, key, pending)
        fp = tls.fingerprint(cert)
        if created:
            log.info("issued a server certificate from the local CA %s", tls.tls_dir(cfg) / "ca.pem")
    server.prepare()                       # binds now, so errors surface here
    host, port = server.bind_addr[:2]
    if w.tls:
        try:
            keeper = CertificateKeeper(cfg, server.ssl_adapter, loaded, port, acme=acme)
        except Exception:
            server.stop()
            raise
    srv = WebDAVServer(app, server, tls.public_url(cfg, host, port), fp, keeper)
    srv.thread.start()
    if keeper is not None:
        keeper.start()
    return srv

