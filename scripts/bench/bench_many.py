"""Many connections and small operations: Coffer beside `rclone serve`.

Coffer with one worker process and with one per core, `rclone serve webdav`
and `rclone serve sftp` on a plain folder, all on plain HTTP / SSH on
loopback on this machine, the same files. Figures are medians of --rounds
interleaved rounds (each round runs every server once, in turn):

  PROPFIND Depth 0 and GET of a 4 KiB file, req/s, with 1 and 16
      connections (wrk, --seconds each)
  server CPU per request (ms) of the 1-connection runs, all its processes
  1,000 uploads of 4 KiB over one WebDAV keep-alive connection, files/s
  1,000 uploads of 4 KiB over one SFTP session (paramiko), files/s
  server CPU per WebDAV operation of each of the mixed load's kinds
      (upload, overwrite, download, listing, rename of 1-256 KiB files),
      --ops of each over one connection
  a mixed load of 32 clients (16 WebDAV, 16 SFTP; uploads, overwrites,
      downloads, listings and renames of 1-256 KiB files) for
      --mixed-seconds: ops/s (all, and of each protocol's 16 clients), p50
      and p99 latency, server CPU per operation; every file is verified
      after, and errors and wrong files are counted. The 32 clients log in
      first and start together; the server CPU their logins took (password
      hashes, which rclone serve does not compute) is shown on its own

    python scripts/bench/bench_many.py [--rounds 3] [--seconds 5] [--files 1000]
        [--ops 200] [--mixed-seconds 60] [--json]

Needs wrk and rclone (apt-get install wrk rclone). The load generators run
on the same cores as the servers: with two cores, what a 16-connection
figure measures is the machine, shared by both sides.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import io
import json
import os
import re
import secrets
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
sys.path.insert(0, str(ROOT))

from scripts.bench.bench_webdav import free_port, wait_port  # noqa: E402  (the same helpers)

PROPFIND0 = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/>'
             '<D:getcontentlength/><D:getetag/><D:resourcetype/></D:prop></D:propfind>')
SMALL = 4096


class Server:
    name = ""
    user = "bench"

    def __init__(self, work: Path):
        self.work = work
        self.password = secrets.token_urlsafe(12)
        self.port, self.sftp_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []

    def auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class Coffer(Server):
    def __init__(self, work: Path, workers: int):
        super().__init__(work)
        self.workers = workers
        self.name = f"coffer x{workers}"

    def start(self) -> None:
        from providers import config
        from providers.storage import Storage
        cfgfile = self.work / "coffer.toml"
        cfgfile.write_text(f"""
[server]
workers = {self.workers}
[storage]
data_dir = "{self.work / 'data'}"
[webdav]
host = "127.0.0.1"
port = {self.port}
tls = false
allow_plain_http = true
[sftp]
host = "127.0.0.1"
port = {self.sftp_port}
[accounts]
default_plan = "unlimited"
""")
        st = Storage.open(config.load(cfgfile))
        try:
            st.accounts.create(self.user, self.password)
        finally:
            st.close()
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "server.main", "serve", "--config", str(cfgfile), "--log-level", "warning"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        wait_port(self.port, self.procs[0])
        wait_port(self.sftp_port, self.procs[0])


class Rclone(Server):
    name = "rclone serve"

    def start(self) -> None:
        folder = self.work / "root"
        folder.mkdir(parents=True, exist_ok=True)
        common = ["--user", self.user, "--pass", self.password, "--log-level", "ERROR"]
        dav = subprocess.Popen(["rclone", "serve", "webdav", str(folder), "--addr", f"127.0.0.1:{self.port}",
                                *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sftp = subprocess.Popen(["rclone", "serve", "sftp", str(folder), "--addr", f"127.0.0.1:{self.sftp_port}",
                                 *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs += [dav, sftp]
        wait_port(self.port, dav)
        wait_port(self.sftp_port, sftp)


def cpu_seconds(pids) -> float:
    """User and system CPU time of these processes and their children (workers)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    seen = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def put(srv: Server, path: str, body: bytes, conn=None) -> int:
    c = conn or http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    c.request("PUT", path, body=body, headers={"Authorization": srv.auth()})
    r = c.getresponse()
    r.read()
    if conn is None:
        c.close()
    return r.status


