"""The one table of this front-end: core errors become HTTP statuses here."""
from __future__ import annotations

import contextlib
import logging

from wsgidav.dav_error import (HTTP_BAD_REQUEST, HTTP_CONFLICT, HTTP_FORBIDDEN, HTTP_INTERNAL_ERROR,
                               HTTP_LOCKED, HTTP_METHOD_NOT_ALLOWED, HTTP_NOT_FOUND, DAVError)

from providers import errors

log = logging.getLogger("server.webdav")

HTTP_INSUFFICIENT_STORAGE = 507
HTTP_SERVICE_UNAVAILABLE = 503

STATUS = [
    (errors.InvalidPath, HTTP_BAD_REQUEST),
    (errors.NotFound, HTTP_NOT_FOUND),
    (errors.AlreadyExists, HTTP_METHOD_NOT_ALLOWED),
    (errors.NotADirectory, HTTP_CONFLICT),
    (errors.IsADirectory, HTTP_METHOD_NOT_ALLOWED),
    (errors.DirectoryNotEmpty, HTTP_CONFLICT),
    (errors.PermissionDenied, HTTP_FORBIDDEN),
    (errors.Conflict, HTTP_CONFLICT),
    (errors.QuotaExceeded, HTTP_INSUFFICIENT_STORAGE),
    (errors.TooLarge, 413),
    (errors.ChecksumMismatch, HTTP_BAD_REQUEST),
    (errors.IntegrityError, HTTP_INTERNAL_ERROR),
    (errors.Locked, HTTP_LOCKED),
    (errors.AuthenticationFailed, 401),
    (errors.StorageUnavailable, HTTP_SERVICE_UNAVAILABLE),
]


def dav_error(e: Exception) -> DAVError:
    for cls, status in STATUS:
        if isinstance(e, cls):
            if status == HTTP_INTERNAL_ERROR:
                log.error("integrity error: %s", e)
            return DAVError(status, str(e))
    return DAVError(HTTP_INTERNAL_ERROR)


@contextlib.contextmanager
def core():
    """Run core calls, turning their errors into DAVError."""
    try:
        yield
    except errors.CofferError as e:
        raise dav_error(e) from None
