"""The server's TLS certificate: the configured one, or a self-signed one
made on first run (its SHA-256 fingerprint is printed so users can check it).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def fingerprint(cert_file: str | os.PathLike) -> str:
    """SHA-256 fingerprint of a PEM certificate, as AA:BB:…"""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def make_self_signed(cert_file: Path, key_file: Path, host: str, days: int = 3650) -> None:
    """Write a new self-signed certificate and its private key (mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for h in {host, socket.gethostname()}:
        if not h or h in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    for ip in ("127.0.0.1", "::1"):
        if x509.IPAddress(ipaddress.ip_address(ip)) not in names:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Coffer server"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Coffer (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.replace(tmp, key_file)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(cfg) -> tuple[Path, Path, bool]:
    """(cert path, key path, created now) for the WebDAV server.

    Configured files must exist; without configured files a self-signed pair
    under <data_dir>/tls is made once and reused.
    """
    w = cfg.webdav
    if w.cert_file or w.key_file:
        if not (w.cert_file and w.key_file):
            raise FileNotFoundError("[webdav] cert_file and key_file must be set together")
        cert, key = cfg.path(w.cert_file, ""), cfg.path(w.key_file, "")
        for p in (cert, key):
            if not p.is_file():
                raise FileNotFoundError(f"TLS file {p} does not exist (see [webdav] cert_file/key_file)")
        return cert, key, False
    tls_dir = cfg.data_dir / "tls"
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert.is_file() and key.is_file():
        return cert, key, False
    make_self_signed(cert, key, w.host)
    return cert, key, True