def wrk(srv: Server, method: str, path: str, connections: int, seconds: float) -> dict:
    script = srv.work / f"{method}.lua"
    body = f"wrk.body = [[{PROPFIND0}]]\nwrk.headers['Content-Type'] = 'application/xml'\n" \
        if method == "PROPFIND" else ""
    script.write_text(f"wrk.method = '{method}'\n{body}")
    cpu = cpu_seconds(p.pid for p in srv.procs)
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{int(seconds)}s",
                          "-H", f"Authorization: {srv.auth()}", "-H", "Depth: 0", "-s", str(script),
                          f"http://127.0.0.1:{srv.port}{path}"], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu_ms = (cpu_seconds(p.pid for p in srv.procs) - cpu) * 1000 / max(total, 1)
    return {"rate": rate, "cpu_ms": cpu_ms, "errors": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else ""}


def uploads_webdav(srv: Server, n: int, tag: str) -> float:
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    data = os.urandom(SMALL)
    started = time.perf_counter()
    for i in range(n):
        status = put(srv, f"/up-{tag}-{i}.bin", data, conn=c)
        if status not in (200, 201, 204):
            raise RuntimeError(f"{srv.name}: PUT answered {status}")
    rate = n / (time.perf_counter() - started)
    c.close()
    return rate


def uploads_sftp(srv: Server, n: int, tag: str) -> float:
    import paramiko
    t = paramiko.Transport(("127.0.0.1", srv.sftp_port))
    t.connect(username=srv.user, password=srv.password)
    sftp = paramiko.SFTPClient.from_transport(t)
    data = os.urandom(SMALL)
    started = time.perf_counter()
    for i in range(n):
        sftp.putfo(io.BytesIO(data), f"/sftp-{tag}-{i}.bin", confirm=False)
    rate = n / (time.perf_counter() - started)
    sftp.close()
    t.close()
    return rate


# -- the mixed load ------------------------------------------------------------------------------

class _Client:
    """One client of the mixed load: its own folder, what each of its files
    should hold, and a random walk of uploads, overwrites, downloads,
    listings and renames of 1-256 KiB files."""

    def __init__(self, srv: Server, n: int, seed: int):
        import random
        self.srv, self.n, self.rng = srv, n, random.Random(seed)
        self.folder = f"/mix-{n}"
        self.files: dict[str, bytes] = {}                 # name -> sha256 of what it should hold
        self.latencies: list[float] = []
        self.errors = 0

    def body(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1024, 256 * 1024))

    def step(self) -> None:
        op = self.rng.random()
        started = time.perf_counter()
        kind = ("upload" if op < 0.25 or not self.files else "overwrite" if op < 0.45 else
                "download" if op < 0.75 else "listing" if op < 0.9 else "rename")
        try:
            getattr(self, kind)()
        except Exception as e:
            self.errors += 1
            if self.errors <= 3:
                print(f"bench_many: {self.srv.name} client {self.n}: {e}", file=sys.stderr)
            return
        self.latencies.append(time.perf_counter() - started)

    # one operation of each kind, checked against what the client last wrote

    def upload(self) -> None:
        self._write(f"f{len(self.files)}-{self.rng.randrange(1 << 30)}.bin")

    def overwrite(self) -> None:
        self._write(self.rng.choice(sorted(self.files)))

    def _write(self, name: str) -> None:
        data = self.body()
        self.put(name, data)
        self.files[name] = hashlib.sha256(data).digest()

    def download(self) -> None:
        name = self.rng.choice(sorted(self.files))
        if hashlib.sha256(self.get(name)).digest() != self.files[name]:
            raise RuntimeError(f"{name}: wrong content")

    def listing(self) -> None:
        if set(self.names()) != set(self.files):
            raise RuntimeError("the listing is not what was written")

    def rename(self) -> None:
        old = self.rng.choice(sorted(self.files))
        new = f"r{self.rng.randrange(1 << 30)}.bin"
        self.move(old, new)
        self.files[new] = self.files.pop(old)

    def verify(self) -> int:
        bad = 0
        for name, digest in self.files.items():
            try:
                bad += hashlib.sha256(self.get(name)).digest() != digest
            except Exception:
                bad += 1
        return bad


