"""The server's TLS certificate, on disk.

Three sources, in this order: the files named by `[webdav] cert_file` and
`key_file`; a certificate obtained over ACME for `[tls] acme_domains` (see
`tls_acme`); otherwise Coffer's own local certificate authority under
`<data_dir>/tls/`: a CA made once (`ca.pem`, ten years) that users trust one
time, and a server certificate it signs (`cert.pem`) naming every address and
host name the server answers on. The server certificate is re-issued by the
same CA when a name is missing or it nears expiry, so clients that trust the
CA never need a new trust step.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shlex
import socket
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers.keyfile import write_private

LEAF_DAYS = 397                  # within what macOS and browsers accept from a user-trusted CA
CA_DAYS = 3650
REISSUE_DAYS = 30                # a local server certificate is re-issued this long before expiry


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def fingerprint(cert_file: str | os.PathLike) -> str:
    """SHA-256 fingerprint of a PEM certificate (the first in the file), as AA:BB:…"""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def write_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (providers/keyfile.py), in a folder only the server's user may enter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_private(path, data)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_names(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate's SAN lists, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)} | \
        {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def _local_addresses(family: int) -> set[str]:
    """This machine's addresses on the networks it routes to (no packet is sent)."""
    found = set()
    probe = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            found.add(s.getsockname()[0])
    except OSError:
        pass
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found |= {ai[4][0] for ai in socket.getaddrinfo(name, None, family)}
        except OSError:
            pass
    return {a.split("%", 1)[0] for a in found}


