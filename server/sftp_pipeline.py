"""Uploads written on a worker thread, so the session keeps reading the channel.

Encrypting, hashing and storing a chunk takes about as long as receiving it;
done inline, the client's window fills while the session is busy and the
connection idles. `PipelinedFile` wraps a `RandomFile`: the first write is
done inline (a small file never starts a thread), later ones are queued — at
most `LIMIT` bytes, so memory stays flat — and written in order by one worker.
A failed write makes every later call raise the same error, so a quota error
reaches the client at the latest on CLOSE and nothing is published. Every
other operation waits for the queue to drain first.
"""
from __future__ import annotations

import collections
import threading


class PipelinedFile:
    LIMIT = 4 * 1024 * 1024

    def __init__(self, file):
        self.file = file
        self.queue: collections.deque = collections.deque()
        self.queued = 0
        self.cv = threading.Condition()
        self.error: BaseException | None = None
        self.worker: threading.Thread | None = None
        self.stopping = False
        self.inflight = 0                        # bytes the worker is writing now
        self.writes = 0

    # -- writes -------------------------------------------------------------------------
    def pwrite(self, offset: int, data) -> None:
        self.writes += 1
        if self.writes == 1:
            self.file.pwrite(offset, data)
            return
        data = bytes(data)
        with self.cv:
            while self.queued + self.inflight >= self.LIMIT and self.error is None:
                self.cv.wait()
            if self.error is not None:
                raise self.error
            self.queue.append((offset, data))
            self.queued += len(data)
            self.cv.notify_all()
        if self.worker is None:
            self.worker = threading.Thread(target=self._run, name="sftp-upload", daemon=True)
            self.worker.start()

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.queue and not self.stopping:
                    self.cv.wait()
                if not self.queue:
                    return
                offset, data = self.queue.popleft()
                self.queued -= len(data)
                self.inflight = len(data)
            try:
                if self.error is None:
                    self.file.pwrite(offset, data)
            except BaseException as e:          # reported to the session on its next call
                with self.cv:
                    self.error = e
            with self.cv:
                self.inflight = 0
                self.cv.notify_all()

    def drain(self) -> None:
        with self.cv:
            while self.queue or self.inflight:
                self.cv.wait()
            if self.error is not None:
                raise self.error

    def _stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        if self.worker is not None:
            self.worker.join()

    # -- everything else waits for the writes -----------------------------------------------
    @property
    def size(self) -> int:
        self.drain()
        return self.file.size

    def pread(self, offset: int, n: int) -> bytes:
        self.drain()
        return self.file.pread(offset, n)

    def truncate(self, n: int) -> None:
        self.drain()
        self.file.truncate(n)

    def commit(self):
        try:
            self.drain()
        finally:
            self._stop()
        return self.file.commit()

    def abort(self) -> None:
        with self.cv:
            self.queue.clear()
            self.queued = 0
            self.error = self.error or RuntimeError("upload abandoned")
            self.cv.notify_all()
        self._stop()
        self.file.abort()
