"""The PROXY protocol (v1 text and v2 binary, as HAProxy sends them with
`send-proxy` / `send-proxy-v2`): behind a load balancer, the client's own
address arrives in a header before the first byte of TLS or SSH.

Only connections from `[server] proxy_protocol_from` (the load balancers'
addresses) must start with one; their header's source address is then the
client's address everywhere (login guard, connection limits, session
records, logs). A connection from anywhere else is taken as it is, so a
client cannot claim another address. A header is read with MSG_PEEK first
and then exactly its length, so nothing after it is consumed.
"""
from __future__ import annotations

import ipaddress
import socket
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
PEEK = 536


class ProxyError(ValueError):
    pass


def trusted(networks, peer: str) -> bool:
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def networks(cidrs) -> tuple:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def parse(data: bytes) -> tuple[int, tuple | None] | None:
    """(header length, (client address, port) or None for LOCAL/UNKNOWN), or
    None while more bytes are needed. Raises ProxyError for anything else."""
    if data.startswith(V2_SIGNATURE[:min(len(data), 12)]) and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if b"PROXY "[:len(data)] == data[:6]:
        end = data.find(b"\r\n")
        if end < 0:
            if len(data) >= V1_MAX:
                raise ProxyError("PROXY v1 header longer than 107 bytes")
            return None
        return end + 2, _parse_v1(data[:end].decode("ascii", "replace"))
    raise ProxyError("the load balancer sent no PROXY protocol header (send-proxy or send-proxy-v2)")


def _parse_v1(line: str) -> tuple | None:
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError(f"malformed PROXY v1 header {line[:60]!r}")
    try:
        ipaddress.ip_address(parts[2])
        port = int(parts[4])
    except ValueError:
        raise ProxyError(f"malformed PROXY v1 header {line[:60]!r}") from None
    return parts[2], port


def _parse_v2(data: bytes) -> tuple[int, tuple | None] | None:
    ver_cmd, fam, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    total = 16 + length
    if ver_cmd >> 4 != 2:
        raise ProxyError("PROXY v2 header of an unknown version")
    if len(data) < total:
        return None
    if ver_cmd & 0xF == 0:                           # LOCAL: the balancer's own health check
        return total, None
    body = data[16:total]
    if fam >> 4 == 1 and len(body) >= 12:            # AF_INET
        return total, (socket.inet_ntop(socket.AF_INET, body[0:4]), struct.unpack("!H", body[8:10])[0])
    if fam >> 4 == 2 and len(body) >= 36:            # AF_INET6
        return total, (socket.inet_ntop(socket.AF_INET6, body[0:16]), struct.unpack("!H", body[32:34])[0])
    return total, None


def peek_header(sock: socket.socket) -> tuple[int, tuple | None] | None:
    """Parse a header from what has arrived (non-blocking or not), without
    consuming it; None while incomplete. Raises ProxyError, or OSError."""
    data = sock.recv(PEEK, socket.MSG_PEEK)
    if not data:
        raise ProxyError("the connection closed before its PROXY header")
    return parse(data)


def consume(sock: socket.socket, length: int) -> None:
    got = 0
    while got < length:
        chunk = sock.recv(length - got)
        if not chunk:
            raise ProxyError("the connection closed inside its PROXY header")
        got += len(chunk)


def read_blocking(sock: socket.socket, timeout: float) -> tuple | None:
    """Wait (up to `timeout`) for a whole header and consume it; the client's
    address, or None for a LOCAL/UNKNOWN one."""
    import time
    deadline = time.monotonic() + timeout
    old = sock.gettimeout()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProxyError("no PROXY header within the login timeout")
            sock.settimeout(left)
            got = peek_header(sock)
            if got is not None:
                consume(sock, got[0])
                return got[1]
            time.sleep(0.01)                         # a header split across segments: rare
    finally:
        sock.settimeout(old)
