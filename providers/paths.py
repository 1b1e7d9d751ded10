"""Every path and name the filesystem accepts is parsed and checked here, once.

Names are full Unicode, case-sensitive, and normalized to NFC so that a name
typed on macOS (NFD) and on Windows is the same file. Refused: NUL, `/`
inside a name, `.` and `..` as names, names over 255 UTF-8 bytes, paths over
4096 bytes, and bytes that are not valid UTF-8. Nothing is created, moved
or copied deeper than MAX_DEPTH names (`check_depth`).
"""
from __future__ import annotations

import unicodedata

from .errors import Conflict, InvalidPath

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 256           # names in the path of anything created, moved or copied
META = ".coffer"          # the hidden read-only tree of versions, trash and snapshots


def _text(path) -> str:
    if isinstance(path, (bytes, bytearray, memoryview)):
        try:
            return bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath("the path is not valid UTF-8; rename the file with a UTF-8 name") from None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath("the path is not valid UTF-8; rename the file with a UTF-8 name") from None
    return path


def check_name(name) -> str:
    """Validate one name and return it in NFC."""
    name = unicodedata.normalize("NFC", _text(name))
    if name == "":
        raise InvalidPath("an empty name is not allowed")
    if name in (".", ".."):
        raise InvalidPath(f"{name!r} cannot be used as a name")
    if "\x00" in name:
        raise InvalidPath("names cannot contain the NUL character")
    if "/" in name:
        raise InvalidPath("names cannot contain '/'")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidPath(f"the name is longer than {MAX_NAME_BYTES} bytes in UTF-8; choose a shorter name")
    return name


def parse(path) -> tuple[str, ...]:
    """Split an absolute or relative path into checked NFC names.

    Empty components (`//`, a trailing `/`) are ignored; `.` and `..` are
    refused rather than resolved, so no spelling of a path can climb out of
    the account. Protocols whose clients send `..` resolve it first with
    `resolve_dots`.
    """
    text = _text(path)
    if "\x00" in text:
        raise InvalidPath("paths cannot contain the NUL character")
    if len(text.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidPath(f"the path is longer than {MAX_PATH_BYTES} bytes")
    return tuple(check_name(part) for part in text.split("/") if part != "")


def resolve_dots(path, cwd: str = "/") -> str:
    """Resolve `.` and `..` lexically inside the account (`..` at the top
    stays at the top), for protocols whose clients send them (SFTP realpath)."""
    text = _text(path)
    if not text.startswith("/"):
        text = cwd.rstrip("/") + "/" + text
    out: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return join(parse("/".join(out)))


def check_depth(parts, below: int = 1) -> None:
    """Refuse to put something at `parts` whose tree is `below` levels tall
    (1: a file or an empty folder) when its deepest entry would lie deeper
    than MAX_DEPTH names."""
    depth = len(parts) + below - 1
    if depth > MAX_DEPTH:
        raise Conflict(f"{join(parts)}: that would make a path {depth} folders deep; trees are kept to "
                       f"{MAX_DEPTH} levels: put it higher up")


def join(parts) -> str:
    return "/" + "/".join(parts)


def is_meta(parts: tuple[str, ...]) -> bool:
    return bool(parts) and parts[0] == META
