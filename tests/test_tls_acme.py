"""Trusted certificates over ACME, end to end against Pebble.

Coffer obtains a certificate for `localhost` with real HTTP-01 and TLS-ALPN-01
validation (Pebble connects back to Coffer's listeners), serves it, a client
that trusts only Pebble's root connects without any certificate option, and
renewal replaces the certificate for new connections while an open one goes on.
"""
import base64
import http.client
import os
import ssl
import subprocess
import time

import pytest
from cryptography import x509

from pebble_harness import Pebble
from webdav_harness import CofferServer, free_port, require_client, write_config

pytestmark = [pytest.mark.slow, pytest.mark.clients]


def served_certificate(port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="localhost") as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def wait_for_issuer(port: int, pebble: Pebble, srv: CofferServer, not_serial=None, timeout=60) -> x509.Certificate:
    """The certificate from Pebble, once every worker process serves it.
    The worker that obtained it serves it at once; the others load it at
    their next check of the files (every second here). Which worker takes a
    connection is the kernel's choice, so eight connections in a row may all
    reach the first: once they get it, the others are given three seconds
    and eight connections in a row must get it again."""
    deadline = time.monotonic() + timeout
    in_a_row, settled = 0, False
    while time.monotonic() < deadline:
        cert = served_certificate(port)
        if "Pebble" in cert.issuer.rfc4514_string() and cert.serial_number != not_serial:
            in_a_row += 1
            if in_a_row == 8 and settled:
                return cert
            if in_a_row == 8:
                time.sleep(3)
                in_a_row, settled = 0, True
            continue
        in_a_row = 0
        assert srv.alive(), srv.log.read_text()
        time.sleep(0.2)
    raise AssertionError("no certificate from Pebble was served:\n" + srv.log.read_text()
                         + "\n--- pebble:\n" + pebble.log.read_text())


def acme_server(tmp_path, pebble: Pebble, https_port: int, http_port: int, challenge: str, renew_days=30,
                more: str = ""):
    extra = f"""
[tls]
acme_domains = ["localhost"]
acme_email = "admin@example.org"
acme_directory = "{pebble.directory}"
acme_ca_file = "{pebble.ca_file}"
acme_challenge = "{challenge}"
acme_http_port = {http_port}
acme_renew_days = {renew_days}
check_seconds = 1
{more}"""
    srv = CofferServer(tmp_path / "coffer", extra=extra)
    srv.port = https_port
    srv.config = write_config(srv.folder, https_port, extra=extra)
    return srv


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_certificate_obtained_over_acme_is_trusted_without_flags(tmp_path, challenge):
    curl = require_client("curl")
    https_port, http_port = free_port(), free_port()
    with Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port) as pebble:
        with acme_server(tmp_path, pebble, https_port, http_port, challenge) as srv:
            cert = wait_for_issuer(https_port, pebble, srv)
            assert "localhost" in {n.value for n in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value}
            root = tmp_path / "pebble-root.pem"
            root.write_bytes(pebble.root_pem())
            # a client whose trust store holds Pebble's root (as a system store holds Let's Encrypt's)
            r = subprocess.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u", "alice:alice-pw-1",
                                "-X", "PROPFIND", "-H", "Depth: 0", f"https://localhost:{https_port}/"],
                               env=dict(os.environ, CURL_CA_BUNDLE=str(root)), capture_output=True, text=True,
                               timeout=30)
            assert (r.returncode, r.stdout) == (0, "207"), r.stderr
            # and a client trusting only the system store is refused: it is Pebble's root that made it work
            r = subprocess.run([curl, "-sS", "-o", "/dev/null", f"https://localhost:{https_port}/"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 60, r.stderr
            if challenge == "http-01":
                # the challenge listener sends everything else to HTTPS
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
                c.request("GET", "/docs/a.txt", headers={"Host": "localhost"})
                resp = c.getresponse()
                assert resp.status == 308
                assert resp.getheader("Location") == f"https://localhost:{https_port}/docs/a.txt"
    acme = tmp_path / "coffer" / "var" / "tls" / "acme"
    for name in ("account.key", "key.pem"):
        assert os.stat(acme / name).st_mode & 0o077 == 0
    assert os.stat(acme).st_mode & 0o077 == 0


def test_renewal_replaces_the_certificate_while_connections_continue(tmp_path):
    https_port, http_port = free_port(), free_port()
    with Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port) as pebble:
        # Pebble's certificates last five years: renewing below ten makes every check renew
        with acme_server(tmp_path, pebble, https_port, http_port, "http-01", renew_days=3650) as srv:
            first = wait_for_issuer(https_port, pebble, srv)
            root = tmp_path / "pebble-root.pem"
            root.write_bytes(pebble.root_pem())
            ctx = ssl.create_default_context(cafile=str(root))
            auth = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pw-1").decode()}
            kept = http.client.HTTPSConnection("localhost", https_port, context=ctx, timeout=30)
            kept.request("PUT", "/before.txt", body=b"one", headers=auth)
            assert kept.getresponse().read() is not None
            kept_serial = x509.load_der_x509_certificate(kept.sock.getpeercert(binary_form=True)).serial_number
            renewed = wait_for_issuer(https_port, pebble, srv, not_serial=kept_serial)
            assert renewed.serial_number not in (first.serial_number, kept_serial)
            # the open connection goes on, on its own certificate
            kept.request("GET", "/before.txt", headers=auth)
            resp = kept.getresponse()
            assert (resp.status, resp.read()) == (200, b"one")
            assert x509.load_der_x509_certificate(kept.sock.getpeercert(binary_form=True)).serial_number \
                == kept_serial
            # a new connection verifies the renewed one against Pebble's root, by name
            fresh = http.client.HTTPSConnection("localhost", https_port, context=ctx, timeout=30)
            fresh.request("GET", "/before.txt", headers=auth)
            resp = fresh.getresponse()
            assert (resp.status, resp.read()) == (200, b"one")
            kept.close()
            fresh.close()
        assert "now serving the TLS certificate" in srv.log.read_text()


def test_a_ca_that_requires_external_account_binding(tmp_path):
    """CAs such as ZeroSSL issue only to accounts bound to one made on their
    site: with the key id and HMAC key set, Coffer binds its account and gets
    its certificate; without them, the CA's refusal is logged and the local
    certificate stays in service."""
    https_port, http_port = free_port(), free_port()
    hmac_key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    with Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port, eab={"kid-1": hmac_key}) as pebble:
        with acme_server(tmp_path / "unbound", pebble, https_port, http_port, "http-01") as srv:
            deadline = time.monotonic() + 30
            while "externalAccountRequired" not in srv.log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "externalAccountRequired" in srv.log.read_text(), srv.log.read_text()
            assert "Pebble" not in served_certificate(https_port).issuer.rfc4514_string()
        keyfile = tmp_path / "eab.key"
        keyfile.write_text(hmac_key + "\n")
        keyfile.chmod(0o600)
        more = f'acme_eab_kid = "kid-1"\nacme_eab_hmac_key_file = "{keyfile}"\n'
        with acme_server(tmp_path / "bound", pebble, https_port, http_port, "http-01", more=more) as srv:
            cert = wait_for_issuer(https_port, pebble, srv)
            assert "localhost" in {n.value for n in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value}
