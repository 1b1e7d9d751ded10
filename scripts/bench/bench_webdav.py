"""WebDAV benchmark: Coffer side by side with wsgidav's own FilesystemProvider.

Both run on cheroot in their own process on this machine, both with Basic
auth, first over plain HTTP on loopback and then over HTTPS (the same
self-signed certificate). Each figure is the median of --repeat interleaved
runs:

  PUT and GET of one large file (MB/s) and the server's peak RSS during it
  1,000 files of 4 KiB uploaded with rclone (files/s)
  authenticated PROPFIND Depth 0 of one file on a keep-alive connection (req/s)
  PROPFIND Depth 1 of a folder of 10,000 files (seconds)

    python scripts/bench/bench_webdav.py [--size-mib 1024] [--repeat 3] [--json]
        [--storage FILE]

--storage names a TOML file whose [storage] table Coffer uses instead of
SQLite and a local folder (for example PostgreSQL and an S3 bucket:
database_url, blob_backend = "s3", s3_endpoint, s3_bucket,
s3_access_key_file, s3_prefix); give it an empty database and a fresh
prefix. wsgidav keeps its plain folder.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PROPFIND0 = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/>'
             b'<D:getcontentlength/><D:getetag/><D:resourcetype/></D:prop></D:propfind>')

WSGIDAV_SERVER = r"""
import os, sys, signal, threading
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from wsgidav.wsgidav_app import WsgiDAVApp
folder, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
app = WsgiDAVApp({
    "provider_mapping": {"/": folder},
    "simple_dc": {"user_mapping": {"*": {"bench": {"password": os.environ["BENCH_PASSWORD"]}}}},
    "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
    "block_size": int(os.environ["BENCH_BLOCK_SIZE"]),
    "verbose": 0, "logging": {"enable": False}, "dir_browser": {"enable": False},
})
server = wsgi.Server(("127.0.0.1", port), app, numthreads=16, request_queue_size=64, timeout=60)
if cert:
    server.ssl_adapter = BuiltinSSLAdapter(cert, key)
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.stop).start())
server.prepare()
print("ready", flush=True)
server.serve()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def certificate(folder: Path) -> tuple[Path, Path]:
    """A server certificate and key from Coffer's local CA, made by the
    installed `coffer-admin tls show` (its CA files lie beside them)."""
    folder.mkdir(parents=True)
    (folder / "coffer.toml").write_text(f'[storage]\ndata_dir = "{folder / "data"}"\n')
    admin = shutil.which("coffer-admin", path=str(Path(sys.executable).parent)) or "coffer-admin"
    shown = subprocess.run([admin, "--config", str(folder / "coffer.toml"), "tls", "show", "--json"],
                           capture_output=True, text=True, check=True)
    cert = Path(json.loads(shown.stdout)["certificate"]["path"])
    return cert, cert.with_name("key.pem")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Target:
    """One server under test."""

    name = ""
    user = "bench"

    def __init__(self, work: Path, tls: bool, cert: Path, key: Path):
        self.work, self.tls, self.cert, self.key = work, tls, cert, key
        self.password = secrets.token_urlsafe(12)
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def connection(self):
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=600, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def headers(self, **extra):
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": "Basic " + token, **extra}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Wsgidav(Target):
    name = "wsgidav-fs"

    def start(self, populate_10k):
        self.folder = self.work / "wsgidav-root"
        self.folder.mkdir(parents=True, exist_ok=True)
        big = self.folder / "many"
        big.mkdir(exist_ok=True)
        for i in range(populate_10k):
            (big / f"file {i:05d}.txt").write_bytes(b"x" * 100)
        env = dict(os.environ, BENCH_PASSWORD=self.password, BENCH_BLOCK_SIZE=str(BLOCK_SIZE))
        args = [sys.executable, "-c", WSGIDAV_SERVER, str(self.folder), str(self.port),
                str(self.cert) if self.tls else "", str(self.key) if self.tls else ""]
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)