class _DavClient(_Client):
    def start(self):
        self.c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=120)
        self.request("MKCOL", self.folder)

    def request(self, method, path, body=None, headers=None) -> tuple[int, bytes]:
        from urllib.parse import quote
        self.c.request(method, quote(path), body=body, headers={"Authorization": self.srv.auth(), **(headers or {})})
        r = self.c.getresponse()
        return r.status, r.read()

    def put(self, name, data):
        status, _ = self.request("PUT", f"{self.folder}/{name}", data)
        if status not in (200, 201, 204):
            raise RuntimeError(f"PUT {status}")

    def get(self, name):
        status, data = self.request("GET", f"{self.folder}/{name}")
        if status != 200:
            raise RuntimeError(f"GET {status}")
        return data

    def names(self):
        status, data = self.request("PROPFIND", self.folder + "/", headers={"Depth": "1"})
        if status != 207:
            raise RuntimeError(f"PROPFIND {status}")
        names = re.findall(rb"<(?:\w+:)?href>([^<]*)</(?:\w+:)?href>", data)
        from urllib.parse import unquote
        return [unquote(h.decode()).rstrip("/").rsplit("/", 1)[-1] for h in names
                if unquote(h.decode()).rstrip("/") != self.folder]

    def move(self, old, new):
        from urllib.parse import quote
        status, _ = self.request("MOVE", f"{self.folder}/{old}",
                                 headers={"Destination": quote(f"{self.folder}/{new}"), "Overwrite": "F"})
        if status not in (201, 204):
            raise RuntimeError(f"MOVE {status}")


class _SftpClient(_Client):
    def start(self):
        import paramiko
        self.t = paramiko.Transport(("127.0.0.1", self.srv.sftp_port))
        self.t.connect(username=self.srv.user, password=self.srv.password)
        self.sftp = paramiko.SFTPClient.from_transport(self.t)
        self.folder = self.folder.replace("mix", "smix")
        self.sftp.mkdir(self.folder)

    def put(self, name, data):
        self.sftp.putfo(io.BytesIO(data), f"{self.folder}/{name}", confirm=False)

    def get(self, name):
        out = io.BytesIO()
        self.sftp.getfo(f"{self.folder}/{name}", out)
        return out.getvalue()

    def names(self):
        return self.sftp.listdir(self.folder)

    def move(self, old, new):
        self.sftp.posix_rename(f"{self.folder}/{old}", f"{self.folder}/{new}")


def webdav_ops_cpu(srv: Server, n: int, round_no: int) -> dict:
    """Server CPU (ms) per WebDAV operation of the mixed load's kinds, one
    kind after another over one connection: uploads of new 1-256 KiB files,
    overwrites, downloads, listings (Depth 1 of the folder, n/4 of them)
    and renames, after 50 files are in the folder."""
    c = _DavClient(srv, 900 + round_no, seed=900 + round_no)
    c.folder = f"/ops-{round_no}"
    c.start()
    for _ in range(50):
        c.upload()
    out = {}
    for kind in ("upload", "overwrite", "download", "listing", "rename"):
        count = n // 4 if kind == "listing" else n
        cpu = cpu_seconds([p.pid for p in srv.procs])
        for _ in range(count):
            getattr(c, kind)()
        out[kind] = (cpu_seconds([p.pid for p in srv.procs]) - cpu) * 1000 / count
    c.c.close()
    return out


