"""What the web pages read from a request: cookies, small forms, and uploads
parsed as they stream in (a file's bytes go to the storage core's write
stream as they arrive; no upload is held whole in memory or on disk)."""
from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

import multipart

MAX_FORM = 64 * 1024             # a form without files
MAX_FIELD = 4096                 # one field of an upload form that is not a file
READ_BLOCK = 256 * 1024
MAX_DISCARD = 1 << 30            # what is read and dropped of a refused upload before the connection is cut


class FormError(Exception):
    """The request's form cannot be read; the message is for the person."""


def cookie(environ, name: str) -> str | None:
    try:
        jar = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def query(environ) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=16).items()}


def _length(environ) -> int | None:
    text = environ.get("CONTENT_LENGTH", "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        raise FormError("The request's length is not a number.") from None
    if n < 0:
        raise FormError("The request's length is negative.")
    return n


def small_form(environ) -> dict[str, str]:
    """The fields of an `application/x-www-form-urlencoded` POST of at most MAX_FORM bytes."""
    if "application/x-www-form-urlencoded" not in environ.get("CONTENT_TYPE", ""):
        raise FormError("This page expects a form sent from its own page.")
    n = _length(environ)
    if n is not None and n > MAX_FORM:
        raise FormError(f"The form is larger than {MAX_FORM} bytes.")
    body = environ["wsgi.input"].read(MAX_FORM + 1 if n is None else n)
    if len(body) > MAX_FORM:
        raise FormError(f"The form is larger than {MAX_FORM} bytes.")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise FormError("The form could not be read.") from None
    return {k: v[0] for k, v in fields.items()}


def stream_upload(environ, on_field, open_file):
    """Read a `multipart/form-data` POST as it arrives.

    `on_field(name, value)` gets each small field as soon as it ends (the
    form puts its token first, so it is checked before any file is
    written); `open_file(filename)` returns a writer (write, commit, abort)
    for each file part, which receives the part's bytes as they come.
    Returns the names of the files committed."""
    kind, options = multipart.parse_options_header(environ.get("CONTENT_TYPE", ""))
    boundary = options.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise FormError("This page expects files sent from its own upload form.")
    remaining = _length(environ)
    stream = environ["wsgi.input"]
    done: list[str] = []
    writer = field = name = None
    value = bytearray()
    try:
        with multipart.PushMultipartParser(boundary, max_header_size=4096, max_segment_count=1000) as parser:
            while not parser.closed:
                want = READ_BLOCK if remaining is None else min(READ_BLOCK, remaining)
                chunk = stream.read(want) if want else b""
                if remaining is not None:
                    remaining -= len(chunk)
                for event in parser.parse(chunk):
                    if isinstance(event, multipart.MultipartSegment):
                        if event.filename is not None:
                            name = event.filename
                            writer = open_file(name) if name else None
                        else:
                            field, value = event.name, bytearray()
                    elif event is None:
                        if writer is not None:
                            writer.commit()
                            done.append(name)
                        elif field is not None:
                            on_field(field, value.decode("utf-8", "replace"))
                        writer = field = name = None
                    elif writer is not None:
                        writer.write(event)
                    elif field is not None:
                        value += event
                        if len(value) > MAX_FIELD:
                            raise FormError("A field of the upload form is too long.")
                if not chunk and not parser.closed:
                    raise FormError("The upload ended before all of it arrived; nothing more was saved.")
    except multipart.MultipartError:
        raise FormError("The upload could not be read; try again from the upload form.") from None
    finally:
        if writer is not None:
            writer.abort()
    return done


def discard_rest(environ) -> None:
    """Read and drop what is left of a refused upload (up to MAX_DISCARD),
    so the browser, still sending, receives the answer: a server that
    closes with unread bytes resets the connection, and the browser then
    shows a network error instead of the sentence."""
    stream, left = environ["wsgi.input"], MAX_DISCARD
    while left > 0:
        chunk = stream.read(min(READ_BLOCK, left))
        if not chunk:
            return
        left -= len(chunk)
