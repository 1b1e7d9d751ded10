"""Run the installed `coffer-admin` entry point against a config in a temporary folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from providers import config
from providers.storage import Storage

from backend import storage_options

ADMIN = str(Path(sys.executable).with_name("coffer-admin"))
FAST = {"bcrypt_rounds": 4, "argon2_memory_kib": 1024, "argon2_iterations": 1, "argon2_lanes": 1,
        "default_mode": "managed"}       # accounts managed unless a test asks for private (the default)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


class Admin:
    """A config file plus a runner: `admin("user", "list", "--json")`."""

    def __init__(self, folder: Path, **sections):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        raw = {"storage": storage_options(self.folder), "security": dict(FAST)}
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        self.config = self.folder / "coffer.toml"
        self.config.write_text("\n".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in body.items())
                                         for name, body in raw.items()))
        self.cfg = config.load(self.config)

    @classmethod
    def of(cls, path: Path) -> "Admin":
        """A runner on an existing config file (a running server's)."""
        a = cls.__new__(cls)
        a.config, a.folder = Path(path), Path(path).parent
        a.cfg = config.load(a.config)
        return a

    def __call__(self, *args, input: str | None = None, check: bool | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([ADMIN, "--config", str(self.config), *args], input=input if input is not None else "",
                           capture_output=True, text=True, timeout=120)
        if check is True:
            assert p.returncode == 0, f"coffer-admin {' '.join(args)} failed ({p.returncode}): {p.stderr}"
        return p

    def ok(self, *args, input: str | None = None):
        """Run, require success; parsed JSON when --json was given, else stdout."""
        p = self(*args, input=input, check=True)
        return json.loads(p.stdout) if "--json" in args else p.stdout

    def fails(self, *args, input: str | None = None, rc: int = 1) -> str:
        """Run, require the exit code and a one-line reason on stderr; returns it."""
        p = self(*args, input=input)
        assert p.returncode == rc, f"expected exit {rc}, got {p.returncode}: {p.stdout} {p.stderr}"
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("coffer-admin"), p.stderr
        return lines[0]

    def add_user(self, name: str, password: str, *extra) -> dict:
        return self.ok("user", "add", name, "--password-stdin", "--json", *extra, input=f"{password}\n{password}\n")

    def storage(self) -> Storage:
        return Storage.open(self.cfg)
