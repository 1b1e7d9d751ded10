"""Run the WebDAV application on cheroot, over HTTPS (plain HTTP only on a
loopback address, and only when the config says so)."""
from __future__ import annotations

import ipaddress
import logging
import threading

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from providers.config import ConfigError
from . import http_io, tls
from .webdav_app import CofferWebDAV

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebDAVServer:
    def __init__(self, app: CofferWebDAV, server: wsgi.Server, url: str, fingerprint: str | None):
        self.app = app
        self.server = server
        self.url = url
        self.fingerprint = fingerprint
        self.thread = threading.Thread(target=self._serve, name="webdav", daemon=True)

    def _serve(self):
        try:
            self.server.serve()
        except Exception:
            log.exception("the WebDAV server stopped with an error")

    def stop(self):
        self.server.stop()
        self.thread.join(timeout=10)
        self.app.close()


def start_webdav(storage, cfg, app=None) -> WebDAVServer:
    """Bind, then serve in a background thread. Raises ConfigError for a
    plain-HTTP setup that is not explicitly allowed on loopback."""
    w = cfg.webdav
    if not w.tls:
        if not w.allow_plain_http:
            raise ConfigError("[webdav] tls = false needs allow_plain_http = true (and a loopback host)")
        if not is_loopback(w.host):
            raise ConfigError(f"[webdav] plain HTTP is only allowed on a loopback address, not {w.host!r}")
    app = app or CofferWebDAV(storage, cfg)
    server = wsgi.Server((w.host, w.port), app, numthreads=w.threads, server_name="Coffer",
                         request_queue_size=64, timeout=60, shutdown_timeout=5)
    server.max_request_body_size = 0
    server.ConnectionClass = http_io.Connection
    fp = None
    if w.tls:
        cert, key, created = tls.ensure_certificate(cfg)
        server.ssl_adapter = BuiltinSSLAdapter(str(cert), str(key))
        fp = tls.fingerprint(cert)
        if created:
            log.info("created a self-signed TLS certificate")
    server.prepare()                       # binds now, so errors surface here
    host, port = server.bind_addr[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if w.tls else 'http'}://{shown}:{port}/"
    srv = WebDAVServer(app, server, url, fp)
    srv.thread.start()
    return srv
