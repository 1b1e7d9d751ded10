"""OpenSSH's own clients against a real `coffer serve` process: sftp batches,
scp both ways, logins, exec commands, refusals, limits and parallel sessions."""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import time

import paramiko
import pytest

from sftp_harness import SftpServer
from webdav_harness import require_client

pytestmark = pytest.mark.clients


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    for program in ("ssh", "sftp", "scp", "ssh-keygen"):
        require_client(program)
    folder = tmp_path_factory.mktemp("sftp-openssh")
    with SftpServer(folder, quotas={"bob": 2 * 1024 * 1024}) as srv:
        srv.make_key("stranger")
        yield srv
    assert "Traceback" not in srv.log.read_text(errors="replace").split("coffer: ready", 1)[-1]


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def check(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def test_fingerprints_printed(server):
    lines = [ln for ln in server.output.splitlines() if "SSH host key fingerprint" in ln]
    assert {ln.split()[-2] for ln in lines} >= {"ssh-ed25519", "ssh-rsa"}
    assert all("SHA256:" in ln for ln in lines)


def test_sftp_batch(server, tmp_path):
    (tmp_path / "one.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "two.txt").write_text("second file\n" * 1000)
    r = check(server.sftp_batch("""
mkdir batch
cd batch
put one.bin
put two.txt
ls -l
rename one.bin uno.bin
put two.txt copy.txt
rename copy.txt uno.bin
get uno.bin back.bin
chmod 640 two.txt
ls -l two.txt
df
rm uno.bin
rm two.txt
cd ..
rmdir batch
ls -l
""", cwd=tmp_path))
    out = r.stdout
    assert "one.bin" in out and "two.txt" in out
    assert "-rw-r-----" in out                          # chmod shows in `ls -l`
    assert "Avail" in out                               # df went through statvfs@openssh.com
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "two.txt").read_bytes()   # posix-rename replaced it
    long_lines = [ln for ln in out.splitlines() if ln.startswith("-rw")]
    assert any(ln.split()[2] == "alice" and ln.split()[4] == "300000" for ln in long_lines)


def test_scp_both_ways_and_hashes(server, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(10_000 * (i + 1)))
    (src / "sub" / "deep.txt").write_text("deep\n")
    (src / "large.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 1))     # checksummed on first request
    opts = server.ssh_options()
    check(subprocess.run(["scp", "-q", "-r", "-P", str(server.port), *opts, str(src), "127.0.0.1:/scp"],
                         capture_output=True, text=True, timeout=120))
    for name in [f"f{i}.bin" for i in range(5)] + ["large.bin", "large.bin"]:
        r = check(server.ssh(f"md5sum /scp/{name}"))
        assert r.stdout.decode().split()[0] == md5(src / name)
    r = check(server.ssh("sha256sum /scp/large.bin"))
    assert r.stdout.decode().split()[0] == hashlib.sha256((src / "large.bin").read_bytes()).hexdigest()
    back = tmp_path / "back"
    check(subprocess.run(["scp", "-q", "-r", "-P", str(server.port), *opts, "127.0.0.1:/scp", str(back)],
                         capture_output=True, text=True, timeout=120))
    assert subprocess.run(["diff", "-r", str(src), str(back)]).returncode == 0


def test_exec_hashes_and_df(server, tmp_path):
    data = b"hash me\n" * 100
    (tmp_path / "h.txt").write_bytes(data)
    check(server.sftp_batch("put h.txt '/hash me.txt'\n", cwd=tmp_path))
    for cmd, algo in (("md5sum", "md5"), ("sha1sum", "sha1"), ("sha256sum", "sha256")):
        r = check(server.ssh(f"{cmd} '/hash me.txt'"))
        assert r.stdout.decode() == f"{hashlib.new(algo, data).hexdigest()}  /hash me.txt\n"
    r = check(server.ssh("md5sum /hash\\ me.txt"))     # rclone escapes with backslashes
    assert r.stdout.decode().split()[0] == hashlib.md5(data).hexdigest()
    r = check(server.ssh("md5sum"))                    # rclone's probe: empty stdin
    assert r.stdout.decode().split()[0] == "d41d8cd98f00b204e9800998ecf8427e"
    r = server.ssh("md5sum /missing")
    assert r.returncode == 1 and b"No such file" in r.stderr
    r = check(server.ssh("df -k /"))
    assert b"1K-blocks" in r.stdout


def test_refusals_have_messages(server):
    r = server.ssh("ls -la /")
    assert r.returncode == 127 and b"SFTP only" in r.stderr
    r = server.ssh("echo ${ShellId}%ComSpec%")          # rclone's shell probe
    assert r.returncode != 0
    r = subprocess.run(["ssh", "-T", "-p", str(server.port), *server.ssh_options(), "127.0.0.1"],
                       capture_output=True, input=b"", timeout=60)
    assert r.returncode == 1 and b"no shell" in r.stderr
    r = subprocess.run(["ssh", "-N", "-p", str(server.port), *server.ssh_options(), "-o", "ExitOnForwardFailure=yes",
                        "-R", "0:127.0.0.1:9", "127.0.0.1"], capture_output=True, timeout=60)
    assert r.returncode != 0 and b"forwarding failed" in r.stderr
    r = server.ssh("md5sum /x", extra=["-A"])            # agent forwarding asked for: the command still runs
    assert b"No such file" in r.stderr


def test_logins(server, tmp_path):
    check(server.sftp_batch("ls\n", password="alice-pw-1"))
    r = server.sftp_batch("ls\n", password="wrong-password")
    assert r.returncode != 0
    r = server.sftp_batch("ls\n", user="nobody", password="whatever-1")
    assert r.returncode != 0
    cmd = ["sftp", "-b", "-", "-P", str(server.port)] + server.ssh_options("alice", key="stranger") + ["127.0.0.1"]
    r = subprocess.run(cmd, capture_output=True, input=b"ls\n", timeout=60)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    # carol is private: her key is registered, but only her password opens her files
    cmd = ["sftp", "-b", "-", "-P", str(server.port)] + server.ssh_options("carol") + ["127.0.0.1"]
    cmd[cmd.index("LogLevel=ERROR")] = "LogLevel=INFO"    # show the server's banner
    r = subprocess.run(cmd, capture_output=True, input=b"ls\n", timeout=60)
    assert r.returncode != 0
    assert b"private mode" in r.stderr and b"password" in r.stderr, r.stderr
    check(server.sftp_batch("mkdir mine\nls\n", user="carol", password="carol-pw-333"))


def test_quota_exceeded_keeps_previous_version(server, tmp_path):
    (tmp_path / "small").write_bytes(b"small version\n")
    (tmp_path / "huge").write_bytes(os.urandom(3 * 1024 * 1024))
    check(server.sftp_batch("put small doc\n", user="bob", cwd=tmp_path))
    r = server.sftp_batch("put huge doc\n", user="bob", cwd=tmp_path)
    assert r.returncode != 0
    check(server.sftp_batch("get doc again\n", user="bob", cwd=tmp_path))
    assert (tmp_path / "again").read_bytes() == b"small version\n"
    c = _client(server, "bob")                 # the status message names the cause (OpenSSH shows only the code)
    try:
        sftp = c.open_sftp()
        with pytest.raises(OSError) as e:      # paramiko ignores errors on close: make it fail on a write
            with sftp.open("/doc", "wb") as f:
                f.write(os.urandom(12 * 1024 * 1024))
        assert "quota" in str(e.value)
        assert sftp.open("/doc").read() == b"small version\n"
    finally:
        c.close()


def test_eight_parallel_sessions(server, tmp_path):
    def worker(n: int) -> None:
        d = tmp_path / f"w{n}"
        d.mkdir()
        for i in range(50):
            (d / f"f{i:02d}").write_bytes(f"session {n} file {i}\n".encode() * (1 + i * 37) + os.urandom(n + i))
        check(server.sftp_batch(f"mkdir /par{n}\ncd /par{n}\nlcd {d}\nput f*\n", cwd=d))
        back = tmp_path / f"b{n}"
        back.mkdir()
        check(server.sftp_batch(f"lcd {back}\nget /par{n}/*\n", cwd=back))
        for i in range(50):
            assert (back / f"f{i:02d}").read_bytes() == (d / f"f{i:02d}").read_bytes(), (n, i)
        assert sorted(p.name for p in back.iterdir()) == [f"f{i:02d}" for i in range(50)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(worker, n) for n in range(8)]:
            f.result()


def test_session_records(server):
    check(server.sftp_batch("ls\n"))
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(server.config), upgrade=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = [r for r in st.sessions.list() if r["protocol"] == "sftp"]
            if any(r["ended_us"] and r["requests"] > 0 and r["bytes_in"] > 0 for r in rows) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert any(r["ended_us"] and r["requests"] > 0 and r["bytes_in"] > 0 for r in rows), rows
    finally:
        st.close()


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    require_client("ssh-keygen")
    folder = tmp_path_factory.mktemp("sftp-limits")
    with SftpServer(folder, accounts={"alice": ("alice-pw-1", "managed")},
                    extra="idle_timeout_seconds = 2\nmax_sessions_per_account = 2\n") as srv:   # two workers
        yield srv


def _client(srv, user="alice"):
    key = paramiko.Ed25519Key.from_private_key_file(str(srv.key_files[user]))
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", srv.port, username=user, pkey=key, allow_agent=False, look_for_keys=False,
              timeout=20)
    return c


def test_session_limit_per_account(tight):
    a, b = _client(tight), _client(tight)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            _client(tight)
    finally:
        a.close()
        b.close()
    time.sleep(1.5)                       # the server notices the closed connections
    _client(tight).close()


def test_idle_connection_times_out(tight):
    c = _client(tight)
    try:
        sftp = c.open_sftp()
        sftp.listdir("/")
        time.sleep(4.5)
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.listdir("/")
    finally:
        c.close()


def test_garbage_on_one_channel_leaves_others_serving(server):
    import random
    import struct
    c = _client(server)
    try:
        good = c.open_sftp()
        good.mkdir("/garbage-test")
        rng = random.Random(99)
        for _ in range(5):
            chan = c.get_transport().open_session()
            chan.invoke_subsystem("sftp")
            chan.sendall(struct.pack(">IBI", 5, 1, 3))               # INIT
            for _ in range(50):
                body = bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(0, 40))
                chan.sendall(struct.pack(">I", len(body)) + body)
            chan.sendall(struct.pack(">I", 0xFFFFFFF0) + b"\x03")   # unframeable: that channel ends
            chan.settimeout(20)
            while chan.recv(65536):
                pass
            assert chan.recv_exit_status() == 0
            chan.close()
        assert good.listdir("/garbage-test") == []                   # the other channel still serves
        assert server.alive()
    finally:
        c.close()


def test_hostile_paths_with_openssh(server, tmp_path):
    (tmp_path / "x.txt").write_text("inside\n")
    r = server.sftp_batch("get ../../../../etc/passwd stolen\n", cwd=tmp_path)
    assert r.returncode != 0 and not (tmp_path / "stolen").exists()
    r = server.sftp_batch("get /../../etc/hostname stolen\n", cwd=tmp_path)
    assert r.returncode != 0 and not (tmp_path / "stolen").exists()
    check(server.sftp_batch("put x.txt ../../../../escape.txt\nput x.txt /../..//./escape2.txt\n"
                            "cd ../../..\npwd\nls -1\n", cwd=tmp_path))
    r = check(server.ssh("md5sum /escape.txt /escape2.txt"))
    assert r.stdout.count(b"  /escape") == 2          # both landed at the top of the account
    assert not os.path.exists("/escape.txt")
