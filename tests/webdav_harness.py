"""A real `coffer serve` process for protocol tests, and helpers for real clients.

The server runs on a free 127.0.0.1 port with its own data folder and is
stopped by its PID. Accounts are created before it starts, through the
storage core, with fast password hashing.
"""
from __future__ import annotations

import base64
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend import storage_toml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_client(program: str) -> str:
    """Path of a client program; a missing one skips loudly, or fails in CI."""
    path = shutil.which(program)
    if path:
        return path
    msg = (f"CLIENT MISSING: {program!r} is not installed, so this real-client test cannot run "
           f"(apt-get install -y litmus rclone curl)")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def write_config(folder: Path, port: int, *, tls: bool = True, extra: str = "", pin: dict | None = None,
                 webdav: str = "", sftp_port: int | None = None) -> Path:
    """`pin` (blobs="local", database="sqlite") keeps a test about one
    backend's own files on that backend (see backend.py); `webdav` holds
    more [webdav] options, `extra` more sections."""
    cfg = folder / "coffer.toml"
    cfg.write_text(f"""
{storage_toml(folder, **(pin or {}))}
[security]
bcrypt_rounds = 4
argon2_memory_kib = 1024
argon2_iterations = 1
argon2_lanes = 1
default_mode = "managed"
credential_cache_seconds = 60

[webdav]
host = "127.0.0.1"
port = {port}
tls = {'true' if tls else 'false'}
allow_plain_http = {'false' if tls else 'true'}
{webdav}

[sftp]
{f'host = "127.0.0.1"{chr(10)}port = {sftp_port}' if sftp_port else "enabled = false"}
{extra}
""")
    return cfg


class ServeProcess:
    """A real `coffer serve` process on this harness's config: started and
    waited for, stopped by its own PID. Subclasses set `config` and `log`
    and prepare accounts in `prepare()`."""

    proc = None
    own_group = False           # start it in a process group of its own (its workers too), for kill_group

    def prepare(self) -> None:
        pass

    def start(self):
        self.prepare()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.main", "serve", "--config", str(self.config)],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=self.own_group)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("coffer serve exited early:\n" + self.log.read_text(errors="replace"))
            if b"coffer: ready" in self.log.read_bytes():
                self.output = self.log.read_text(errors="replace")
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("coffer serve did not become ready:\n" + self.log.read_text(errors="replace"))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def kill_group(self) -> None:
        """SIGKILL the server and every worker at once (a power cut, an OOM
        kill of the whole service), and wait until none of them runs."""
        assert self.own_group, "kill_group needs own_group = True before start"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class CofferServer(ServeProcess):
    """`coffer serve` in a child process. Use as a context manager."""

    def __init__(self, folder: Path, *, tls: bool = True, accounts: dict | None = None,
                 quotas: dict | None = None, extra: str = "", pin: dict | None = None, webdav: str = "",
                 modes: dict | None = None, sftp: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.sftp_port = free_port() if sftp else None      # SFTP too, on this port
        self.config = write_config(self.folder, self.port, tls=tls, extra=extra, pin=pin, webdav=webdav,
                                   sftp_port=self.sftp_port)
        self.accounts = dict(accounts or {"alice": "alice-pw-1", "bob": "bob-pw-22"})
        self.quotas = quotas or {}
        self.modes = modes or {}            # account name: "private" (else "managed")
        self.proc = None
        self.log = self.folder / "server.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def create_accounts(self):
        from providers import config
        from providers.storage import Storage
        cfg = config.load(self.config)
        st = Storage.open(cfg)
        try:
            for name, pw in self.accounts.items():
                st.accounts.create(name, pw, quota=self.quotas.get(name), mode=self.modes.get(name, "managed"))
        finally:
            close = getattr(st, "close", None)
            if close:
                close()

    def prepare(self) -> None:
        self.create_accounts()

    # -- a tiny HTTP client -------------------------------------------------------
    def connection(self) -> http.client.HTTPConnection:
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def auth(self, user: str = "alice", password: str | None = None) -> dict:
        password = self.accounts[user] if password is None else password
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": "Basic " + token}

    def request(self, method: str, path: str, body=None, headers=None, user: str | None = "alice",
                conn=None) -> tuple[int, dict, bytes]:
        h = dict(self.auth(user) if user else {})
        h.update(headers or {})
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            if own:
                conn.close()
