"""The door of the WebDAV port: no connection takes a request thread until
its request headers have arrived whole.

cheroot hands a new connection to a request thread at once (a client that
connects and says nothing holds that thread until the socket timeout), does
the TLS handshake on its single accept thread (one silent client stalls every
new connection), and keeps only ten idle keep-alive connections. Here one
selector thread does all the waiting, without blocking:

- the TLS handshake, and then the request line and headers, must arrive within
  `[webdav] header_timeout_seconds` of the connection (or of the first byte of
  a later request on a kept-alive connection); a connection that is late is
  closed, having cost no thread;
- a kept-alive connection between requests costs no thread either, and is
  closed after `idle_timeout_seconds`;
- only a connection whose headers are complete goes to a request thread,
  where a body or response that makes no progress for `io_timeout_seconds`
  ends the request;
- at most `max_connections_per_address` connections per IPv4 address or IPv6
  /64, and `max_connections` in all (when full, the longest-idle waiting
  connection is closed to make room);
- the pool of request threads grows from `threads` up to `max_threads` while
  every thread is busy (uploads and downloads in progress);
- a connection from a load balancer in `[server] proxy_protocol_from` first
  gives its PROXY header (server/proxy_protocol.py), whose client address
  counts from then on.
"""
from __future__ import annotations

import logging
import select
import selectors
import socket
import ssl
import threading
import time

from cheroot.connections import ConnectionManager, prevent_socket_inheritance
from cheroot.makefile import MakeFile

from providers.throttle import address_of

from . import proxy_protocol

log = logging.getLogger(__name__)

ACCEPT_PAUSE_SECONDS = 0.005        # how long a new connection waits for a less loaded worker
HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024           # headers larger than this go on, for cheroot to refuse (431)
REFUSAL_LOG_SECONDS = 60
PLAIN_HTTP_ON_TLS = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: 61\r\n\r\nThis port speaks HTTPS only: use an https:// address instead.")


def head_complete(data: bytes) -> bool:
    """Whether `data` holds a whole request head (blank lines before a
    request are allowed, as RFC 9112 says), or more than a head may be."""
    return HEAD_END in data.lstrip(b"\r\n") or len(data) > MAX_HEAD_BYTES


class _Waiting:
    """A socket in the selector with no HTTP connection yet."""

    def __init__(self, sock, addr, now: float):
        self.socket, self.addr = sock, addr
        self.last_used = now
        self.closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.socket.close()
            except OSError:
                pass


class _Handshake(_Waiting):
    """A TLS connection still shaking hands."""

    def __init__(self, sock: ssl.SSLSocket, addr, key: str, now: float):
        super().__init__(sock, addr, now)
        self.addr_key = key


class _ProxyWait(_Waiting):
    """A connection from a load balancer whose PROXY header has not arrived whole."""


