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

    python scripts/bench/bench_many.py [--rounds 3] [--seconds 5] [--files 1000] [--json]

Needs wrk and rclone (apt-get install wrk rclone). The load generators run
on the same cores as the servers: with two cores, what a 16-connection
figure measures is the machine, shared by both sides.
"""
from __future__ import annotations

import argparse
import base64
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

PROPFIND0 = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/>'
             '<D:getcontentlength/><D:getetag/><D:resourcetype/></D:prop></D:propfind>')
SMALL = 4096


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.args[0]})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--files", type=int, default=1000)
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
        for r in range(args.rounds):
            for s in servers:
                res = results[s.name]
                for method, path in (("PROPFIND", "/small.bin"), ("GET", "/small.bin")):
                    for conns in (1, 16):
                        got = wrk(s, method, path, conns, args.seconds)
                        res.setdefault(f"{method} c{conns} req/s", []).append(got["rate"])
                        if conns == 1:
                            res.setdefault(f"{method} server CPU ms/req", []).append(got["cpu_ms"])
                        res.setdefault("errors", []).append(got["errors"])
                res.setdefault("WebDAV 4 KiB uploads files/s", []).append(uploads_webdav(s, args.files, f"r{r}"))
                res.setdefault("SFTP 4 KiB uploads files/s", []).append(uploads_sftp(s, args.files, f"r{r}"))
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
    print(f"{'':34}" + "".join(f"{n:>14}" for n in names) + f"{'x1/rclone':>11}{f'x{cores}/rclone':>11}")
    for k in keys:
        row = [medians[n][k] for n in names]
        fmt = "14.2f" if "ms" in k else "14.0f"
        print(f"{k:34}" + "".join(f"{v:{fmt}}" for v in row) + f"{row[0] / row[2]:11.2f}{row[1] / row[2]:11.2f}")
    print(f"{'non-2xx answers':34}" + "".join(f"{medians[n]['errors']:14d}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