_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def served_names(cfg) -> list[str]:
    """Every name and address the WebDAV server answers on: loopback, its
    configured host, this machine's names, its addresses when it listens on
    all of them, and `[tls] names`."""
    host = cfg.webdav.host
    names = ["localhost", "127.0.0.1", "::1"]
    extra = [socket.gethostname(), socket.getfqdn(), *cfg.tls.names]
    if host in ("0.0.0.0", ""):
        extra += sorted(_local_addresses(socket.AF_INET))
    elif host == "::":
        extra += sorted(_local_addresses(socket.AF_INET) | _local_addresses(socket.AF_INET6))
    else:
        extra.append(host)
    for n in extra:
        n = n.strip().lower().strip("[]")
        try:
            n = str(ipaddress.ip_address(n))
        except ValueError:
            if not _HOSTNAME.fullmatch(n):
                continue
        if n not in names:
            names.append(n)
    return names


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _local_ca(tls_dir: Path):
    """(certificate, key) of the local CA, made on first use."""
    ca_file, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    if ca_file.is_file() and ca_key.is_file():
        return (x509.load_pem_x509_certificate(ca_file.read_bytes()),
                serialization.load_pem_private_key(ca_key.read_bytes(), None))
    key = ec.generate_private_key(ec.SECP256R1())
    # a name of its own, so that two installations' CAs never look alike in a trust store
    label = f"Coffer local CA {socket.gethostname()} {os.urandom(4).hex()}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Coffer")])
    t = now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - datetime.timedelta(minutes=5)).not_valid_after(t + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_file(ca_key, key_pem(key))
    write_file(ca_file, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue_local(tls_dir: Path, names: list[str]) -> None:
    ca_cert, ca_key = _local_ca(tls_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    t = now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - datetime.timedelta(minutes=5)).not_valid_after(t + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_file(tls_dir / "key.pem", key_pem(key))
    write_file(tls_dir / "cert.pem", cert.public_bytes(serialization.Encoding.PEM))


def _local_is_current(tls_dir: Path, names: list[str]) -> bool:
    cert_file, ca_file = tls_dir / "cert.pem", tls_dir / "ca.pem"
    if not (cert_file.is_file() and (tls_dir / "key.pem").is_file() and ca_file.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return (set(names) <= cert_names(cert)
            and cert.not_valid_after_utc - now() > datetime.timedelta(days=REISSUE_DAYS))


def pair_matches(cert_file: Path, key_file: Path) -> bool:
    """Both files exist and the key is the certificate's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (OSError, ValueError):
        return False
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tls_dir(cfg) -> Path:
    return cfg.data_dir / "tls"


def acme_dir(cfg) -> Path:
    return tls_dir(cfg) / "acme"


def ensure_certificate(cfg) -> tuple[Path, Path, bool]:
    """(cert path, key path, made now) of the certificate to serve.

    Configured files must exist. With `[tls] acme_domains`, the ACME
    certificate once one was obtained (until then, the local one). Otherwise
    the local CA's server certificate, issued again when stale.
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
    if cfg.tls.acme_domains:
        a = acme_dir(cfg)
        if pair_matches(a / "cert.pem", a / "key.pem"):
            return a / "cert.pem", a / "key.pem", False
    d = tls_dir(cfg)
    names = served_names(cfg)
    if _local_is_current(d, names):
        return d / "cert.pem", d / "key.pem", False
    _issue_local(d, names)
    return d / "cert.pem", d / "key.pem", True


def served_cert_file(cfg) -> Path | None:
    """The certificate the WebDAV port presents now, without making one (as
    `ensure_certificate` does at start); None without TLS."""
    if not cfg.webdav.tls:
        return None
    if cfg.webdav.cert_file:
        return cfg.path(cfg.webdav.cert_file, "")
    a = acme_dir(cfg)
    if cfg.tls.acme_domains and pair_matches(a / "cert.pem", a / "key.pem"):
        return a / "cert.pem"
    return tls_dir(cfg) / "cert.pem"


def local_ca_file(cfg) -> Path | None:
    """The file clients must trust, when the server uses Coffer's local CA."""
    if cfg.webdav.cert_file or not cfg.webdav.tls:
        return None
    if cfg.tls.acme_domains and pair_matches(acme_dir(cfg) / "cert.pem", acme_dir(cfg) / "key.pem"):
        return None
    return tls_dir(cfg) / "ca.pem"


def cert_info(path: Path) -> dict:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return {"path": str(path), "sha256": fingerprint(path), "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(), "serial": f"{cert.serial_number:x}",
            "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"),
            "names": sorted(cert_names(cert))}


def public_url(cfg, host: str | None = None, port: int | None = None) -> str:
    """The URL to give clients: the first ACME name, else the address
    listened on (loopback for a wildcard, which answers there too)."""
    host = cfg.webdav.host if host is None else host
    port = cfg.webdav.port if port is None else port
    if cfg.tls.acme_domains and cfg.webdav.tls:
        host = cfg.tls.acme_domains[0]
    elif host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if cfg.webdav.tls else 'http'}://{shown}:{port}/"


def trust_steps(ca: Path, url: str) -> list[tuple[str, str]]:
    """(client, what to do) to trust the local CA `ca`, one line per client."""
    q = shlex.quote(str(ca))
    return [
        ("rclone", f"rclone --ca-cert {q} ...   (or export RCLONE_CA_CERT={q})"),
        ("curl", f"curl --cacert {q} {url}"),
        ("davfs2", f"echo 'trust_ca_cert {ca}' >> /etc/davfs2/davfs2.conf   (as root; davfs2 1.6+)"),
        ("duplicity", f"duplicity --ssl-cacert-file {q} ... webdavs://..."),
        ("Windows", "certutil -addstore Root ca.pem   (as administrator, after copying the file; "
                    "then Explorer maps the drive)"),
        ("macOS", "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ca.pem"),
        ("Debian/Ubuntu, GNOME Files",
         f"sudo cp {q} /usr/local/share/ca-certificates/coffer.crt && sudo update-ca-certificates"),
        ("Fedora/RHEL", f"sudo cp {q} /etc/pki/ca-trust/source/anchors/coffer.pem && sudo update-ca-trust"),
        ("Firefox", "Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import "
                    "ca.pem, tick 'Trust this CA to identify websites'"),
    ]
