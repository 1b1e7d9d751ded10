"""Pebble, the ACME test server Let's Encrypt publishes, on loopback ports.

Its directory is served over HTTPS with a certificate from a throwaway CA made
here (`ca_file`); the certificates it issues chain to a root it makes at each
start, fetched from its management port (`root_pem`). Validation is real:
Pebble connects to `http_port` (HTTP-01) or `tls_port` (TLS-ALPN-01) on the
address the name resolves to. Stopped by its PID.
"""
from __future__ import annotations

import datetime
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webdav_harness import ServeProcess, free_port, require_client


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _directory_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """(CA file, cert file, key file) for Pebble's own HTTPS listener on localhost."""
    import ipaddress
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA for Pebble's directory")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "dir-ca.pem", folder / "dir-cert.pem", folder / "dir-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


class Pebble(ServeProcess):
    def __init__(self, folder: Path, *, http_port: int, tls_port: int, eab: dict | None = None):
        """`eab`: {key id: base64url HMAC key} makes External Account Binding required."""
        self.binary = require_client("pebble")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca_file, cert, key = _directory_certificate(self.folder)
        self.port, self.mgmt_port = free_port(), free_port()
        config = {"pebble": {"listenAddress": f"127.0.0.1:{self.port}",
                             "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                             "certificate": str(cert), "privateKey": str(key),
                             "httpPort": http_port, "tlsPort": tls_port,
                             "ocspResponderURL": "", "externalAccountBindingRequired": bool(eab),
                             "externalAccountMACKeys": dict(eab or {})}}
        self.config = self.folder / "pebble.json"
        self.config.write_text(json.dumps(config))
        self.log = self.folder / "pebble.log"
        self.proc = None

    @property
    def directory(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def _get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.read()

    def root_pem(self) -> bytes:
        return self._get(f"https://localhost:{self.mgmt_port}/roots/0")

    def start(self):
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([self.binary, "-config", str(self.config)], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("pebble exited:\n" + self.log.read_text(errors="replace"))
            try:
                self._get(self.directory)
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("pebble did not start:\n" + self.log.read_text(errors="replace"))