class Coffer(Target):
    name = "coffer"
    storage = ""                  # more [storage] options (--storage)

    def start(self, populate_10k):
        from providers import config
        from providers.storage import Storage
        data = self.work / "coffer-data"
        tls_dir = data / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.cert, tls_dir / "cert.pem")
        shutil.copy(self.key, tls_dir / "key.pem")
        for name in ("ca.pem", "ca.key"):                # the same local CA: the same certificate is served
            shutil.copy(self.cert.with_name(name), tls_dir / name)
        cfgfile = self.work / "coffer.toml"
        cfgfile.write_text(f"""
[storage]
data_dir = "{data}"
{self.storage}
[webdav]
host = "127.0.0.1"
port = {self.port}
tls = {'true' if self.tls else 'false'}
allow_plain_http = {'false' if self.tls else 'true'}
[sftp]
enabled = false
[accounts]
default_plan = "unlimited"
""")
        cfg = config.load(cfgfile)
        st = Storage.open(cfg)
        try:
            # an account of its own for each mode: with --storage both share one database
            self.user = f"bench-{'https' if self.tls else 'http'}"
            if self.user not in {u.name for u in st.accounts.list()}:
                st.accounts.create(self.user, self.password)
                vfs = st.open_account(self.user, self.password)
                vfs.mkdir("/many")
                for i in range(populate_10k):
                    vfs.write_bytes(f"/many/file {i:05d}.txt", b"x" * 100)
                vfs.close()
        finally:
            st.close()
        self.proc = subprocess.Popen([sys.executable, "-m", "server.main", "serve", "--config", str(cfgfile),
                                      "--log-level", "warning"], cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)


BLOCK_SIZE = 1024 * 1024
RATE_KEYS = ["put_MBps", "get_MBps", "rclone_files_per_s", "propfind0_per_s"]
TIME_KEYS = ["propfind1_10k_s", "propfind1_10k_allprop_s"]


def _ratio(key, wsgidav_value, coffer_value):
    if key in TIME_KEYS:
        return wsgidav_value / coffer_value
    return coffer_value / wsgidav_value


# -- measurements -----------------------------------------------------------------------

def put_get(t: Target, size: int) -> dict:
    block = os.urandom(1024 * 1024)
    conn = t.connection()
    base_rss = rss_mib(t.proc.pid)
    peak = [base_rss]

    def sample():
        peak[0] = max(peak[0], rss_mib(t.proc.pid))

    start = time.perf_counter()
    conn.putrequest("PUT", "/big.bin")
    for k, v in t.headers().items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    sent = 0
    n = 0
    while sent < size:
        # every MiB differs, so neither deduplication nor compression can help
        n += 1
        piece = (n.to_bytes(8, "big") + block[8:])[: min(len(block), size - sent)]
        conn.send(piece)
        sent += len(piece)
        if sent % (64 * 1024 * 1024) == 0:
            sample()
    resp = conn.getresponse()
    resp.read()
    put_s = time.perf_counter() - start
    assert resp.status in (201, 204), resp.status
    start = time.perf_counter()
    conn.request("GET", "/big.bin", headers=t.headers())
    resp = conn.getresponse()
    got = 0
    while True:
        piece = resp.read(1024 * 1024)
        if not piece:
            break
        got += len(piece)
        if got % (64 * 1024 * 1024) == 0:
            sample()
    get_s = time.perf_counter() - start
    assert got == size, (got, size)
    conn.request("DELETE", "/big.bin", headers=t.headers())
    conn.getresponse().read()
    conn.close()
    return {"put_MBps": size / put_s / 1e6, "get_MBps": size / get_s / 1e6,
            "rss_base_MiB": base_rss, "rss_during_MiB": peak[0]}


def rclone_small(t: Target, files: Path, run: int) -> dict:
    exe = shutil.which("rclone")
    if not exe:
        return {}
    obscured = subprocess.run([exe, "obscure", "-"], input=t.password.encode(), capture_output=True,
                              check=True).stdout.decode().strip()
    env = dict(os.environ, RCLONE_CONFIG="/dev/null", RCLONE_CONFIG_B_TYPE="webdav", RCLONE_CONFIG_B_URL=t.url,
               RCLONE_CONFIG_B_USER=t.user, RCLONE_CONFIG_B_PASS=obscured, RCLONE_CONFIG_B_VENDOR="other")
    n = sum(1 for _ in files.iterdir())
    start = time.perf_counter()
    subprocess.run([exe, "--no-check-certificate", "--transfers", "4", "copy", str(files), f"b:small{run}"],
                   env=env, check=True, capture_output=True)
    return {"rclone_files_per_s": n / (time.perf_counter() - start)}


