"""Socket files for cheroot connections that move large bodies with fewer copies.

cheroot reads and writes sockets through pure-Python buffered files. A
1 MiB read of a PUT body is copied four or five times there (each recv, the
join, two slices), and each block of a response is copied into a bytearray
and out again before it is sent. These subclasses keep cheroot's behaviour
for everything small (request lines, headers, XML bodies) and take the
short way for large transfers: a large read goes straight into one buffer,
and a write goes to the socket as it is. Over plain HTTP this made a 1 GiB
PUT about a third faster on the request thread.
"""
from __future__ import annotations

import io
import os
import socket
import ssl

from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection, HTTPRequest

from providers import turn


class SocketReader(StreamReader):
    """Also leaves the turn (providers/turn.py) before it receives: what is
    not buffered yet may be slow to come."""

    LARGE = 64 * 1024          # reads from this size on skip the Python buffer

    def __init__(self, sock, mode="r", bufsize=io.DEFAULT_BUFFER_SIZE):
        super().__init__(sock, mode, bufsize)
        receive = self.raw.readinto

        def readinto(b):
            turn.leave()
            return receive(b)
        self.raw.readinto = readinto

    def readline(self, size=-1):
        """A line already in the buffer (a request line or header, the usual
        case) is cut out in one step; _pyio's readline peeks and reads in
        Python, a few microseconds a line on every request."""
        with self._read_lock:
            buf, pos = self._read_buf, self._read_pos
            end = buf.find(b"\n", pos) + 1
            if end and (size is None or size < 0 or end - pos <= size):
                self._read_pos = end
                self.bytes_read += end - pos
                return buf[pos:end]
        return super().readline(size)

    def read(self, size=-1):
        if size is None or size < self.LARGE:
            return super().read(size)
        with self._read_lock:
            buf, pos = self._read_buf, self._read_pos
            have = len(buf) - pos
            if have >= size:
                self._read_pos = pos + size
                data = buf[pos:pos + size]
            elif not isinstance(self.raw._sock, ssl.SSLSocket):
                # each recv fills a fresh bytes object: nothing is zeroed
                # first, and when the block arrives in one piece (the usual
                # case while the server is the slower side) nothing is copied
                # at all; these ran with the interpreter lock held, a fifth
                # of a 1 GiB PUT's time on the request thread
                pieces = [buf[pos:]] if have else []
                self._reset_read_buf()
                turn.leave()
                got = have
                while got < size:
                    try:
                        piece = self.raw._sock.recv(size - got)
                    except socket.timeout:
                        self.raw._timeout_occurred = True       # as SocketIO does
                        raise
                    if not piece:          # end of stream
                        break
                    pieces.append(piece)
                    got += len(piece)
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            else:
                # TLS hands out a record (16 KiB) per read: into one buffer
                out = bytearray(size)
                out[:have] = memoryview(buf)[pos:]
                self._reset_read_buf()
                got = have
                with memoryview(out) as view:
                    while got < size:
                        n = self.raw.readinto(view[got:])
                        if not n:          # end of stream (or nothing yet on a non-blocking socket)
                            break
                        got += n
                del out[got:]
                data = bytes(out)
        self.bytes_read += len(data)
        return data


class SocketWriter(StreamWriter):
    """Writes go to the socket as they are; a response's headers wait for its
    first body block (or its end) and go out with it, in one send: a small
    response is then one segment and one system call, not two (on loopback
    the second send cost as much as the rest of a PROPFIND)."""

    COMBINE = 64 * 1024                # body blocks up to this size are joined to the headers
    _holding = False
    _held = None

    def hold_next(self) -> None:
        self._holding = True

    def release(self) -> None:
        """Send held headers (a response without a body, or one that failed)."""
        held, self._held = self._held, None
        self._holding = False
        if held:
            with self._write_lock:
                self._send(held)

    def write(self, b):
        self._checkClosed()
        if isinstance(b, str):
            raise TypeError("can't write str to binary stream")
        n = len(b)
        if self._holding:
            self._holding = False
            self._held = bytes(b)
            self.bytes_written += n
            return n
        held, self._held = self._held, None
        with self._write_lock:
            self._flush_unlocked()             # nothing is left there normally
            if held is not None and n <= self.COMBINE:
                self._send(held + bytes(b))
            else:
                if held is not None:
                    self._send(held)
                self._send(b)
        self.bytes_written += n
        return n

    def _send(self, data) -> None:
        """sendall; in the turn (providers/turn.py) only as long as the
        socket takes the data at once and the turn's slice lasts: a client
        that is slow to read (or does not read at all) is waited for out of
        it, and a long answer goes out beside the other requests."""
        sock = self.raw._sock
        if turn.overdue():
            turn.leave()
        if turn.held() and sock.gettimeout() is not None:     # a blocking socket is waited on out of the turn
            sent = 0
            try:
                if isinstance(sock, ssl.SSLSocket):
                    timeout = sock.gettimeout()
                    sock.settimeout(0)
                    try:
                        sent = sock.send(data)
                    finally:
                        sock.settimeout(timeout)
                else:
                    # the descriptor is non-blocking under Python's timeout;
                    # send() would first wait for room, up to that timeout
                    sent = os.write(sock.fileno(), data)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        turn.leave()
        sock.sendall(data)


def make_file(sock, mode="r", bufsize=io.DEFAULT_BUFFER_SIZE):
    return (SocketReader if "r" in mode else SocketWriter)(sock, mode, bufsize)


class Request(HTTPRequest):
    def send_headers(self):
        self.conn.wfile.hold_next()
        super().send_headers()

    def respond(self):
        try:
            super().respond()
        finally:
            self.conn.wfile.release()


LINGER_SECONDS = 0.002       # a request thread waits this long for a kept-alive connection's next request


class Connection(HTTPConnection):
    """cheroot's connection with the socket files above, for plain and TLS
    sockets alike (both are read and written through the socket object)."""

    RequestHandlerClass = Request

    gate = None                      # the Gate that counted this connection (server/http_gate.py)
    addr_key = ""

    def __init__(self, server, sock, makefile=None):
        super().__init__(server, sock, make_file)

    def communicate(self):
        """Serve requests while the next one follows within LINGER_SECONDS
        (Gate.next_head), each begun in the turn; True when the connection
        is kept alive."""
        keep = self._one()
        while keep and self.gate is not None and self.gate.next_head(self, LINGER_SECONDS):
            keep = self._one()
        return keep

    def _one(self) -> bool:
        """One request, begun in the turn (providers/turn.py)."""
        turn.take()
        try:
            return super().communicate()
        finally:
            turn.leave()

    def close(self):
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.release(self.addr_key)
        super().close()
