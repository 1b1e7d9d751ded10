"""An upload's writes done on a worker thread, for WebDAV PUT and SFTP WRITE.

Encrypting, hashing and storing a chunk takes about as long as receiving it;
done inline, the client's window fills while the connection's thread is busy
and the connection idles. The first write is done inline (a small file never
starts a thread); later ones are queued — at most `LIMIT` bytes, so memory
stays flat — and written in order by one worker. A failed write makes every
later call raise the same error, so a quota error reaches the client at the
latest when the upload ends, and nothing is published.
"""
from __future__ import annotations

import collections
import threading


class UploadPipe:
    LIMIT = 4 * 1024 * 1024

    def __init__(self, write, name: str = "upload"):
        self.write = write                       # write(item): the core's write of one item
        self.name = name
        self.queue: collections.deque = collections.deque()
        self.queued = 0
        self.cv = threading.Condition()
        self.error: BaseException | None = None
        self.worker: threading.Thread | None = None
        self.stopping = False
        self.inflight = 0                        # bytes the worker is writing now
        self.puts = 0

    def put(self, item, nbytes: int) -> None:
        """Write `item` (of `nbytes` bytes): at once the first time, then on
        the worker; raises what an earlier write hit. A queued item must not
        change afterwards (pass bytes, not a reused buffer)."""
        self.puts += 1
        if self.puts == 1:
            self.write(item)
            return
        with self.cv:
            while self.queued + self.inflight >= self.LIMIT and self.error is None:
                self.cv.wait()
            if self.error is not None:
                raise self.error
            self.queue.append((item, nbytes))
            self.queued += nbytes
            self.cv.notify_all()
        if self.worker is None:
            self.worker = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.worker.start()

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.queue and not self.stopping:
                    self.cv.wait()
                if not self.queue:
                    return
                item, nbytes = self.queue.popleft()
                self.queued -= nbytes
                self.inflight = nbytes
            try:
                if self.error is None:
                    self.write(item)
            except BaseException as e:          # reported to the connection's thread on its next call
                with self.cv:
                    self.error = e
            with self.cv:
                self.inflight = 0
                self.cv.notify_all()

    def drain(self) -> None:
        """Wait until every queued write is done; raise what one of them hit."""
        with self.cv:
            while self.queue or self.inflight:
                self.cv.wait()
            if self.error is not None:
                raise self.error

    def close(self) -> None:
        """drain(), then end the worker (also when the drain raises)."""
        try:
            self.drain()
        finally:
            self._stop()

    def abort(self) -> None:
        """Drop what is queued and end the worker; later calls raise."""
        with self.cv:
            self.queue.clear()
            self.queued = 0
            self.error = self.error or RuntimeError("upload abandoned")
            self.cv.notify_all()
        self._stop()

    def _stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        if self.worker is not None:
            self.worker.join()
