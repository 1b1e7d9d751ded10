"""Private files (keys, certificates) written whole or not at all.

Every key file the server makes — the master key, TLS keys and
certificates, the ACME account key, SSH host keys — is written by
`write_private`: into a temporary file beside it, mode 0600 from the start
(never readable by others, not even briefly), synced, renamed into place,
and the folder synced, so a crash leaves the old file or the new one, never
a torn or empty one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path, data: bytes, *, exclusive: bool = False) -> None:
    """Put `data` at `path`, replacing what is there; with `exclusive`,
    only if nothing is (FileExistsError otherwise: another process was
    first, and its file stands)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")   # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    sync_folder(path.parent)


def sync_folder(folder) -> None:
    """Make a rename or a new name in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
