"""The error family raised by the storage core.

Front-ends map these to protocol answers in one table each (HTTP status,
SFTP status code); the core never picks a protocol-specific error.
Every message says what failed and, where it helps, what to do.
"""


class CofferError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidPath(CofferError):
    """A path or name the filesystem refuses (NUL, `..`, over-long, bad UTF-8)."""


class NotFound(CofferError):
    """No such file, folder, version or account."""


class AlreadyExists(CofferError):
    """The target name is taken."""


class NotADirectory(CofferError):
    """A path component that must be a folder is a file."""


class IsADirectory(CofferError):
    """A file operation was asked of a folder."""


class DirectoryNotEmpty(CofferError):
    """A folder that must be empty is not."""


class PermissionDenied(CofferError):
    """The principal may not do this here (read-only tree, foreign account, grant)."""


class Conflict(CofferError):
    """The operation clashes with the current state (parent missing, move into itself)."""


class QuotaExceeded(CofferError):
    """The account's quota would be exceeded; nothing was changed."""


class TooLarge(CofferError):
    """Something a client sent exceeds a documented size limit; nothing was changed."""


class ChecksumMismatch(CofferError):
    """The content received does not hash to the checksum the client sent
    with it; nothing was changed."""


class IntegrityError(CofferError):
    """Stored data failed authentication or hashing: tampered or damaged."""


class Locked(CofferError):
    """The account's keys are not unlocked (private mode without a live session)."""


class AuthenticationFailed(CofferError):
    """Wrong user name or password, or a disabled account."""


class Throttled(AuthenticationFailed):
    """The login guard refused the attempt before any password was checked;
    `retry_after` is in whole seconds."""

    def __init__(self, retry_after_us: int):
        self.retry_after = max(1, -(-retry_after_us // 1_000_000))
        super().__init__(f"too many failed logins: try again in {self.retry_after} s")


class StorageUnavailable(CofferError):
    """The blob store or the disk failed (for example: disk full)."""
