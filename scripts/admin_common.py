"""What every coffer-admin command module shares: usage errors, sizes and
times in text, secrets from a prompt or stdin, progress, output."""
from __future__ import annotations

import getpass
import json
import re
import sys
import time

from providers import consent
from providers.errors import CofferError
from providers.storage import Storage

UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
         "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


class UsageError(CofferError):
    pass


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in UNITS:
        raise UsageError(f"{text!r} is not a size; write for example 500M, 10G or 1T (0 = no limit)")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def human(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def when(us: int | None) -> str:
    if not us:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(us / 1e6))


class Secrets:
    """Reads secrets from stdin lines (--password-stdin) or a prompt."""

    def __init__(self, from_stdin: bool):
        self.from_stdin = from_stdin

    def get(self, prompt: str, confirm: bool = False) -> str:
        if self.from_stdin:
            line = sys.stdin.readline()
            if not line:
                raise UsageError(f"expected a line on standard input for: {prompt.rstrip(': ')}")
            return line.rstrip("\r\n")
        if not sys.stdin.isatty():
            raise UsageError("no terminal to prompt on: pass --password-stdin and give secrets on standard input")
        value = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != value:
            raise UsageError("the two entries differ; nothing was changed")
        return value


class Progress:
    """A one-line counter on stderr when it is a terminal (and not --json)."""

    def __init__(self, args, label: str):
        self.on = sys.stderr.isatty() and not getattr(args, "json", False)
        self.label, self.last = label, 0.0

    def __call__(self, n: int, label: str | None = None) -> None:
        """Show a count; a job with several phases names the current one."""
        now = time.monotonic()
        if self.on and now - self.last > 0.2:
            self.last = now
            sys.stderr.write(f"\r{label or self.label}: {n}\x1b[K")
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def out(args, data, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def user_dict(st: Storage, u) -> dict:
    limit = st.accounts.quota_limit(u)
    return {"name": u.name, "first_name": u.first_name, "last_name": u.last_name, "email": u.email,
            "status": u.status, "mode": u.mode, "plan": u.plan, "quota_bytes": limit,
            "used_bytes": st.accounts.usage(u.id), "created": when(u.created_us),
            "last_login": when(u.last_login_us), "email_consent": u.consent_news,
            "email_consent_changed": when(u.consent_changed_us),
            "email_consent_how": consent.how_text(u.consent_how),
            "erase_after": when(u.erase_after_us) if u.erase_after_us else None}
