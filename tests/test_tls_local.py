"""The local CA: one trust step for good, a server certificate naming every
configured name, `coffer-admin tls show`, and a replaced certificate file
served without a restart."""
import shutil
import subprocess
import sys
import time

import pytest

from webdav_harness import ROOT, CofferServer, require_client

pytestmark = pytest.mark.slow


def admin(config, *args):
    return subprocess.run([sys.executable, "-m", "scripts.admin", "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def curl_status(curl, ca, url, *extra):
    r = subprocess.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(ca),
                        "-u", "alice:alice-pw-1", "-X", "PROPFIND", "-H", "Depth: 0", *extra, url],
                       capture_output=True, text=True, timeout=30)
    return r.stdout if r.returncode == 0 else r.stderr


def test_local_ca_is_trusted_once_and_names_every_configured_name(tmp_path):
    curl = require_client("curl")
    srv = CofferServer(tmp_path, extra='[tls]\nnames = ["files.example.test"]\n')
    with srv:
        ca = tmp_path / "var" / "tls" / "ca.pem"
        assert str(ca) in srv.output and "coffer-admin tls show" in srv.output
        for name in ("localhost", "127.0.0.1", "files.example.test"):
            url = f"https://{name}:{srv.port}/"
            assert curl_status(curl, ca, url, "--resolve", f"{name}:{srv.port}:127.0.0.1") == "207", name
        show = admin(srv.config, "tls", "show")
        assert show.returncode == 0, show.stderr
        for step in (f"--ca-cert {ca}", f"--cacert {ca}", "trust_ca_cert", "certutil -addstore Root",
                     "security add-trusted-cert", "update-ca-certificates", "Firefox", "files.example.test"):
            assert step in show.stdout, step
        pem = admin(srv.config, "tls", "show", "--pem").stdout
        assert pem == ca.read_text()
    # a new name: the server certificate is issued again, by the same CA the clients already trust
    srv.config.write_text(srv.config.read_text().replace('names = ["files.example.test"]',       # same data
                                                         'names = ["files.example.test", "nas.lan"]'))
    srv.prepare = lambda: None
    with srv:
        assert "issued a server certificate" in srv.log.read_text()
        url = f"https://nas.lan:{srv.port}/"
        assert curl_status(curl, ca, url, "--resolve", f"nas.lan:{srv.port}:127.0.0.1") == "207"
        assert "nas.lan" in admin(srv.config, "tls", "show").stdout


def test_replaced_certificate_file_is_served_without_restart(tmp_path):
    curl = require_client("curl")
    # two certificates from two local CAs, made by Coffer itself in scratch folders
    from providers import config
    from server import tls
    made = []
    for i in (1, 2):
        cfg = config.from_dict({"storage": {"data_dir": str(tmp_path / f"made{i}")}})
        tls.ensure_certificate(cfg)
        made.append(tls.tls_dir(cfg))
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(made[0] / "cert.pem", certs / "cert.pem")
    shutil.copy(made[0] / "key.pem", certs / "key.pem")
    srv = CofferServer(tmp_path / "srv", extra="[tls]\ncheck_seconds = 1\n")
    text = srv.config.read_text().replace("[webdav]\n", f'[webdav]\ncert_file = "{certs / "cert.pem"}"\n'
                                          f'key_file = "{certs / "key.pem"}"\n', 1)
    srv.config.write_text(text)
    with srv:
        url = f"https://127.0.0.1:{srv.port}/"
        assert curl_status(curl, made[0] / "ca.pem", url) == "207"
        # the admin replaces the files (as certbot or another tool would): key, then certificate
        shutil.copy(made[1] / "key.pem", certs / "key.new")
        shutil.copy(made[1] / "cert.pem", certs / "cert.new")
        (certs / "key.new").replace(certs / "key.pem")
        (certs / "cert.new").replace(certs / "cert.pem")
        deadline = time.monotonic() + 20
        in_a_row = 0                       # every worker process has loaded it (each checks every second)
        while in_a_row < 8:
            assert time.monotonic() < deadline, srv.log.read_text()
            if curl_status(curl, made[1] / "ca.pem", url) == "207":
                in_a_row += 1
            else:
                in_a_row = 0
                time.sleep(0.3)
        assert curl_status(curl, made[0] / "ca.pem", url) != "207"
        assert srv.alive()
