"""Trusted certificates over ACME (RFC 8555), with the `acme` library.

For `[tls] acme_domains` the server obtains a certificate from
`acme_directory` (Let's Encrypt by default; ZeroSSL, step-ca or any RFC 8555
CA), proving control of each name with HTTP-01 (a plain-HTTP listener on
`acme_http_port`, which answers challenges and sends every other request to
HTTPS) or TLS-ALPN-01 (RFC 8737, answered on the HTTPS port itself). It
renews when fewer than `acme_renew_days` are left, checking every
`check_seconds`, while the server keeps serving. The account key and the
certificates live in `<data_dir>/tls/acme/`, private keys mode 0600.
"""
from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages

from . import tls

log = logging.getLogger(__name__)

ALPN = "acme-tls/1"
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")     # RFC 8737 id-pe-acmeIdentifier


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a tls-alpn-01 challenge."""
    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737: the validation is a certificate presented for ALPN acme-tls/1."""
    typ = "tls-alpn-01"
    response_cls = TLSALPN01Response

    def validation(self, account_key, **unused):
        return self.key_authorization(account_key)


class Challenges:
    """Answers in flight: HTTP-01 tokens and TLS-ALPN-01 contexts by name.

    With a `folder`, TLS-ALPN-01 answers are also kept there (one file per
    name, holding the key authorization), so every worker process answers a
    validation connection whichever of them the kernel gives it to."""

    def __init__(self, folder: Path | None = None):
        self.http: dict[str, str] = {}
        self.folder = folder
        self._alpn: dict[str, ssl.SSLContext] = {}
        self._seen = None

    @property
    def alpn(self) -> dict[str, ssl.SSLContext]:
        if self.folder is None:
            return self._alpn
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            return {}
        if stamp != self._seen:
            self._seen = stamp
            found = {}
            for f in self.folder.glob("alpn-*"):
                try:
                    found[f.name[5:]] = f.read_text()
                except OSError:
                    continue
            self._alpn = {name: alpn_context(name, auth) for name, auth in found.items()}
        return self._alpn

    def add_alpn(self, name: str, key_authorization: str) -> None:
        if self.folder is None:
            self._alpn[name] = alpn_context(name, key_authorization)
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tls.write_file(self.folder / f"alpn-{name}", key_authorization.encode())

    def clear(self) -> None:
        """Forget answers left by an issuance that did not finish (a crash)."""
        if self.folder is not None:
            for f in self.folder.glob("alpn-*"):
                f.unlink(missing_ok=True)
        self._alpn.clear()
        self.http.clear()

    def drop_alpn(self, name: str) -> None:
        if self.folder is None:
            self._alpn.pop(name, None)
            return
        (self.folder / f"alpn-{name}").unlink(missing_ok=True)


