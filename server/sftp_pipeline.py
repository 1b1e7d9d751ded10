"""An SFTP upload's file, written through server/upload_pipe.py.

`PipelinedFile` wraps a `RandomFile`: its writes go through the upload pipe
(the session keeps reading the channel meanwhile), and every other operation
waits for the queued writes first, so reads, sizes and truncation see them
all. A failed write is raised again by every later call, at the latest on
CLOSE, and nothing is published.
"""
from __future__ import annotations

from .upload_pipe import UploadPipe


class PipelinedFile:
    def __init__(self, file):
        self.file = file
        self.pipe = UploadPipe(lambda item: file.pwrite(*item), "sftp-upload")

    def pwrite(self, offset: int, data) -> None:
        if self.pipe.puts:
            data = bytes(data)                  # queued: the session reuses its buffers
        self.pipe.put((offset, data), len(data))

    @property
    def size(self) -> int:
        self.pipe.drain()
        return self.file.size

    def pread(self, offset: int, n: int) -> bytes:
        self.pipe.drain()
        return self.file.pread(offset, n)

    def truncate(self, n: int) -> None:
        self.pipe.drain()
        self.file.truncate(n)

    def commit(self):
        self.pipe.close()
        return self.file.commit()

    def abort(self) -> None:
        self.pipe.abort()
        self.file.abort()
