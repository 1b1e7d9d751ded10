"""rclone over WebDAV against a real server: sync, check, change, sync, check;
plain and with the owncloud vendor (X-OC-Mtime, oc:checksums)."""
import os
import random
import subprocess

import pytest

from webdav_harness import CofferServer, require_client

pytestmark = [pytest.mark.clients, pytest.mark.slow]

NAMES = ["plain.txt", "with space.txt", "hash#tag.md", "per%cent.bin", "plus+sign.dat", "Ünïcødé — ok.txt",
         "日本語のファイル.txt", "emoji 🎉.txt", "a,b;c=d&e.txt", "[brackets] (1).txt", "tilde~.txt"]


def make_tree(root, rng: random.Random, count=300):
    made = []
    folders = ["", "docs", "docs/deep", "docs/deep/deeper", "photos 2024", "Ωmega/α β", "x#y/z%w", "mix+ed"]
    for i in range(count):
        folder = folders[i % len(folders)]
        name = f"{i:03d} {NAMES[i % len(NAMES)]}"
        size = rng.choice([0, 1, 100, 4096, 65536, 70000]) if i % 50 else rng.randint(1, 5) * 1024 * 1024 + i
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        made.append(path)
    return made


def rclone(server, vendor, *args, tmp):
    exe = require_client("rclone")
    obscured = subprocess.run([exe, "obscure", "-"], input=server.accounts["alice"].encode(),
                              capture_output=True, check=True).stdout.decode().strip()
    env = dict(os.environ, RCLONE_CONFIG=str(tmp / "rclone.conf"),
               RCLONE_CONFIG_COFFER_TYPE="webdav", RCLONE_CONFIG_COFFER_URL=server.url,
               RCLONE_CONFIG_COFFER_USER="alice", RCLONE_CONFIG_COFFER_PASS=obscured,
               RCLONE_CONFIG_COFFER_VENDOR=vendor)
    r = subprocess.run([exe, "--no-check-certificate", "--low-level-retries", "1", "--retries", "1",
                        "--transfers", "4", "--checkers", "4", *args],
                       env=env, capture_output=True, text=True, timeout=900)
    return r


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("rclone"), tls=True) as srv:
        yield srv


@pytest.mark.parametrize("vendor", ["other", "owncloud"])
def test_sync_check_change_sync_check(server, vendor, tmp_path):
    rng = random.Random(vendor)
    local = tmp_path / "local"
    files = make_tree(local, rng)
    remote = f"coffer:{vendor}-tree"

    def run(*args):
        r = rclone(server, vendor, *args, tmp=tmp_path)
        assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-3000:])
        return r

    run("sync", str(local), remote)
    run("check", "--download", str(local), remote)
    # change some, delete some, add some
    for p in files[::7]:
        p.write_bytes(rng.randbytes(rng.randint(0, 200000)))
    for p in files[3::11]:
        if p.exists():
            p.unlink()
    (local / "new folder").mkdir(exist_ok=True)
    (local / "new folder" / "late #1.txt").write_bytes(b"late")
    run("sync", str(local), remote)
    run("check", "--download", str(local), remote)
    if vendor == "owncloud":
        # hashes come from the server (oc:checksums), so check compares without downloading
        r = run("check", str(local), remote)
        assert "hashes could not be checked" not in r.stderr, r.stderr[-2000:]
        r = run("md5sum", remote)
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        assert len(lines) == len([p for p in local.rglob("*") if p.is_file()])
        assert all(len(ln.split()[0]) == 32 for ln in lines)
        # modification times were kept through X-OC-Mtime
        r = run("lsl", remote + "/docs")
        assert r.stdout.strip()
    r = run("lsf", "-R", "--files-only", remote)
    remote_files = sorted(r.stdout.splitlines())
    local_files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert remote_files == local_files
