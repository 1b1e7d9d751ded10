"""App passwords: one per device or backup job, for a `private` account
too, surviving a change of the main password, ended by a revocation, and
held to their scope (a `backup` one cannot destroy the account's past).
Driven through the installed `coffer-admin`, a real server, curl, rclone,
OpenSSH and restic."""
import json
import os
import re
import subprocess

import paramiko
import pytest

from providers import config
from providers.errors import AuthenticationFailed, PermissionDenied
from providers.storage import Storage

from sftp_harness import SftpServer
from webdav_harness import CofferServer, require_client

pytestmark = pytest.mark.slow

from admin_harness import ADMIN


def admin(cfg_path, *args, input: str = ""):
    p = subprocess.run([ADMIN, "--config", str(cfg_path), *args], input=input, capture_output=True, text=True,
                       timeout=120)
    return p


def make_app(cfg_path, name, label, scope="full", password=None) -> str:
    p = admin(cfg_path, "user", "app-password", "add", name, label, "--scope", scope, "--json",
              *(["--password-stdin"] if password else []), input=(password + "\n") if password else "")
    assert p.returncode == 0, p.stderr
    secret = json.loads(p.stdout)["password"]
    assert secret.startswith("app-")
    return secret


def curl(srv, method, path, user, password, body: bytes | None = None) -> int:
    """curl's status for one request; the credentials reach it on stdin
    (-K -), never on its command line."""
    exe = require_client("curl")
    cfgtext = f'user = "{user}:{password}"\nurl = "{srv.url.rstrip("/")}{path}"\nrequest = "{method}"\n'
    if method == "PROPFIND":
        cfgtext += 'header = "Depth: 0"\n'
    if body is not None:
        src = srv.folder / f"body-{abs(hash(path))}"
        src.write_bytes(body)
        cfgtext += f'upload-file = "{src}"\n'
    p = subprocess.run([exe, "-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", "-K", "-"], input=cfgtext,
                       capture_output=True, text=True, timeout=60)
    return int(p.stdout or 0)


def hrefs(body: bytes) -> list[bytes]:
    return sorted(set(h for h in re.findall(rb"<D:href>([^<]+)</D:href>", body) if not h.endswith(b"/")))


