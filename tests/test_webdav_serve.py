"""`coffer serve`: first-run output, refusing unsafe plain HTTP, login throttling."""
import base64
import re
import os
import subprocess
import sys

import pytest

from webdav_harness import ROOT, CofferServer, free_port, write_config

pytestmark = pytest.mark.slow


def serve(config, *extra, timeout=30):
    return subprocess.run([sys.executable, "-m", "server.main", "serve", "--config", str(config), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_init_prints_account_certificate_and_help(tmp_path):
    cfg = write_config(tmp_path, free_port())
    cfg.write_text(cfg.read_text().replace('default_mode = "managed"\n', ""))     # the product's default
    proc = subprocess.Popen([sys.executable, "-m", "server.main", "serve", "--config", str(cfg), "--init", "erin"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("coffer: ready"):
                break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = "".join(lines)
    assert "created the private account 'erin'" in out
    assert re.search(r"recovery code.*: [0-9A-F]{6}(-[0-9A-F]{6}){5}", out), out
    assert "TLS certificate SHA-256 fingerprint" in out
    assert "Map network drive" in out and "davs://" in out and "rclone" in out
    password = out.split("(shown only now): ", 1)[1].split()[0]
    assert re.fullmatch(r"[a-z2-7]{5}(-[a-z2-7]{5}){4}", password), password
    assert "125-bit password" in out
    assert proc.returncode == 0


@pytest.mark.parametrize("toml,problem", [
    ('[webdav]\nhost = "0.0.0.0"\nport = 0\ntls = false\nallow_plain_http = true\n', "loopback"),
    ('[webdav]\nport = 0\ntls = false\n', "allow_plain_http"),
    ('[webdav]\nport = 0\ncert_file = "missing.pem"\nkey_file = "missing.key"\n', "does not exist"),
])
def test_unsafe_or_broken_setups_refuse_to_start(tmp_path, toml, problem):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "var"}"\n[sftp]\nenabled = false\n' + toml)
    r = serve(cfg)
    assert r.returncode != 0
    assert problem in r.stderr


def test_repeated_failures_block_new_logins(tmp_path):
    with CofferServer(tmp_path) as srv:
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"})[0] == 207      # alice logs in first
        for i in range(10):                  # ten names guessed from one address: it is banned
            bad = "Basic " + base64.b64encode(f"user{i}:not-the-password".encode()).decode()
            st, _, _ = srv.request("PROPFIND", "/", headers={"Authorization": bad, "Depth": "0"}, user=None)
            assert st == 401
        st, headers, body = srv.request("PROPFIND", "/", headers={"Depth": "0"}, user="bob")
        assert st == 401 and b"too many failed logins" in body and int(headers["retry-after"]) > 800
        # a session already verified keeps working
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"})[0] == 207
        assert srv.alive()
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config))
    try:
        with st.db.read() as c:
            n = c.exec_driver_sql("select count(*) from audit_events where event = 'login_failed'").scalar()
    finally:
        st.close()
    assert n == 10         # bob's login was refused before his password was even checked


def test_data_folder_is_private_to_the_server(tmp_path):
    """Profiles, e-mail and session addresses (the database) and the keys are
    not readable by other local users, whatever the umask, and an install
    made before with open modes is tightened on start."""
    srv = CofferServer(tmp_path, pin={"database": "sqlite", "blobs": "local"})
    srv.create_accounts()
    var = tmp_path / "var"
    var.chmod(0o755)                               # as an older release left it under umask 022
    (var / "coffer.db").chmod(0o644)
    srv.prepare = lambda: None
    old = os.umask(0o022)
    try:
        srv.start()
    finally:
        os.umask(old)
    try:
        status, _, _ = srv.request("PUT", "/notes.txt", body=b"private")
        assert status == 201
        assert srv.request("GET", "/notes.txt")[2] == b"private"
    finally:
        srv.stop()
    seen = []
    for folder, dirs, files in os.walk(var):
        for name in dirs + files:
            p = os.path.join(folder, name)
            mode = os.stat(p).st_mode & 0o777
            seen.append(os.path.relpath(p, var))
            assert mode & 0o077 == 0, f"{os.path.relpath(p, var)} is mode {mode:o}"
    assert os.stat(var).st_mode & 0o077 == 0
    assert "coffer.db" in seen and any(s.startswith("tls") for s in seen) and any("blobs" in s for s in seen)


def test_generated_passwords_are_safe_to_paste():
    """No leading '-' (read as an option by rclone obscure and others), nothing
    a shell interprets, and no two alike."""
    from providers.accounts import generate_password
    seen = {generate_password() for _ in range(5000)}
    assert len(seen) == 5000
    for pw in seen:
        assert not pw.startswith("-") and re.fullmatch(r"[a-z2-7-]+", pw) and len(pw) == 29
