"""The few commands an SSH client may run besides SFTP.

rclone asks `md5sum` / `sha1sum` for hash checks (first with no argument on
empty input, to see whether the command works, then with a shell-quoted
path) and some clients call `df`. These are answered from the account's
filesystem — a version's checksum is computed on the first request and kept
with the version — never by a shell. `coffer share …` lets an owner manage their shared folders
(server/sftp_share.py), `coffer app-password …` their app passwords (server/sftp_apps.py),
`coffer access` lists what administrators did on the account (server/sftp_access.py),
`coffer exclude …` sets which files keep no history (server/sftp_exclude.py). Anything else, and
a shell, is refused with a message
on stderr.
"""
from __future__ import annotations

import hashlib
import logging
import shlex

from providers import paths
from providers.errors import CofferError, IsADirectory, NotFound, PermissionDenied

log = logging.getLogger(__name__)

HASHES = {"md5sum": "md5", "sha1sum": "sha1", "sha256sum": "sha256"}
ONLY = ("this server offers SFTP only (plus the commands md5sum, sha1sum, sha256sum, df, coffer share, "
        "coffer app-password, coffer access and coffer exclude); there is no shell and no forwarding")
SHELL_REFUSED = f"Coffer: {ONLY}.\r\n"
MAX_STDIN = 64 * 1024 * 1024


def replies(channel):
    """(say, fail) of a command: a line on standard output; a message on
    standard error and the exit status to return (1 unless given)."""
    def say(text: str) -> None:
        channel.sendall((text + "\n").encode("utf-8"))

    def fail(text: str, code: int = 1) -> int:
        channel.sendall_stderr(text.encode("utf-8"))
        return code
    return say, fail


def run(channel, vfs, command: bytes, disk_space=None) -> int:
    """Run `command` on `channel`: write its output, return the exit status."""
    try:
        text = command.decode("utf-8")
        argv = shlex.split(text)
    except (UnicodeDecodeError, ValueError):
        channel.sendall_stderr(b"coffer: the command could not be parsed\n")
        return 2
    if not argv:
        channel.sendall_stderr(f"Coffer: {ONLY}.\n".encode())
        return 127
    name, args = argv[0], argv[1:]
    if name in HASHES:
        return hash_files(channel, vfs, name, args)
    if name == "df":
        return df(channel, vfs, args, disk_space)
    if name == "coffer" and args[:1] == ["app-password"]:
        from . import sftp_apps
        return sftp_apps.run(channel, vfs, args)
    if name == "coffer":
        if args[:1] == ["access"]:
            from . import sftp_access
            return sftp_access.run(channel, vfs, args[1:])
        if args[:1] == ["exclude"]:
            from . import sftp_exclude
            return sftp_exclude.run(channel, vfs, args[1:])
        from . import sftp_share
        return sftp_share.run(channel, vfs, args)
    channel.sendall_stderr(f"Coffer: {name[:64]}: command not available; {ONLY}.\n".encode())
    return 127


def _hash_stdin(channel, algo: str) -> str:
    h = hashlib.new(algo)
    total = 0
    while True:
        data = channel.recv(1024 * 1024)
        if not data:
            break
        total += len(data)
        if total > MAX_STDIN:
            raise ValueError("standard input too large")
        h.update(data)
    return h.hexdigest()


def hash_files(channel, vfs, name: str, args: list[str]) -> int:
    algo = HASHES[name]
    files = [a for a in args if not a.startswith("-") or a == "-"]
    if not files:
        try:
            channel.sendall(f"{_hash_stdin(channel, algo)}  -\n".encode())
        except ValueError as e:
            channel.sendall_stderr(f"{name}: {e}\n".encode())
            return 1
        return 0
    status = 0
    out = []
    for arg in files:
        try:
            path = paths.resolve_dots(arg, "/")
            digest = _file_hash(vfs, path, algo)
            out.append(f"{digest}  {arg}\n")
        except NotFound:
            channel.sendall_stderr(f"{name}: {arg}: No such file or directory\n".encode())
            status = 1
        except IsADirectory:
            channel.sendall_stderr(f"{name}: {arg}: Is a directory\n".encode())
            status = 1
        except PermissionDenied:
            channel.sendall_stderr(f"{name}: {arg}: Permission denied\n".encode())
            status = 1
        except CofferError as e:
            channel.sendall_stderr(f"{name}: {arg}: {e}\n".encode())
            status = 1
    if out:
        channel.sendall("".join(out).encode("utf-8"))
    return status


def _file_hash(vfs, path: str, algo: str) -> str:
    return vfs.hashes(path, compute=(algo,))[algo]


def df(channel, vfs, args: list[str], disk_space=None) -> int:
    total, free = vfs.quota().space(disk_space)
    used = max(0, total - free)
    human = "-h" in args
    pct = f"{-(-used * 100 // total) if total else 0}%"

    def fmt(n: int) -> str:
        if not human:
            return str(n // 1024)
        for unit in ("", "K", "M", "G", "T", "P"):
            if n < 1024 or unit == "P":
                return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
            n /= 1024
        return str(n)

    head = "Size" if human else "1K-blocks"
    lines = [f"{'Filesystem':<14} {head:>10} {'Used':>10} {'Available':>10} {'Use%':>4} Mounted on",
             f"{'coffer':<14} {fmt(total):>10} {fmt(used):>10} {fmt(free):>10} {pct:>4} /"]
    channel.sendall(("\n".join(lines) + "\n").encode())
    return 0