class Gate(ConnectionManager):
    """cheroot's connection manager, with the waiting done here (see above)."""

    def __init__(self, server, limits):
        super().__init__(server)
        self.limits = limits
        self._count_lock = threading.Lock()
        self.per_address: dict[str, int] = {}
        self.total = 0
        self.refusals_logged: dict[str, float] = {}
        self.loads, self.slot = getattr(server, "loads", None) or (None, 0)
        self._accept_paused_until = 0.0      # the listening socket is out of the selector till then
        self._accept_anyway = False          # a pause ended: what is still pending, nobody else took

    # -- counting ----------------------------------------------------------------------
    def _admit(self, key: str) -> bool:
        with self._count_lock:
            if self.per_address.get(key, 0) >= self.limits.max_connections_per_address:
                return False
            self.per_address[key] = self.per_address.get(key, 0) + 1
            self.total += 1
            if self.loads is not None:
                self.loads.set(self.slot, self.total)
            return True

    def release(self, key: str) -> None:
        """A connection counted by `_admit` has closed."""
        with self._count_lock:
            n = self.per_address.get(key, 0) - 1
            if n > 0:
                self.per_address[key] = n
            else:
                self.per_address.pop(key, None)
            self.total -= 1
            if self.loads is not None:
                self.loads.set(self.slot, self.total)

    def _refused(self, key: str, why: str) -> None:
        now = time.monotonic()
        if now - self.refusals_logged.get(key, -1e9) > REFUSAL_LOG_SECONDS:
            if len(self.refusals_logged) > 10000:
                self.refusals_logged.clear()
            self.refusals_logged[key] = now
            log.warning("webdav: refused a connection from %s: %s (logged once a minute per address)", key, why)

    # -- keep-alive connections come back here from request threads -------------------
    def put(self, conn):
        now = time.monotonic()
        conn.last_used = now
        conn.gate_started = None              # no byte of the next request yet
        if self._buffered_head(conn):
            self._dispatch(conn)
            return
        if conn.rfile.has_data():
            conn.gate_started = now
        conn.socket.settimeout(0)
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    # -- the selector loop ---------------------------------------------------------------
    def _run(self, expiration_interval):
        self.server.socket.setblocking(False)
        last_check = time.monotonic()
        while not self._stop_requested:
            timeout = expiration_interval
            if self._accept_paused_until:
                left = self._accept_paused_until - time.monotonic()
                if left > 0:
                    timeout = min(left, expiration_interval)
                else:
                    self._resume_accepting()
            try:
                ready = list(self._selector.select(timeout=timeout))
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, item in ready:
                try:
                    if item is self.server:
                        if self._accept_anyway or not self._pause_accepting():
                            self._accept()
                    elif isinstance(item, _Handshake):
                        self._shake(fd, item)
                    elif isinstance(item, _ProxyWait):
                        self._proxied(fd, item)
                    else:
                        self._read_head(fd, item)
                except Exception:
                    log.exception("webdav: a connection failed before its request")
                    self._drop(fd, item)
            self._accept_anyway = False
            now = time.monotonic()
            if now - last_check >= expiration_interval:
                last_check = now
                self._expire_late(now)

    def _pause_accepting(self) -> bool:
        """Whether to leave a new connection to the other workers for
        `ACCEPT_PAUSE_SECONDS`, this one holding more connections than the
        least loaded of them. Each worker takes one connection per wake
        (see `_accept`), but the kernel wakes them all, and one that is
        awake already wins the race for the next: 16 connections opened at
        once were split as unevenly as 2 to 14 between 2 workers, and 1 to
        15 with the cores busy (now 7 to 9 at worst, in both cases). A
        worker that does not take it within the pause (busy, or stuck)
        leaves it to this one."""
        if self.loads is None or self.total <= self.loads.least_of_others(self.slot) + 1:
            return False
        self._selector.unregister(self.server.socket.fileno())
        self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
        return True

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        self._accept_anyway = True
        try:
            self._selector.register(self.server.socket.fileno(), selectors.EVENT_READ, data=self.server)
        except (ValueError, OSError):      # the socket was closed: the server is stopping, nothing to accept
            return

    def _accept(self) -> None:
        """One connection per wake of the selector: the workers of `coffer
        serve` share the listening socket and are all woken by a new
        connection, so connections arriving together (a client opening its
        pool of 16) are shared among them, a busy worker taking fewer.
        Accepting all that were pending at once let the first awake take
        them all: 16 connections to 2 workers then served GET at a third of
        the rate (963 req/s against 3,555)."""
        try:
            s, addr = self.server.socket.accept()
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except OSError as e:          # out of descriptors, or the socket closed on stop
            log.warning("webdav: accept failed: %s", e)
            return
        prevent_socket_inheritance(s)
        s.setblocking(False)
        now = time.monotonic()
        proxies = getattr(self.server, "proxies", ())
        if proxies and isinstance(addr, tuple) and proxy_protocol.trusted(proxies, addr[0]):
            self._selector.register(s.fileno(), selectors.EVENT_READ, data=_ProxyWait(s, addr, now))
        else:
            self._start(s, addr, now)

    def _proxied(self, fd: int, wait: _ProxyWait) -> None:
        """A load balancer's connection: its PROXY header names the client."""
        try:
            got = proxy_protocol.peek_header(wait.socket)
            if got is None:
                return
            proxy_protocol.consume(wait.socket, got[0])
        except BlockingIOError:
            return
        except (proxy_protocol.ProxyError, OSError) as e:
            log.info("webdav: closed a connection from the load balancer %s: %s", wait.addr[0], e)
            self._drop(fd, wait)
            return
        self._selector.unregister(fd)
        self._start(wait.socket, got[1] or wait.addr, wait.last_used)

    def _start(self, s, addr, now: float) -> None:
        host = addr[0] if isinstance(addr, tuple) else "unix"
        key = address_of(host)
        if not self._admit(key):
            self._refused(key, f"{self.limits.max_connections_per_address} connections already "
                               f"(max_connections_per_address)")
            s.close()
            return
        if self.total > self.limits.max_connections and not self._evict_one():
            self.release(key)
            self._refused(key, f"the server has {self.limits.max_connections} connections (max_connections)")
            s.close()
            return
        adapter = self.server.ssl_adapter
        if adapter is None:
            conn = self._connection(s, addr, key, {}, MakeFile)
            conn.last_used = conn.gate_started = now
            self._selector.register(s.fileno(), selectors.EVENT_READ, data=conn)
        elif getattr(adapter, "pending", None) is not None and adapter.pending.alpn:
            # an ACME TLS-ALPN-01 validation may be under way: the adapter
            # peeks at the hello and answers it (a few seconds at most, and
            # only while a certificate is being issued)
            threading.Thread(target=self._wrap_blocking, args=(s, addr, key), daemon=True).start()
        else:
            tls_sock = adapter.context.wrap_socket(s, server_side=True, do_handshake_on_connect=False)
            hs = _Handshake(tls_sock, addr, key, now)
            self._selector.register(tls_sock.fileno(), selectors.EVENT_READ, data=hs)

    def _connection(self, sock, addr, key: str, ssl_env: dict, makefile):
        conn = self.server.ConnectionClass(self.server, sock, makefile)
        conn.remote_addr, conn.remote_port = (addr[0], addr[1]) if isinstance(addr, tuple) else ("", 0)
        conn.ssl_env = ssl_env
        conn.gate, conn.addr_key = self, key
        return conn

    def _wrap_blocking(self, s, addr, key) -> None:
        s.settimeout(self.limits.header_timeout_seconds)
        adapter = self.server.ssl_adapter
        try:
            tls_sock, env = adapter.wrap(s)
        except Exception:
            self.release(key)
            s.close()
            return
        conn = self._connection(tls_sock, addr, key, env, adapter.makefile)
        self.put(conn)

    def _shake(self, fd: int, hs: _Handshake) -> None:
        try:
            hs.socket.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            self._selector.unregister(fd)
            self._selector.register(fd, selectors.EVENT_WRITE, data=hs)
            return
        except ssl.SSLError as e:
            if "http request" in str(e).lower():
                try:
                    socket.socket.send(hs.socket, PLAIN_HTTP_ON_TLS)   # the raw socket under TLS
                except OSError:
                    pass
            self._drop(fd, hs)
            return
        except OSError:
            self._drop(fd, hs)
            return
        self._selector.unregister(fd)
        adapter = self.server.ssl_adapter
        conn = self._connection(hs.socket, hs.addr, hs.addr_key, adapter.get_environ(hs.socket), adapter.makefile)
        conn.last_used = hs.last_used
        conn.gate_started = hs.last_used      # the header time counts from the connection
        self._selector.register(fd, selectors.EVENT_READ, data=conn)
        self._read_head(fd, conn)

    def _read_head(self, fd: int, conn) -> None:
        """Read what has arrived into the connection's buffer; hand it to a
        request thread once the head is whole."""
        data, closed = self._fill(conn)
        if closed and not head_complete(data):
            self._drop(fd, conn)
            return
        if data and conn.gate_started is None:
            conn.gate_started = time.monotonic()
        if head_complete(data) or closed:
            self._selector.unregister(fd)
            self._dispatch(conn)

    @staticmethod
    def _fill(conn) -> tuple[bytes, bool]:
        """Read what has arrived on a non-blocking socket into the
        connection's buffer: (all that is buffered, whether the peer closed)."""
        r = conn.rfile
        sock = conn.socket
        closed = False
        with r._read_lock:
            data = r._read_buf[r._read_pos:]
            while len(data) <= MAX_HEAD_BYTES:
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                except OSError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                data += chunk
            r._read_buf, r._read_pos = data, 0
        return data, closed

    def next_head(self, conn, seconds: float) -> bool:
        """Whether the next request's head on a kept-alive connection is
        whole within `seconds`, read on the request thread that answered
        the last one. A client that sends its requests one after another
        (a sync, a drive, a benchmark) has the next one on the way when an
        answer leaves: serving it on the same thread saves the trip through
        the selector (two epoll calls, a wake of the selector thread and a
        hand-over through the queue to a request thread). A connection with
        nothing whole by then goes back to the selector as before, with
        what arrived of its head kept in its buffer."""
        if self._buffered_head(conn):
            return True
        sock = conn.socket
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            if not poller.poll(seconds * 1000):
                return False
        sock.settimeout(0)
        try:
            data, _ = self._fill(conn)
        finally:
            sock.settimeout(self.limits.io_timeout_seconds)
        return head_complete(data)

    def _buffered_head(self, conn) -> bool:
        r = conn.rfile
        with r._read_lock:
            return head_complete(r._read_buf[r._read_pos:]) if r.has_data() else False

    def _dispatch(self, conn) -> None:
        conn.socket.settimeout(self.limits.io_timeout_seconds)
        pool = self.server.requests
        if pool.idle <= pool.qsize:          # every thread busy: one more (ThreadPool stops at its max)
            pool.grow(1)
        self.server.process_conn(conn)

    def _drop(self, fd: int, item) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass
        if isinstance(item, _Handshake):
            if not item.closed:
                item.close()
                self.release(item.addr_key)
        else:
            item.close()                      # a _ProxyWait was never counted

    # -- time limits -------------------------------------------------------------------
    def _deadline(self, item) -> float:
        if isinstance(item, (_Handshake, _ProxyWait)) or item.gate_started is not None:
            started = item.last_used if isinstance(item, (_Handshake, _ProxyWait)) else item.gate_started
            return started + self.limits.header_timeout_seconds
        return item.last_used + self.limits.idle_timeout_seconds

    def _expire_late(self, now: float) -> None:
        late = [(fd, item) for fd, item in self._selector.connections
                if item is not self.server and self._deadline(item) < now]
        for fd, item in late:
            self._drop(fd, item)

    def _evict_one(self) -> bool:
        """Close the waiting connection idle the longest, to make room."""
        waiting = [(fd, item) for fd, item in self._selector.connections if item is not self.server]
        if not waiting:
            return False
        fd, item = min(waiting, key=lambda p: p[1].last_used)
        self._drop(fd, item)
        return True

    @property
    def can_add_keepalive_connection(self):
        return True                      # idle connections cost no thread here; the limits above bound them