def alpn_context(name: str, key_authorization: str) -> ssl.SSLContext:
    """A server context presenting the RFC 8737 validation certificate for `name`."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    t = tls.now()
    try:
        san = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        san = x509.DNSName(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME challenge")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - datetime.timedelta(minutes=5)).not_valid_after(t + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory() as d:          # ssl loads keys from files only
        p = Path(d) / "c.pem"
        tls.write_file(p, tls.key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
        ctx.load_cert_chain(p)
    ctx.set_alpn_protocols([ALPN])
    return ctx


def client_hello(data: bytes) -> tuple[str | None, list[str]] | None:
    """(server name, ALPN protocols) offered in a TLS ClientHello, or None
    when `data` does not hold a whole one."""
    try:
        if data[0] != 0x16 or len(data) < 5 + struct.unpack("!H", data[3:5])[0]:
            return None
        p = 5 + 4 + 2 + 32                                   # record, handshake header, version, random
        p += 1 + data[p]                                     # session id
        p += 2 + struct.unpack("!H", data[p:p + 2])[0]       # cipher suites
        p += 1 + data[p]                                     # compression methods
        end = p + 2 + struct.unpack("!H", data[p:p + 2])[0]
        p += 2
        name, protocols = None, []
        while p + 4 <= end:
            typ, n = struct.unpack("!HH", data[p:p + 4])
            body = data[p + 4:p + 4 + n]
            if typ == 0 and len(body) > 5:                   # server_name: list, type 0, length, name
                name = body[5:5 + struct.unpack("!H", body[3:5])[0]].decode("ascii", "replace").lower()
            elif typ == 16:                                  # application_layer_protocol_negotiation
                q = 2
                while q < len(body):
                    protocols.append(body[q + 1:q + 1 + body[q]].decode("ascii", "replace"))
                    q += 1 + body[q]
            p += 4 + n
        return name, protocols
    except (IndexError, struct.error):
        return None


def challenge_context(sock: socket.socket, pending: Challenges) -> ssl.SSLContext | None:
    """The validation context when this connection is a TLS-ALPN-01 check
    (peeks at the ClientHello; nothing is consumed)."""
    old = sock.gettimeout()
    sock.settimeout(2)
    try:
        data = b""
        for _ in range(20):
            data = sock.recv(16384, socket.MSG_PEEK)
            hello = client_hello(data)
            if hello is not None or not data or len(data) >= 16384:
                break
            threading.Event().wait(0.02)
        else:
            return None
    except OSError:
        return None
    finally:
        sock.settimeout(old)
    if not hello or ALPN not in hello[1]:
        return None
    return pending.alpn.get(hello[0] or "")


class _ChallengeHandler(http.server.BaseHTTPRequestHandler):
    server_version = "Coffer"
    pending: Challenges
    https_port: int

    def do_GET(self):
        prefix = "/.well-known/acme-challenge/"
        if self.path.startswith(prefix):
            answer = self.pending.http.get(self.path[len(prefix):])
            if answer is None:
                self.send_error(404)
                return
            body = answer.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0] or "localhost"
        port = "" if self.https_port == 443 else f":{self.https_port}"
        self.send_response(308)
        self.send_header("Location", f"https://{host}{port}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):          # requests are not logged: only challenges come here
        pass


class HTTPChallengeServer:
    """The plain-HTTP listener for HTTP-01: challenge answers, else a redirect to HTTPS."""

    def __init__(self, host: str, port: int, https_port: int, pending: Challenges):
        handler = type("Handler", (_ChallengeHandler,), {"pending": pending, "https_port": https_port})
        cls = http.server.ThreadingHTTPServer
        if ":" in host:
            cls = type("Server6", (cls,), {"address_family": socket.AF_INET6})
        self.httpd = cls((host or "0.0.0.0", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="acme-http", daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class AcmeManager:
    """Obtains and renews the certificate for `[tls] acme_domains`."""

    def __init__(self, cfg, pending: Challenges):
        self.cfg, self.t, self.pending = cfg, cfg.tls, pending
        pending.clear()
        self.folder = tls.acme_dir(cfg)
        self.cert_file, self.key_file = self.folder / "cert.pem", self.folder / "key.pem"

    def due(self) -> str | None:
        """Why a new certificate is needed now, or None."""
        if not tls.pair_matches(self.cert_file, self.key_file):
            return "no certificate yet"
        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        wanted = {n.lower() for n in self.t.acme_domains}
        if not wanted <= tls.cert_names(cert):
            return f"the certificate does not name {', '.join(sorted(wanted - tls.cert_names(cert)))}"
        left = cert.not_valid_after_utc - tls.now()
        if left < datetime.timedelta(days=self.t.acme_renew_days):
            return f"it expires in {left.days} days (renewal at {self.t.acme_renew_days})"
        return None

    def _account_key(self) -> jose.JWKRSA:
        path = self.folder / "account.key"
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        else:
            key = rsa.generate_private_key(65537, 2048)
            tls.write_file(path, tls.key_pem(key))
        return jose.JWKRSA(key=key)

    def _client(self, jwk) -> client.ClientV2:
        verify = str(self.cfg.path(self.t.acme_ca_file, "")) if self.t.acme_ca_file else True
        net = client.ClientNetwork(jwk, user_agent="coffer", verify_ssl=verify)
        directory = client.ClientV2.get_directory(self.t.acme_directory, net)
        acme = client.ClientV2(directory, net)
        eab = None
        if self.t.acme_eab_kid:         # the CA ties the new account to one made on its web site
            hmac_key = self.cfg.path(self.t.acme_eab_hmac_key_file, "").read_text().strip()
            eab = messages.ExternalAccountBinding.from_data(account_public_key=jwk.public_key(),
                                                            kid=self.t.acme_eab_kid, hmac_key=hmac_key,
                                                            directory=directory)
        try:
            acme.new_account(messages.NewRegistration.from_data(email=self.t.acme_email or None,
                                                                terms_of_service_agreed=True,
                                                                external_account_binding=eab))
        except errors.ConflictError as e:             # this key has an account already
            net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        return acme

    def obtain(self) -> None:
        """Get a certificate for every name now and write it (key first, then
        the chain, each atomically); raises on failure with the CA's reason."""
        jwk = self._account_key()
        acme = self._client(jwk)
        key = ec.generate_private_key(ec.SECP256R1())
        names = [n.lower() for n in self.t.acme_domains]
        dns = [n for n in names if not _is_ip(n)]
        ips = [ipaddress.ip_address(n) for n in names if _is_ip(n)]
        csr = crypto_util.make_csr(tls.key_pem(key), dns, ipaddrs=ips)
        order = acme.new_order(csr)
        answered = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                chall = next((c for c in authz.body.challenges if c.chall.typ == self.t.acme_challenge), None)
                if chall is None:
                    offered = ", ".join(c.chall.typ for c in authz.body.challenges)
                    raise errors.Error(f"{self.t.acme_directory} offers no {self.t.acme_challenge} challenge "
                                       f"for {authz.body.identifier.value} (it offers {offered}); "
                                       f"change [tls] acme_challenge")
                response, validation = chall.chall.response_and_validation(jwk)
                name = authz.body.identifier.value.lower()
                if self.t.acme_challenge == "http-01":
                    token = chall.chall.encode("token")
                    self.pending.http[token] = validation
                    answered.append(("http", token))
                else:
                    self.pending.add_alpn(name, validation)
                    answered.append(("alpn", name))
                acme.answer_challenge(chall, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=120)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for kind, k in answered:
                if kind == "http":
                    self.pending.http.pop(k, None)
                else:
                    self.pending.drop_alpn(k)
        # key first: a pair that does not match (a crash in between) is ignored by tls.ensure_certificate
        tls.write_file(self.key_file, tls.key_pem(key))
        tls.write_file(self.cert_file, order.fullchain_pem.encode())


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False
