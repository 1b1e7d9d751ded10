"""The database or the object store goes away under load: clients get clean
errors at once (no hang), nothing half-written appears, and service comes
back by itself when they do. Each test runs a private PostgreSQL or
SeaweedFS, started and stopped by the project's own scripts."""
from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from webdav_harness import ROOT, CofferServer, free_port

SERVICES = ROOT / "scripts" / "services"


class PrivateService:
    """A service of its own for one test, under a folder the postgres user can enter."""

    def __init__(self, kind: str, port_var: str):
        self.kind, self.port = kind, free_port()
        self.state = Path(tempfile.mkdtemp(prefix=f"coffer-fault-{kind}-", dir="/tmp"))
        self.state.chmod(0o755)
        self.env = dict(os.environ, SERVICES_STATE_DIR=str(self.state), **{port_var: str(self.port)})
        self.env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + self.env.get("PATH", "")

    def start(self) -> str:
        out = subprocess.run(["bash", str(SERVICES / f"{self.kind}-start.sh")], env=self.env, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def stop(self) -> None:
        subprocess.run(["bash", str(SERVICES / f"{self.kind}-stop.sh")], env=self.env, capture_output=True,
                       timeout=120)

    def purge(self) -> None:
        subprocess.run(["bash", str(SERVICES / f"{self.kind}-stop.sh"), "--purge"], env=self.env,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.state, ignore_errors=True)


class Load:
    """Uploads of new files and overwrites of one file, one after another,
    each on a new connection, recording what the server answered and how long it took."""

    def __init__(self, srv: CofferServer):
        self.srv = srv
        self.results: list[tuple[str, bytes, int, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self.stopping.is_set():
            path, body = (f"/new-{i}.txt", f"new file {i}".encode()) if i % 2 else ("/same.txt", f"v{i}".encode())
            started = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=60)
                c.request("PUT", path, body=body, headers=self.srv.auth())
                status = c.getresponse().status
                c.close()
            except OSError:
                status = 0
            self.results.append((path, body, status, time.monotonic() - started))
            i += 1
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def flowing(self, timeout: float = 60) -> None:
        """Wait until the server has stored a few uploads (a busy machine
        can take longer than usual to get going)."""
        deadline = time.monotonic() + timeout
        while sum(status in (201, 204) for _, _, status, _ in list(self.results)) < 3:
            assert time.monotonic() < deadline, f"no uploads stored under load: {self.results[-5:]}"
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(60)

    def check_nothing_half_done(self):
        """Every acknowledged upload reads back whole; a refused new file does
        not exist; the overwritten file holds one of the versions sent."""
        sent_same = {body for path, body, _, _ in self.results if path == "/same.txt"}
        for path, body, status, _ in self.results:
            got_status, _, got = self.srv.request("GET", path)
            if status in (201, 204) and path != "/same.txt":
                assert (got_status, got) == (200, body), path
            elif path != "/same.txt":
                assert got_status == 404 or (got_status, got) == (200, body), (path, got_status)
        got_status, _, got = self.srv.request("GET", "/same.txt")
        assert got_status == 200 and got in sent_same


def wait_until_served(srv: CofferServer, seconds: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if srv.request("PUT", "/probe.txt", b"back")[0] in (201, 204):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError("service did not come back:\n" + srv.log.read_text()[-3000:])


@pytest.fixture
def private_postgres():
    pg = PrivateService("postgres", "PG_PORT")
    url = pg.start().strip().splitlines()[-1]
    yield pg, url
    pg.purge()


def test_postgresql_restarted_under_load(tmp_path, private_postgres):
    pg, url = private_postgres
    srv = CofferServer(tmp_path / "pg", tls=False, pin={"blobs": "local", "database": "sqlite"},
                       extra="[server]\nworkers = 2\n")
    text = srv.config.read_text()
    srv.config.write_text(text.replace("[storage]\n", f'[storage]\ndatabase_url = "{url}"\n', 1))
    with srv:
        with Load(srv) as load:
            load.flowing()
            pg.stop()                                          # the database goes away under load
            down = len(load.results)
            time.sleep(4)
            during = load.results[down:]
            pg.start()
            back_after = wait_until_served(srv)
            time.sleep(1)
        assert during and all(status == 503 for _, _, status, _ in during), during      # clean, and retryable
        assert all(took < 30 for _, _, _, took in during), "a request hung while the database was down"
        assert back_after < 30
        assert any(status in (201, 204) for _, _, status, _ in load.results[:down])
        load.check_nothing_half_done()
        assert "Traceback" not in srv.log.read_text()


def s3_port() -> int:
    """A port for SeaweedFS's S3 gateway whose neighbours (+1..+3, and each
    +10000 for gRPC) are free too, below the ephemeral range."""
    import random
    import socket
    for _ in range(200):
        base = random.randrange(10000, 18000, 5)
        ports = [base + i for i in range(4)] + [base + 10000 + i for i in range(4)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports for a private SeaweedFS")


@pytest.fixture
def private_s3():
    s3 = PrivateService("s3", "S3_PORT")
    s3.port = s3_port()
    s3.env["S3_PORT"] = str(s3.port)
    env = dict(line.split("=", 1) for line in s3.start().strip().splitlines() if "=" in line)
    yield s3, env
    s3.purge()


def test_object_store_stopped_mid_upload(tmp_path, private_s3):
    s3, env = private_s3
    keyfile = tmp_path / "s3.key"
    keyfile.write_text(f"{env['S3_ACCESS_KEY']}:{env['S3_SECRET_KEY']}\n")
    keyfile.chmod(0o600)
    srv = CofferServer(tmp_path / "srv", tls=False, pin={"blobs": "local", "database": "sqlite"},
                       extra="[server]\nworkers = 2\n")
    text = srv.config.read_text()
    srv.config.write_text(text.replace("[storage]\n", f'[storage]\nblob_backend = "s3"\ns3_endpoint = '
                                       f'"{env["S3_ENDPOINT"]}"\ns3_bucket = "faults"\n'
                                       f's3_access_key_file = "{keyfile}"\n', 1))
    with srv:
        first = os.urandom(3 * 1024 * 1024)
        assert srv.request("PUT", "/big.bin", first)[0] == 201
        result = {}

        def slow_upload():                                      # a second version, sent slowly
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
            c.putrequest("PUT", "/big.bin")
            for k, v in {**srv.auth(), "Content-Length": str(8 * 1024 * 1024)}.items():
                c.putheader(k, v)
            c.endheaders()
            try:
                for _ in range(8):
                    c.send(os.urandom(1024 * 1024))
                    time.sleep(0.5)
                result["status"] = c.getresponse().status
            except OSError as e:
                result["error"] = e

        t = threading.Thread(target=slow_upload)
        t.start()
        time.sleep(1.2)
        s3.stop()                                               # the store goes away mid-upload
        t.join(120)
        assert result.get("status") == 503 or "error" in result, result      # refused, or cut off
        status, _, body = srv.request("GET", "/big.bin")
        assert status == 503 and b"object store" in body, body  # reading needs the store: a clean error
        s3.start()
        deadline = time.monotonic() + 60
        while srv.request("GET", "/big.bin")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, _, got = srv.request("GET", "/big.bin")
        assert (status, got) == (200, first)                    # the previous version is intact
        again = os.urandom(2 * 1024 * 1024)
        assert srv.request("PUT", "/big.bin", again)[0] == 204  # and uploads work once it is back
        assert srv.request("GET", "/big.bin")[2] == again
        assert "Traceback" not in srv.log.read_text()
