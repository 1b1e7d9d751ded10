"""A real `coffer serve` process with only SFTP enabled, and OpenSSH helpers.

The server listens on a free 127.0.0.1 port with its own data folder and is
stopped by its PID. Accounts and SSH keys are created through the storage
core before it starts. Client keys are generated with ssh-keygen into the
test folder; passwords reach OpenSSH through an SSH_ASKPASS script reading a
file, never the command line.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from backend import storage_toml
from webdav_harness import ServeProcess, free_port, require_client

ACCOUNTS = {"alice": ("alice-pw-1", "managed"), "bob": ("bob-pw-22", "managed"),
            "carol": ("carol-pw-333", "private")}


def write_config(folder: Path, port: int, extra: str = "", security: str = "") -> Path:
    cfg = folder / "coffer.toml"
    cfg.write_text(f"""
{storage_toml(folder)}
[security]
{security or "bcrypt_rounds = 4"}
argon2_memory_kib = 1024
argon2_iterations = 1
argon2_lanes = 1
default_mode = "managed"

[webdav]
enabled = false

[sftp]
host = "127.0.0.1"
port = {port}
{extra}
""")
    return cfg


class SftpServer(ServeProcess):
    """`coffer serve` (SFTP only) in a child process; a context manager."""

    def __init__(self, folder: Path, accounts: dict | None = None, quotas: dict | None = None,
                 extra: str = "", keys: dict | None = None, security: str = ""):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = write_config(self.folder, self.port, extra, security)
        self.accounts = dict(accounts or ACCOUNTS)
        self.quotas = quotas or {}
        self.keys = keys if keys is not None else {n: [n] for n in self.accounts}
        self.key_files: dict[str, Path] = {}
        self.proc = None
        self.log = self.folder / "server.log"
        self.output = ""

    # -- set-up -------------------------------------------------------------------
    def make_key(self, name: str, kind: str = "ed25519") -> Path:
        require_client("ssh-keygen")
        path = self.folder / "keys" / f"{name}_{kind}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@test", "-f", str(path)],
                           check=True)
        self.key_files.setdefault(name, path)
        return path

    def setup(self):
        from providers import config
        from providers.sshkeys import SSHKeys
        from providers.storage import Storage
        cfg = config.load(self.config)
        st = Storage.open(cfg)
        try:
            keys = SSHKeys(st.db, st.accounts)
            for name, (pw, mode) in self.accounts.items():
                st.accounts.create(name, pw, mode=mode, quota=self.quotas.get(name))
            for name, key_names in self.keys.items():
                for key_name in key_names:
                    path = self.make_key(key_name)
                    keys.add(name, path.with_suffix(".pub").read_text())
        finally:
            st.close()

    def prepare(self) -> None:
        self.setup()

    # -- OpenSSH ---------------------------------------------------------------------
    def ssh_options(self, user: str = "alice", key: str | None = "default", password: bool = False) -> list[str]:
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=20", "-o", "IdentitiesOnly=yes", "-o", f"User={user}"]
        if password:
            opts += ["-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no",
                     "-o", "NumberOfPasswordPrompts=1"]
        else:
            key_path = self.key_files[user if key == "default" else key]
            opts += ["-o", "PreferredAuthentications=publickey", "-o", "BatchMode=yes", "-i", str(key_path)]
        return opts

    def askpass_env(self, password: str) -> dict:
        """Environment making OpenSSH read `password` from a file via SSH_ASKPASS."""
        secret = self.folder / f"pw-{abs(hash(password))}"
        secret.write_text(password)
        secret.chmod(0o600)
        script = self.folder / f"askpass-{abs(hash(password))}.sh"
        script.write_text(f"#!/bin/sh\ncat '{secret}'\n")
        script.chmod(0o700)
        return dict(os.environ, SSH_ASKPASS=str(script), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")

    def sftp_batch(self, commands: str, user: str = "alice", password: str | None = None, cwd=None,
                   timeout: int = 300) -> subprocess.CompletedProcess:
        require_client("sftp")
        fd, name = tempfile.mkstemp(prefix="batch-", suffix=".txt", dir=self.folder)
        os.close(fd)
        batch = Path(name)
        batch.write_text(commands)
        cmd = ["sftp", "-b", str(batch), "-P", str(self.port)] + self.ssh_options(user, password=password is not None)
        env = self.askpass_env(password) if password is not None else None
        if password is not None:
            cmd.insert(1, "-oBatchMode=no")
        cmd.append("127.0.0.1")
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def ssh(self, command: str, user: str = "alice", input: bytes | None = None,
            timeout: int = 60, extra: list | None = None) -> subprocess.CompletedProcess:
        require_client("ssh")
        cmd = ["ssh", "-p", str(self.port)] + self.ssh_options(user) + list(extra or []) + ["127.0.0.1", command]
        return subprocess.run(cmd, capture_output=True, input=input if input is not None else b"",
                              timeout=timeout)
