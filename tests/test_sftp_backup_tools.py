"""rclone and restic over SFTP against a real `coffer serve` process."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

import pytest

from sftp_harness import SftpServer
from webdav_harness import require_client

pytestmark = [pytest.mark.clients, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_client("ssh-keygen")
    folder = tmp_path_factory.mktemp("sftp-tools")
    with SftpServer(folder, accounts={"alice": ("alice-pw-1", "managed")}) as srv:
        yield srv


def make_tree(root, seed=7):
    rng = random.Random(seed)
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "photos 2024").mkdir()
    (root / "ünïcødé — names").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "docs" / "report.txt").write_text("quarterly numbers\n" * 500)
    (root / "docs" / "deep" / "deeper" / "leaf.bin").write_bytes(rng.randbytes(70_000))
    (root / "photos 2024" / "big.jpg").write_bytes(rng.randbytes(3 * 1024 * 1024 + 123))
    (root / "ünïcødé — names" / "café.txt").write_text("crème brûlée\n")
    for i in range(60):
        (root / "docs" / f"note {i:02d}.md").write_text(f"note {i}\n" * rng.randrange(1, 200))


def run(cmd, env=None, timeout=600, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if ok:
        assert r.returncode == 0, f"{cmd[:3]} exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def test_rclone_sync_check_cycle(server, tmp_path):
    rclone = require_client("rclone")
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"""[coffer]
type = sftp
host = 127.0.0.1
port = {server.port}
user = alice
key_file = {server.key_files['alice']}
""")
    base = [rclone, "--config", str(conf), "-v"]
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    run(base + ["sync", str(src), "coffer:/backup"])
    r = run(base + ["check", str(src), "coffer:/backup"])
    assert "0 differences found" in r.stderr
    assert "No common hash" not in r.stderr and "not using a hash" not in r.stderr, r.stderr
    md5 = run(base + ["md5sum", "coffer:/backup"]).stdout
    local = run(base + ["md5sum", str(src)]).stdout
    assert sorted(md5.splitlines()) == sorted(local.splitlines())
    assert "d41d8cd98f00b204e9800998ecf8427e  empty.txt" in md5

    # change, add, delete, then sync again
    (src / "docs" / "report.txt").write_text("revised\n" * 700)
    (src / "docs" / "note 03.md").unlink()
    shutil.rmtree(src / "ünïcødé — names")
    (src / "new folder").mkdir()
    (src / "new folder" / "fresh.txt").write_text("fresh\n")
    run(base + ["sync", str(src), "coffer:/backup"])
    r = run(base + ["check", "--download", str(src), "coffer:/backup"])
    assert "0 differences found" in r.stderr
    r = run(base + ["check", str(src), "coffer:/backup"])
    assert "0 differences found" in r.stderr

    back = tmp_path / "back"
    run(base + ["sync", "coffer:/backup", str(back)])
    assert subprocess.run(["diff", "-r", str(src), str(back)]).returncode == 0
    # the old report is kept as a version
    versions = run(base + ["lsf", "coffer:/.coffer/versions/backup/docs/report.txt"]).stdout.split()
    assert len(versions) == 2


def test_restic_cycle(server, tmp_path):
    restic = require_client("restic")
    require_client("ssh")
    ssh = " ".join(["ssh", "-p", str(server.port), *server.ssh_options("alice"), "alice@127.0.0.1", "-s", "sftp"])
    env = dict(os.environ, RESTIC_PASSWORD="restic-test-password", RESTIC_CACHE_DIR=str(tmp_path / "cache"))
    base = [restic, "--quiet", "-o", f"sftp.command={ssh}", "-r", "sftp:alice@127.0.0.1:/restic"]
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, seed=11)
    run(base + ["init"], env)
    run(base + ["backup", str(src)], env)
    run(base + ["check", "--read-data"], env)
    target = tmp_path / "restore1"
    run(base + ["restore", "latest", "--target", str(target)], env)
    assert subprocess.run(["diff", "-r", str(src), str(target / str(src).lstrip("/"))]).returncode == 0

    (src / "docs" / "report.txt").write_text("after the change\n" * 900)
    (src / "photos 2024" / "second.jpg").write_bytes(os.urandom(1_500_000))
    shutil.rmtree(src / "docs" / "deep")
    run(base + ["backup", str(src)], env)
    run(base + ["forget", "--keep-last", "1", "--prune"], env)
    run(base + ["check", "--read-data"], env)
    target = tmp_path / "restore2"
    run(base + ["restore", "latest", "--target", str(target)], env)
    assert subprocess.run(["diff", "-r", str(src), str(target / str(src).lstrip("/"))]).returncode == 0
    snaps = run(base + ["snapshots", "--json"], env).stdout
    assert snaps.count('"id"') == 1


@pytest.mark.usefixtures("gpg_home")
def test_duplicity_cycle(server, tmp_path):
    """Debian's duplicity: its SFTP backend is the system's paramiko 2.x, which
    speaks no AES-GCM (it connects with AES-CTR and HMAC-SHA2)."""
    duplicity = require_client("duplicity")
    pub = (server.folder / "var" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
    env = dict(os.environ, FTP_PASSWORD=server.accounts["alice"][0], PASSPHRASE="duplicity-test-passphrase",
               HOME=str(tmp_path))
    url = f"sftp://alice@127.0.0.1:{server.port}//duplicity"

    def dup(*args, archive=tmp_path / "archive", ok=True):
        return run([duplicity, *args, f"--ssh-options=-oUserKnownHostsFile={known}", "--archive-dir",
                    str(archive), "--num-retries", "1"], env, ok=ok)

    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, seed=13)
    for i in range(50):
        sub = src / "many" / f"group {i % 5}" / f"level {i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"item {i:03d}.dat").write_bytes(random.Random(i).randbytes(100 + 997 * i))
    assert sum(1 for p in src.rglob("*") if p.is_file()) >= 100
    full_copy = tmp_path / "as-of-full"
    shutil.copytree(src, full_copy)

    dup("full", str(src), url)
    full_time = int(time.time()) + 1
    time.sleep(2.1)
    (src / "docs" / "report.txt").write_text("changed after the full backup\n" * 300)
    (src / "many" / "group 1" / "level 1" / "item 001.dat").unlink()
    (src / "many" / "fresh").mkdir()
    (src / "many" / "fresh" / "new.bin").write_bytes(os.urandom(300_000))
    r = dup("incremental", str(src), url)
    assert "Errors 0" in r.stdout
    dup("verify", "--compare-data", url, str(src))
    status = dup("collection-status", url, archive=tmp_path / "empty-archive").stdout
    assert "Full" in status and "Incremental" in status, status
    latest = tmp_path / "restore-latest"
    dup("restore", url, str(latest))
    assert subprocess.run(["diff", "-r", str(src), str(latest)]).returncode == 0
    first = tmp_path / "restore-full"
    dup("restore", "--time", str(full_time), url, str(first))
    assert subprocess.run(["diff", "-r", str(full_copy), str(first)]).returncode == 0

    # the host key is really checked: another key fails at once
    impostor = server.make_key("impostor").with_suffix(".pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{server.port} {impostor[0]} {impostor[1]}\n")
    r = dup("collection-status", url, archive=tmp_path / "empty-archive", ok=False)
    assert r.returncode != 0 and "key" in r.stdout + r.stderr
