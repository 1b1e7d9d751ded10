"""SFTP benchmark: Coffer side by side with OpenSSH's sshd + internal-sftp.

Both servers run on this machine on free loopback ports: an `sshd` with its
own configuration serving a plain folder, and `coffer serve` (SFTP only,
encrypting and versioning). OpenSSH's `sftp` client drives both with the same
options. Measured, interleaved, several rounds (medians reported):

  * upload and download of one large file (default 1 GiB), MB/s
  * upload and download of 1,000 files of 4 KiB, files/s
  * Coffer's resident memory after each round and its peak (VmHWM)

Every upload sends fresh random content (Coffer would deduplicate a repeat)
and the page cache is flushed before each transfer. Note that Coffer makes
each chunk durable (write, fsync) before acknowledging a file's close, while
internal-sftp leaves data in the page cache: on a slow disk, uploads measure
the disk more than the protocol.

Usage: python scripts/bench/bench_sftp.py [--size-mib 1024] [--files 1000] [--rounds 3]
Needs root only for sshd's privilege separation folder; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early (status {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start listening")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sshd:
    """OpenSSH's sshd with internal-sftp, its own config, key-only login."""

    def __init__(self, work: Path, client_pub: Path):
        self.dir = work / "sshd"
        self.dir.mkdir()
        self.root = work / "openssh-files"
        self.root.mkdir()
        self.port = free_port()
        hostkey = self.dir / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
        auth = self.dir / "authorized_keys"
        shutil.copy(client_pub, auth)
        auth.chmod(0o600)
        self.config = self.dir / "sshd_config"
        self.config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {hostkey}
PidFile {self.dir / 'sshd.pid'}
AuthorizedKeysFile {auth}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
""")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "wb"))
        wait_port(self.port, self.proc, "sshd")
        self.user = os.environ.get("USER") or "root"

    def remote(self, name: str) -> str:
        return str(self.root / name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


class Coffer:
    """`coffer serve`, SFTP only, with one managed account and its key."""

    def __init__(self, work: Path, client_pub: Path):
        self.dir = work / "coffer"
        self.dir.mkdir()
        self.port = free_port()
        self.config = self.dir / "coffer.toml"
        self.config.write_text(f"""[storage]