def rclone(srv, user, password, *args, tmp):
    exe = require_client("rclone")
    obscured = subprocess.run([exe, "obscure", "-"], input=password.encode(), capture_output=True,
                              check=True).stdout.decode().strip()
    env = dict(os.environ, RCLONE_CONFIG=str(tmp / "rclone.conf"), RCLONE_CONFIG_C_TYPE="webdav",
               RCLONE_CONFIG_C_URL=srv.url, RCLONE_CONFIG_C_USER=user, RCLONE_CONFIG_C_PASS=obscured,
               RCLONE_CONFIG_C_VENDOR="other")
    return subprocess.run([exe, "--no-check-certificate", "--low-level-retries", "1", "--retries", "1", *args],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def webdav(tmp_path):
    """A server with `alice` private (her main password opens her keys) and
    `bob` managed."""
    srv = CofferServer(tmp_path / "srv", accounts={"alice": "alice-main-pw-1", "bob": "bob-pw-22"},
                       modes={"alice": "private"})
    with srv:
        yield srv


def test_an_app_password_serves_rclone_for_a_private_account_through_a_password_change_until_revoked(
        webdav, tmp_path):
    srv = webdav
    assert srv.request("PUT", "/report.txt", body=b"quarterly figures")[0] == 201
    secret = make_app(srv.config, "alice", "laptop rclone", password="alice-main-pw-1")
    # a private account's app password needs the account's password to be made
    p = admin(srv.config, "user", "app-password", "add", "alice", "other")
    assert p.returncode != 0 and "private" in p.stderr
    r = rclone(srv, "alice", secret, "cat", "c:report.txt", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == "quarterly figures", r.stderr
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "photo.jpg").write_bytes(os.urandom(40_000))
    assert rclone(srv, "alice", secret, "copy", str(tmp_path / "up"), "c:photos", tmp=tmp_path).returncode == 0
    # not a way into another account
    assert curl(srv, "PROPFIND", "/", "bob", secret) == 401
    listed = json.loads(admin(srv.config, "user", "app-password", "list", "alice", "--json").stdout)
    assert [(a["name"], a["scope"]) for a in listed] == [("laptop rclone", "full")] and listed[0]["last_used"] != "-"

    # the main password changes: the app password keeps working, the old main one does not
    p = admin(srv.config, "user", "passwd", "alice", "--password-stdin",
              input="alice-main-pw-1\nalice-new-pw-22\nalice-new-pw-22\n")
    assert p.returncode == 0, p.stderr
    r = rclone(srv, "alice", secret, "lsf", "c:photos", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["photo.jpg"], r.stderr
    assert curl(srv, "PROPFIND", "/", "alice", "alice-main-pw-1") == 401
    assert curl(srv, "PROPFIND", "/", "alice", "alice-new-pw-22") == 207

    # revoked: refused at once, by rclone and curl alike
    p = admin(srv.config, "user", "app-password", "revoke", "alice", "laptop rclone")
    assert p.returncode == 0, p.stderr
    assert rclone(srv, "alice", secret, "lsf", "c:", tmp=tmp_path).returncode != 0
    assert curl(srv, "PROPFIND", "/", "alice", secret) == 401
    assert curl(srv, "PROPFIND", "/", "alice", "alice-new-pw-22") == 207


def test_a_backup_app_password_cannot_destroy_history(webdav, tmp_path):
    srv = webdav
    for body in (b"v1", b"v2", b"v3"):
        assert srv.request("PUT", "/books.txt", body=body)[0] in (201, 204)
    backup = make_app(srv.config, "alice", "nightly", scope="backup", password="alice-main-pw-1")
    reader = make_app(srv.config, "alice", "viewer", scope="read-only", password="alice-main-pw-1")
    # a backup job adds, overwrites and deletes (to the trash)
    assert curl(srv, "PUT", "/books.txt", "alice", backup, b"encrypted by ransomware") in (201, 204)
    assert curl(srv, "PUT", "/new.txt", "alice", backup, b"new") == 201
    assert curl(srv, "DELETE", "/new.txt", "alice", backup) == 204
    # but cannot purge: not a version, not the trash, not the history of a file
    status, _, body = srv.request("PROPFIND", "/.coffer/versions/books.txt/", headers={"Depth": "1"})
    assert status == 207
    versions = hrefs(body)
    assert len(versions) == 4                            # the three before, and the overwrite
    for href in versions:
        assert curl(srv, "DELETE", href.decode(), "alice", backup) == 403
    assert curl(srv, "DELETE", "/.coffer/versions/books.txt/", "alice", backup) == 403
    assert curl(srv, "DELETE", "/.coffer/trash/", "alice", backup) == 403
    # and a read-only one cannot write at all
    assert curl(srv, "PUT", "/x.txt", "alice", reader, b"x") == 403
    assert curl(srv, "DELETE", "/books.txt", "alice", reader) == 403
    assert curl(srv, "PROPFIND", "/", "alice", reader) == 207
    # every earlier version is still there, for the owner to restore
    status, _, body = srv.request("PROPFIND", "/.coffer/versions/books.txt/", headers={"Depth": "1"})
    assert hrefs(body) == versions
    assert sorted(srv.request("GET", href.decode())[2] for href in versions) == [
        b"encrypted by ransomware", b"v1", b"v2", b"v3"]


def test_app_passwords_over_ssh_with_openssh_and_restic(tmp_path):
    """carol is private: no SSH key opens her files. She makes a backup app
    password over SSH (logged in with her password) and restic backs up
    and restores through it; `forget --prune` works (deletes go to the
    trash), and the purge it cannot do is refused."""
    restic = require_client("restic")
    require_client("ssh")
    with SftpServer(tmp_path / "srv") as srv:
        base = ["ssh", "-p", str(srv.port), *srv.ssh_options("carol", password=True), "127.0.0.1"]
        p = subprocess.run(base + ["coffer", "app-password", "add", "restic-job", "--scope", "backup"],
                           env=srv.askpass_env("carol-pw-333"), capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        secret = p.stdout.strip()
        assert secret.startswith("app-") and "shown this once" in p.stderr
        # a session of the backup app password may not make or revoke app passwords
        p = subprocess.run(base + ["coffer", "app-password", "add", "more"], env=srv.askpass_env(secret),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode == 1 and "backup" in p.stderr

        # restic splits sftp.command at commas too: one authentication method
        ssh = " ".join(o.replace("password,keyboard-interactive", "password") for o in base[:-1]) \
            + " carol@127.0.0.1 -s sftp"
        env = dict(srv.askpass_env(secret), RESTIC_PASSWORD="restic-test-password",
                   RESTIC_CACHE_DIR=str(tmp_path / "cache"))
        cmd = [restic, "--quiet", "-o", f"sftp.command={ssh}", "-r", "sftp:carol@127.0.0.1:/restic"]
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_bytes(os.urandom(100_000))
        for step in (["init"], ["backup", str(src)], ["backup", str(src)], ["forget", "--keep-last", "1", "--prune"],
                     ["check", "--read-data"], ["restore", "latest", "--target", str(tmp_path / "back")]):
            r = subprocess.run(cmd + step, env=env, capture_output=True, text=True, timeout=300,
                               stdin=subprocess.DEVNULL)
            assert r.returncode == 0, (step, r.stderr)
        assert (tmp_path / "back" / str(src).lstrip("/") / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
        # OpenSSH sftp with the same app password: no purge in /.coffer
        def trash() -> list[str]:
            """The files in carol's trash, by path."""
            st = Storage.open(config.load(srv.config))
            vfs = st.open_account("carol", "carol-pw-333")
            try:
                out, todo = [], ["/.coffer/trash"]
                while todo:
                    for e in vfs.list(todo.pop()):
                        (todo if e.is_dir else out).append(e.path)
                return sorted(out)
            finally:
                vfs.close()
                st.close()
        before = trash()
        assert before                                   # what prune deleted is still restorable
        r = srv.sftp_batch(f"rm {before[0]}\n", user="carol", password=secret)
        assert "permission denied" in r.stderr.lower(), r
        assert trash() == before

        # carol changes her password: the backup job goes on; she revokes it: it is refused
        p = admin(srv.config, "user", "passwd", "carol", "--password-stdin",
                  input="carol-pw-333\ncarol-new-pw-4\ncarol-new-pw-4\n")
        assert p.returncode == 0, p.stderr
        r = subprocess.run(cmd + ["snapshots"], env=env, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        p = subprocess.run(base + ["coffer", "app-password", "revoke", "restic-job"],
                           env=srv.askpass_env("carol-new-pw-4"), capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0 and "revoked" in p.stdout, p.stderr
        r = srv.sftp_batch("ls /\n", user="carol", password=secret)
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = subprocess.run(cmd + ["snapshots"], env=env, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert r.returncode != 0


def test_scopes_and_revocation_in_the_core(storage):
    """The same rules without a network: scope, other accounts, revocation,
    the main password's change."""
    storage.accounts.create("alice", "alice-password-1", mode="private")
    storage.accounts.create("bob", "bob-password-1")
    main = storage.open_account("alice", "alice-password-1")
    main.write_bytes("/f.txt", b"one")
    main.write_bytes("/f.txt", b"two")
    app, secret = main.app_password_create("phone", "read-only")
    assert app.scope == "read-only"
    ro = storage.open_account("alice", secret)
    assert ro.read_bytes("/f.txt") == b"two"
    with pytest.raises(PermissionDenied, match="read-only"):
        ro.write_bytes("/g.txt", b"x")
    assert not ro.stat("/f.txt").writable
    with pytest.raises(PermissionDenied):
        ro.app_password_create("more", "full")
    with pytest.raises(AuthenticationFailed):
        storage.open_account("bob", secret)
    storage.accounts.set_password("alice", "alice-password-2", old_password="alice-password-1")
    again = storage.open_account("alice", secret)
    assert again.read_bytes("/f.txt") == b"two"
    main.app_password_revoke("phone")
    with pytest.raises(AuthenticationFailed):
        storage.open_account("alice", secret)
    for v in (main, ro, again):
        v.close()


def test_a_private_accounts_key_then_its_app_password_logs_in_with_openssh(tmp_path):
    """`AuthenticationMethods publickey,password` in OpenSSH's terms: carol's
    key is a first step, her app password (or password) the second; the
    key alone is refused with a banner saying what is missing."""
    require_client("ssh")
    with SftpServer(tmp_path / "srv") as srv:
        st = Storage.open(config.load(srv.config))
        try:
            carol = st.open_account("carol", "carol-pw-333")
            _, secret = carol.app_password_create("laptop", "full")
            carol.write_bytes("/hello.txt", b"hello")
            carol.close()
        finally:
            st.close()
        key = str(srv.key_files["carol"])
        two_steps = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=INFO",
                     "-o", "IdentitiesOnly=yes", "-i", key, "-o", "PreferredAuthentications=publickey,password",
                     "-o", "NumberOfPasswordPrompts=1", "-p", str(srv.port), "carol@127.0.0.1"]
        r = subprocess.run(["ssh", *two_steps, "sha256sum", "/hello.txt"], env=srv.askpass_env(secret),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and r.stdout.startswith(
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"), r.stderr
        assert "private mode" in r.stderr                       # the banner said what comes after the key
        assert "logged in (key and password)" in srv.log.read_text()
        # the key alone does not open her files
        r = subprocess.run(["ssh", *two_steps, "-o", "BatchMode=yes", "sha256sum", "/hello.txt"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode != 0 and "private mode" in r.stderr and "password" in r.stderr
        # nor does her key with a wrong second step, nor with another account's password
        r = subprocess.run(["ssh", *two_steps, "ls"], env=srv.askpass_env("not-her-password"),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode != 0 and "Permission denied" in r.stderr
        t = paramiko.Transport(("127.0.0.1", srv.port))
        t.connect()
        pkey = paramiko.Ed25519Key.from_private_key_file(key)
        assert t.auth_publickey("carol", pkey) == ["password"]       # partial success: the password is next
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password("alice", "alice-pw-1")                # the second step is carol's alone
        t.close()


def test_a_backup_app_password_cannot_drop_history_by_renaming_into_an_exclusion(storage):
    """`*.tmp` keeps no history; a backup client that renames a file to
    `x.tmp` and overwrites it must not take the file's history with it."""
    storage.accounts.create("alice", "alice-password-1")
    main = storage.open_account("alice", "alice-password-1")
    for body in (b"one", b"two", b"three"):
        main.write_bytes("/report.doc", body)
    _, secret = main.app_password_create("nightly", "backup")
    job = storage.open_account("alice", secret)
    job.move("/report.doc", "/report.doc.tmp")
    job.write_bytes("/report.doc.tmp", b"encrypted")
    job.copy("/report.doc.tmp", "/again.tmp")
    assert [v.size for v in main.versions("/report.doc.tmp")] == [9, 5, 3, 3]
    main.expire()                                       # the periodic job keeps them too
    assert len(main.versions("/report.doc.tmp")) == 4
    job.write_bytes("/new.tmp", b"scratch")             # a new file: the patterns apply as ever
    job.write_bytes("/new.tmp", b"scratch 2")
    assert len(main.versions("/new.tmp")) == 1
    main.write_bytes("/report.doc.tmp", b"owner")       # the owner's own write may drop it
    assert len(main.versions("/report.doc.tmp")) == 1
    job.close()
    main.close()