def _mixed_part(srv: Server, kind: str, clients: int, seconds: float, round_no: int, out, ready) -> None:
    """One process of the mixed load: `clients` threads of one protocol,
    started once every client of every process has logged in (`ready`)."""
    import threading
    made = [(_DavClient if kind == "dav" else _SftpClient)(srv, round_no * 100 + i, seed=round_no * 1000 + i)
            for i in range(clients)]
    for c in made:
        c.start()
    ready.wait()
    stop = time.monotonic() + seconds

    def run(c):
        while time.monotonic() < stop:
            c.step()

    threads = [threading.Thread(target=run, args=(c,)) for c in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send({"kind": kind, "latencies": [x for c in made for x in c.latencies],
              "errors": sum(c.errors for c in made)})
    out.send(sum(c.verify() for c in made))      # then the files whose content is wrong


def mixed(srv: Server, seconds: float, round_no: int) -> dict:
    """16 WebDAV and 16 SFTP clients at once for `seconds`, each protocol in
    a process of its own: ops/s (all, and each protocol's), p50 and p99
    latency, the server CPU per operation (the logins and the verifying
    excluded), errors, and the files whose content is not what was last
    written (verified after)."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    ready = ctx.Barrier(3)
    cpu_before = cpu_seconds([p.pid for p in srv.procs])
    for kind in ("dav", "sftp"):
        here, there = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_mixed_part, args=(srv, kind, 16, seconds, round_no, there, ready))
        p.start()
        pipes.append(here)
        procs.append(p)
    ready.wait(timeout=300)
    cpu_started = cpu_seconds([p.pid for p in srv.procs])
    parts = [p.recv() for p in pipes]         # sent once the load is over, before verifying
    load_cpu = cpu_seconds([p.pid for p in srv.procs]) - cpu_started
    bad_files = sum(p.recv() for p in pipes)
    for p in procs:
        p.join()
    lat = sorted(x for part in parts for x in part["latencies"])
    ops = {part["kind"]: len(part["latencies"]) / seconds for part in parts}
    return {"ops_per_s": len(lat) / seconds, "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan"),
            "dav_ops_per_s": ops["dav"], "sftp_ops_per_s": ops["sftp"],
            "cpu_ms_per_op": 1000 * load_cpu / len(lat) if lat else float("nan"),
            "errors": sum(p["errors"] for p in parts), "bad_files": bad_files,
            "login_cpu_s": cpu_started - cpu_before}


def measure(s: Server, res: dict, r: int, args) -> None:
    """One round of every measurement on one server, into `res`."""
    for method, path in (("PROPFIND", "/small.bin"), ("GET", "/small.bin")):
        for conns in (1, 16):
            got = wrk(s, method, path, conns, args.seconds)
            res.setdefault(f"{method} c{conns} req/s", []).append(got["rate"])
            if conns == 1:
                res.setdefault(f"{method} server CPU ms/req", []).append(got["cpu_ms"])
            res.setdefault("errors", []).append(got["errors"])
    res.setdefault("WebDAV 4 KiB uploads files/s", []).append(uploads_webdav(s, args.files, f"r{r}"))
    res.setdefault("SFTP 4 KiB uploads files/s", []).append(uploads_sftp(s, args.files, f"r{r}"))
    for kind, ms in webdav_ops_cpu(s, args.ops, r).items():
        res.setdefault(f"WebDAV {kind}, 1 conn: CPU ms/op", []).append(ms)
    if args.mixed_seconds:
        m = mixed(s, args.mixed_seconds, r)
        res.setdefault("mixed 32 clients ops/s", []).append(m["ops_per_s"])
        res.setdefault("mixed: its 16 WebDAV clients ops/s", []).append(m["dav_ops_per_s"])
        res.setdefault("mixed: its 16 SFTP clients ops/s", []).append(m["sftp_ops_per_s"])
        res.setdefault("mixed: server CPU ms/op", []).append(m["cpu_ms_per_op"])
        res.setdefault("mixed p50 ms", []).append(m["p50_ms"])
        res.setdefault("mixed p99 ms", []).append(m["p99_ms"])
        res.setdefault("mixed: its 32 logins, server CPU s", []).append(m["login_cpu_s"])
        res.setdefault("errors", []).append(m["errors"] + m["bad_files"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--mixed-seconds", type=int, default=60, help="length of the mixed load (0: skip it)")
    p.add_argument("--ops", type=int, default=200, help="WebDAV operations of each kind timed one at a time")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for program in ("wrk", "rclone"):
        if not shutil.which(program):
            print(f"bench_many: {program} is not installed (apt-get install -y {program})", file=sys.stderr)
            return 2
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="coffer-bench-many-"))
    servers = [Coffer(work / "c1", 1), Coffer(work / "cn", cores), Rclone(work / "rc")]
    results: dict = {s.name: {} for s in servers}
    try:
        for s in servers:
            s.work.mkdir(parents=True)
            s.start()
            if put(s, "/small.bin", os.urandom(SMALL)) not in (200, 201, 204):
                raise RuntimeError(f"{s.name}: could not upload the test file")
            # every worker logs in once (a private account derives its key
            # at a worker's first login) before anything is measured
            wrk(s, "GET", "/small.bin", 16, 2)
        for r in range(args.rounds):
            for s in servers:
                try:
                    measure(s, results[s.name], r, args)
                except Exception as e:
                    raise RuntimeError(f"{s.name}, round {r + 1}: {type(e).__name__}: {e}") from e
            if not args.json:
                print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: {k: (sum(v) if k == "errors" else statistics.median(v)) for k, v in res.items()}
               for name, res in results.items()}
    if args.json:
        print(json.dumps({"cores": cores, "rounds": args.rounds, "medians": medians}, indent=2))
        return 0
    names = [s.name for s in servers]
    keys = [k for k in medians[names[0]] if k != "errors"]
    print(f"medians of {args.rounds} interleaved rounds, {cores} cores shared by servers and clients")
    print(f"{'':36}" + "".join(f"{n:>14}" for n in names) + f"{'x1/rclone':>11}{f'x{cores}/rclone':>11}")
    for k in keys:
        row = [medians[n][k] for n in names]
        fmt = "14.2f" if "ms" in k or k.endswith(" s") else "14.0f"
        ratios = f"{row[0] / row[2]:11.2f}{row[1] / row[2]:11.2f}" if row[2] else f"{'-':>11}{'-':>11}"
        print(f"{k:36}" + "".join(f"{v:{fmt}}" for v in row) + ratios)
    print(f"{'errors (all rounds)':36}" + "".join(f"{medians[n]['errors']:14d}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