data_dir = "{self.dir / 'var'}"
[webdav]
enabled = false
[sftp]
host = "127.0.0.1"
port = {self.port}
[accounts]
plans = {{ basic = 0 }}
""")
        sys.path.insert(0, str(ROOT))
        from providers import config
        from providers.sshkeys import SSHKeys
        from providers.storage import Storage
        st = Storage.open(config.load(self.config))
        try:
            st.accounts.create("bench", os.urandom(16).hex(), mode="managed")
            SSHKeys(st.db, st.accounts).add("bench", client_pub.read_text())
        finally:
            st.close()
        self.log = open(self.dir / "server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.main", "serve", "--config", str(self.config),
                                      "--log-level", "warning"],
                                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "coffer serve")
        self.user = "bench"

    def remote(self, name: str) -> str:
        return "/" + name

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def write_random(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))


def write_small(folder: Path, n: int, kib: int) -> None:
    for i in range(n):
        (folder / f"f{i:04d}").write_bytes(os.urandom(kib * 1024))


def sftp(server, key: Path, commands: str, cwd: Path) -> float:
    batch = cwd / "batch.txt"
    batch.write_text(commands)
    cmd = ["sftp", "-q", "-b", str(batch), "-P", str(server.port), "-i", str(key), *SSH_OPTS,
           f"{server.user}@127.0.0.1"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"sftp against port {server.port} failed:\n{r.stderr}")
    return elapsed


def cipher_of(server, key: Path) -> str:
    r = subprocess.run(["ssh", "-v", "-p", str(server.port), "-i", str(key), *SSH_OPTS, "-s",
                        f"{server.user}@127.0.0.1", "sftp"], input="", capture_output=True, text=True, timeout=30)
    for line in r.stderr.splitlines():
        if "cipher:" in line and "server->client" in line:
            return line.split("cipher:")[1].split()[0]
    return "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="large file size (MiB)")
    p.add_argument("--files", type=int, default=1000, help="number of small files")
    p.add_argument("--file-kib", type=int, default=4, help="small file size (KiB)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", help="scratch folder (default: a temporary one, removed afterwards)")
    args = p.parse_args(argv)
    for prog in ("sftp", "ssh", "ssh-keygen", "sshd"):
        if not shutil.which(prog) and not Path("/usr/sbin/" + prog).exists():
            raise SystemExit(f"{prog} is needed (apt-get install openssh-client openssh-server)")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="coffer-bench-sftp-"))
    work.mkdir(parents=True, exist_ok=True)
    local = work / "local"
    local.mkdir()
    key = work / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    big = local / "big.bin"
    small = local / "small"
    small.mkdir()
    size_mb = args.size_mib * 1024 * 1024 / 1e6

    servers = {}
    results = {name: {k: [] for k in ("up", "down", "small_up", "small_down")} for name in ("openssh", "coffer")}
    rss = []
    try:
        servers["openssh"] = Sshd(work, key.with_suffix(".pub"))
        servers["coffer"] = Coffer(work, key.with_suffix(".pub"))
        print(f"ciphers: openssh {cipher_of(servers['openssh'], key)}, coffer {cipher_of(servers['coffer'], key)}")
        print(f"coffer RSS at start: {rss_kib(servers['coffer'].proc.pid) / 1024:.0f} MiB")
        for rnd in range(args.rounds):
            for name in (("openssh", "coffer") if rnd % 2 == 0 else ("coffer", "openssh")):
                srv = servers[name]
                r = results[name]
                # fresh content every time, so Coffer cannot deduplicate against an earlier upload
                write_random(big, args.size_mib)
                remote_big = srv.remote(f"big-{rnd}.bin")
                os.sync()               # nobody's unwritten data slows the other's writes
                r["up"].append(size_mb / sftp(srv, key, f"put {big} {remote_big}\n", local))
                back = local / "big.back"
                os.sync()
                r["down"].append(size_mb / sftp(srv, key, f"get {remote_big} {back}\n", local))
                if back.stat().st_size != big.stat().st_size:
                    raise SystemExit(f"{name}: downloaded size differs")
                back.unlink()
                remote_dir = srv.remote(f"small-{rnd}")
                write_small(small, args.files, args.file_kib)
                os.sync()
                r["small_up"].append(args.files / sftp(srv, key, f"mkdir {remote_dir}\nput -r {small}/* {remote_dir}/\n",
                                                       local))
                down = local / f"small-back-{name}"
                down.mkdir()
                os.sync()
                r["small_down"].append(args.files / sftp(srv, key, f"get -r {remote_dir}/* {down}/\n", local))
                if len(list(down.iterdir())) != args.files:
                    raise SystemExit(f"{name}: small files missing after download")
                shutil.rmtree(down)
                sftp(srv, key, f"rm {remote_big}\n", local)
            rss.append(rss_kib(servers["coffer"].proc.pid))
            print(f"round {rnd + 1}: " + ", ".join(
                f"{n} up {results[n]['up'][-1]:.0f} MB/s down {results[n]['down'][-1]:.0f} MB/s "
                f"small up {results[n]['small_up'][-1]:.0f}/s down {results[n]['small_down'][-1]:.0f}/s"
                for n in ("openssh", "coffer")) + f"; coffer RSS {rss[-1] / 1024:.0f} MiB", flush=True)
        peak = rss_kib(servers["coffer"].proc.pid, "VmHWM")
    finally:
        for srv in servers.values():
            srv.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    print(f"\nmedians of {args.rounds} rounds ({args.size_mib} MiB file, {args.files} x {args.file_kib} KiB files)")
    print(f"{'':28}{'OpenSSH':>12}{'Coffer':>12}{'ratio':>8}")
    for key_, label, unit in (("up", "large file upload", "MB/s"), ("down", "large file download", "MB/s"),
                              ("small_up", "small files upload", "files/s"),
                              ("small_down", "small files download", "files/s")):
        o, c = med["openssh"][key_], med["coffer"][key_]
        print(f"{label + ' (' + unit + ')':28}{o:>12.1f}{c:>12.1f}{c / o:>8.2f}")
    print(f"coffer RSS after each round: {', '.join(f'{x / 1024:.0f}' for x in rss)} MiB; peak {peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
