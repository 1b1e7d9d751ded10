"""History by path with real clients against one `coffer serve` process
(WebDAV and SFTP): curl, OpenSSH sftp and rclone write, overwrite, delete
and restore a file and find every version at its path, checked by SHA-256;
one version purges alone; a write collaborator cannot destroy the owner's
history by moving a file out, by a burst of uploads, or by filling the
shared folder with old versions."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from urllib.parse import quote, unquote

import pytest
from test_share_protocols import ACCOUNTS, S, Server as ShareServer
from webdav_harness import require_client

pytestmark = [pytest.mark.clients]
QUOTA = 4_000_000
NOTES = [os.urandom(150_000) for _ in range(5)]      # the owner's unshared file, written days ago


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server(ShareServer):
    """The shared-folder server, plus an owner's quota and an unshared file
    with old versions written on earlier days."""

    def create_accounts(self):
        super().create_accounts()
        from providers import config, meta
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        real = meta.now_us
        try:
            st.accounts.update("owner", quota_bytes=QUOTA)
            o = st.open_account("owner", ACCOUNTS["owner"][0])
            for i, body in enumerate(NOTES):
                meta.now_us = lambda d=10 - i: real() - d * 86_400_000_000
                o.write_bytes("/notes.bin", body)
        finally:
            meta.now_us = real
            st.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("history-clients")) as srv:
        yield srv


def curl(server, method, path, *args, user="owner", data=None):
    exe = require_client("curl")
    cmd = [exe, "-s", "-K", "-", "-X", method, "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        body = server.folder / f"body-{user}.bin"
        body.write_bytes(data)
        cmd += ["--data-binary", "@" + str(body)]
    cmd.append(f"http://127.0.0.1:{server.port}{quote(path)}")
    cfg = f'user = "{user}:{server.password(user)}"\n'           # the password on stdin, never argv
    r = subprocess.run(cmd, input=cfg.encode(), capture_output=True, timeout=120)
    out, _, code = r.stdout.rpartition(b"\n")
    return int(code), out


def dav_list(server, path, user="owner"):
    code, body = curl(server, "PROPFIND", path, "-H", "Depth: 1", user=user)
    assert code == 207, (path, code, body[:300])
    hrefs = [unquote(h.decode()) for h in re.findall(rb"<(?:\w+:)?href>([^<]*)</", body)]
    return [h.rstrip("/").rsplit("/", 1)[-1] for h in hrefs[1:]]


def dest(server, path):
    return ["-H", f"Destination: http://127.0.0.1:{server.port}{quote(path)}"]


def sftp(server, commands: str, check=True) -> subprocess.CompletedProcess:
    """OpenSSH sftp in batch mode as the owner (key login)."""
    exe = require_client("sftp")
    batch = server.folder / "batch.txt"
    batch.write_text(commands)
    r = subprocess.run([exe, "-b", str(batch), "-P", str(server.sftp_port), "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
                        "-o", "BatchMode=yes", "-i", str(server.key), "owner@127.0.0.1"],
                       capture_output=True, text=True, timeout=120, cwd=server.folder, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, (commands, r.stdout[-2000:], r.stderr[-2000:])
    return r


def sftp_ls(server, path) -> list[str]:
    out = sftp(server, f'ls -1 "{path}"\n').stdout.splitlines()
    return sorted(ln.rsplit("/", 1)[-1] for ln in out if ln.strip() and not ln.startswith("sftp>"))


def rclone(server, user, *args, tmp):
    exe = require_client("rclone")
    obscured = subprocess.run([exe, "obscure", "-"], input=server.password(user).encode(), capture_output=True,
                              check=True).stdout.decode().strip()
    env = dict(os.environ, RCLONE_CONFIG=str(tmp / "rclone.conf"), RCLONE_CONFIG_C_TYPE="webdav",
               RCLONE_CONFIG_C_URL=server.url, RCLONE_CONFIG_C_USER=user, RCLONE_CONFIG_C_PASS=obscured,
               RCLONE_CONFIG_C_VENDOR="other")
    r = subprocess.run([exe, "--low-level-retries", "1", "--retries", "1", *args], env=env, capture_output=True,
                       timeout=300)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout


def version_hashes_rclone(server, path, tmp) -> list[str]:
    """SHA-256 of every version rclone finds at /.coffer/versions<path>, newest first."""
    names = sorted(rclone(server, "owner", "lsf", "c:.coffer/versions" + path, tmp=tmp).decode().split(),
                   reverse=True)
    return [sha(rclone(server, "owner", "cat", f"c:.coffer/versions{path}/{n}", tmp=tmp)) for n in names]


def version_hashes_sftp(server, path) -> list[str]:
    names = sorted(sftp_ls(server, "/.coffer/versions" + path), reverse=True)
    gets = "".join(f'get "/.coffer/versions{path}/{n}" "v-{i}"\n' for i, n in enumerate(names))
    sftp(server, gets)
    return [sha((server.folder / f"v-{i}").read_bytes()) for i in range(len(names))]


def trash_stamp(server) -> str:
    stamps = dav_list(server, "/.coffer/trash")
    assert stamps, "nothing in the trash"
    return sorted(stamps)[-1]


@pytest.mark.parametrize("restore", ["webdav-copy", "webdav-move", "sftp-rename", "sftp-get-put"])
def test_history_through_overwrite_delete_and_restore(server, restore, tmp_path):
    folder = f"/docs-{restore}"
    path = f"{folder}/report.txt"
    bodies = [f"{restore} v{i} ".encode() * (i + 1) for i in range(3)]
    assert curl(server, "MKCOL", folder)[0] == 201
    for b in bodies:                                              # three writes over WebDAV
        assert curl(server, "PUT", path, data=b)[0] in (201, 204)
    local = server.folder / "over-sftp.txt"
    local.write_bytes(f"{restore} over sftp".encode())
    sftp(server, f'put "{local}" "{path}"\n')                      # one overwrite over SFTP
    bodies.append(local.read_bytes())
    want = [sha(b) for b in reversed(bodies)]
    assert curl(server, "DELETE", path)[0] == 204
    st = trash_stamp(server)
    trashed = f"/.coffer/trash/{st}{path}"
    if restore == "webdav-copy":
        assert curl(server, "COPY", trashed, *dest(server, path))[0] in (201, 204)
    elif restore == "webdav-move":
        assert curl(server, "MOVE", trashed, *dest(server, path))[0] in (201, 204)
    elif restore == "sftp-rename":
        sftp(server, f'rename "{trashed}" "{path}"\n')
    else:
        sftp(server, f'get "{trashed}" back.txt\nput back.txt "{path}"\n')
    assert curl(server, "GET", path) == (200, bodies[-1])
    got = version_hashes_rclone(server, path, tmp_path)
    if restore == "sftp-get-put":                                 # the upload is a file of its own, listed first
        assert got[0] == want[0] and got[1:] == want
    else:
        assert got == want
    assert version_hashes_sftp(server, path) == got
    names = sorted(dav_list(server, "/.coffer/versions" + path), reverse=True)
    assert len(names) == len(got)
    # purge one over WebDAV, another over SFTP: exactly those go
    assert curl(server, "DELETE", f"/.coffer/versions{path}/{names[-1]}")[0] == 204
    assert curl(server, "DELETE", f"/.coffer/versions{path}/{names[-1]}")[0] == 404
    sftp(server, f'rm "/.coffer/versions{path}/{names[-2]}"\n')
    assert sorted(dav_list(server, "/.coffer/versions" + path), reverse=True) == names[:-2]
    assert version_hashes_sftp(server, path) == got[:-2]
    assert curl(server, "DELETE", f"/.coffer/versions{path}/{names[0]}")[0] == 409   # the current one


def test_a_deleted_folder_comes_back_whole_over_webdav(server, tmp_path):
    assert curl(server, "MKCOL", "/album")[0] == 201
    for b in (b"photo one", b"photo two"):
        assert curl(server, "PUT", "/album/p.jpg", data=b)[0] in (201, 204)
    assert curl(server, "DELETE", "/album")[0] == 204
    st = trash_stamp(server)
    code, _ = curl(server, "COPY", f"/.coffer/trash/{st}/album", *dest(server, "/album"), "-H", "Depth: infinity")
    assert code in (201, 204)
    assert version_hashes_rclone(server, "/album/p.jpg", tmp_path) == [sha(b"photo two"), sha(b"photo one")]
    assert f"/.coffer/trash/{st}/album" not in [f"/.coffer/trash/{s}/album" for s in dav_list(server,
                                                                                                "/.coffer/trash")]


def test_a_collaborator_cannot_destroy_the_owners_history(server, tmp_path):
    # (a) curl and rclone move shared files out, then purge what they took
    for name in ("a.txt", "b.txt"):
        for b in (b"owner one", b"owner two"):
            assert curl(server, "PUT", f"/Projects/{name}", data=b)[0] in (201, 204)
    assert curl(server, "MOVE", S + "/a.txt", *dest(server, "/taken-a.txt"), user="writer")[0] == 201
    rclone(server, "writer", "moveto", f"c:{S[1:]}/b.txt", "c:taken-b.txt", tmp=tmp_path)
    for name in ("a.txt", "b.txt"):
        assert curl(server, "GET", f"/taken-{name}", user="writer") == (200, b"owner two")
        assert curl(server, "DELETE", f"/.coffer/versions/taken-{name}", user="writer")[0] == 204
        assert curl(server, "GET", f"/taken-{name}", user="writer")[0] == 404
        assert version_hashes_sftp(server, f"/Projects/{name}") == [sha(b"owner two"), sha(b"owner one")]
        code, _ = curl(server, "DELETE", f"/.coffer/versions{S}/{name}/"
                       + dav_list(server, f"/.coffer/versions{S}/{name}", user="writer")[0], user="writer")
        assert code == 403                                         # purging in the owner's history: refused
    out = server.admin("audit", "--user", "writer", "--event", "share_moved_out", "--json")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("share_moved_out") == 2
    # (b) a burst of uploads evicts none of the owner's versions
    before = version_hashes_sftp(server, "/Projects/plan.txt")
    for i in range(105):                                           # more than max_versions (100)
        assert curl(server, "PUT", S + "/plan.txt", user="writer", data=b"burst %d" % i)[0] == 204
    after = version_hashes_sftp(server, "/Projects/plan.txt")
    assert after[:105] == [sha(b"burst %d" % i) for i in reversed(range(105))] and after[105:] == before
    # (c) old versions filling the shared folder do not thin the owner's unshared file
    for _ in range(12):
        assert curl(server, "PUT", S + "/big.bin", user="writer", data=os.urandom(150_000))[0] in (201, 204)
    m = server.admin("maintenance", "--json")
    assert m.returncode == 0, m.stderr
    assert version_hashes_sftp(server, "/notes.bin") == [sha(b) for b in reversed(NOTES)]