def propfind_rate(t: Target, seconds: float) -> dict:
    conn = t.connection()
    conn.request("PUT", "/one.txt", body=b"hello", headers=t.headers())
    conn.getresponse().read()
    n = 0
    headers = t.headers(Depth="0", **{"Content-Type": "application/xml"})
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.request("PROPFIND", "/one.txt", body=PROPFIND0, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 207, r.status
        n += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return {"propfind0_per_s": n / elapsed}


def propfind_10k(t: Target) -> dict:
    """Depth 1 of the big folder: with the properties file managers and rclone
    ask for, and with an empty body (allprop, which includes dead properties)."""
    out = {}
    for key, body in (("propfind1_10k_s", PROPFIND0), ("propfind1_10k_allprop_s", b"")):
        conn = t.connection()
        start = time.perf_counter()
        conn.request("PROPFIND", "/many/", body=body, headers=t.headers(Depth="1"))
        r = conn.getresponse()
        data = r.read()
        out[key] = time.perf_counter() - start
        assert r.status == 207, r.status
        assert data.count(b"<D:response>") + data.count(b"<d:response>") > 1
        conn.close()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--many", type=int, default=10000)
    p.add_argument("--propfind-seconds", type=float, default=3.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--storage", metavar="FILE", help="TOML file whose [storage] table Coffer uses (PostgreSQL, S3)")
    args = p.parse_args(argv)
    if args.storage:
        import tomllib
        table = tomllib.loads(Path(args.storage).read_text()).get("storage", {})
        table.pop("data_dir", None)
        Coffer.storage = "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # stop both servers on the way out
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="coffer-bench-") as tmp:
        tmp = Path(tmp)
        cert, key = certificate(tmp / "certs")
        small = tmp / "small"
        small.mkdir()
        for i in range(args.files):
            (small / f"f{i:04d}.bin").write_bytes(os.urandom(4096))
        for tls in (False, True):
            mode = "https" if tls else "http"
            targets = [Wsgidav(tmp / f"w-{mode}", tls, cert, key), Coffer(tmp / f"c-{mode}", tls, cert, key)]
            for t in targets:
                t.work.mkdir(parents=True)
                t.start(args.many)
            try:
                runs = {t.name: [] for t in targets}
                for r in range(args.repeat):
                    for t in targets:
                        row = {}
                        row.update(put_get(t, args.size_mib * 1024 * 1024))
                        row.update(rclone_small(t, small, r))
                        row.update(propfind_rate(t, args.propfind_seconds))
                        row.update(propfind_10k(t))
                        runs[t.name].append(row)
                        print(f"  {mode} {t.name} run {r + 1}: " +
                              ", ".join(f"{k}={v:.2f}" for k, v in row.items()), file=sys.stderr, flush=True)
                for t in targets:
                    keys = runs[t.name][0].keys()
                    med = {k: statistics.median(run[k] for run in runs[t.name]) for k in keys}
                    med["peak_rss_MiB"] = peak_rss_mib(t.proc.pid)
                    results[f"{mode}/{t.name}"] = med
                # the ratio within each round, where both servers saw the same machine load
                w_runs, c_runs = runs["wsgidav-fs"], runs["coffer"]
                results[f"{mode}/round-ratio"] = {
                    k: statistics.median(_ratio(k, w[k], c[k]) for w, c in zip(w_runs, c_runs))
                    for k in w_runs[0] if k in RATE_KEYS + TIME_KEYS}
            finally:
                for t in targets:
                    t.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    lines = ["", f"{'metric':<24}{'mode':<7}{'wsgidav-fs':>12}{'coffer':>12}{'ratio':>8}{'per-round':>11}"]
    for mode in ("http", "https"):
        w, c, rr = results[f"{mode}/wsgidav-fs"], results[f"{mode}/coffer"], results[f"{mode}/round-ratio"]
        for k in RATE_KEYS + TIME_KEYS + ["rss_base_MiB", "rss_during_MiB", "peak_rss_MiB"]:
            if k not in w:
                continue
            per_round = f"{rr[k]:>11.2f}" if k in rr else ""
            lines.append(f"{k:<24}{mode:<7}{w[k]:>12.2f}{c[k]:>12.2f}{_ratio(k, w[k], c[k]):>8.2f}{per_round}")
    lines.append("ratio: coffer/wsgidav for rates, wsgidav/coffer for times (so higher is better for Coffer),"
                 " coffer/wsgidav for memory; per-round: the median of the ratios of each interleaved round")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
