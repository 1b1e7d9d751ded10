"""paramiko's Transport with Coffer's choices: which ciphers to offer, when a
login counts, and what a connection that is not SSH leaves in the log.

Ciphers. In SSH the client's order of preference decides among the ciphers
both sides offer, and OpenSSH prefers AES-CTR to AES-GCM. GCM costs the
server (paramiko, in Python) about a third less CPU than CTR with a separate
MAC, so the server reads the client's KEXINIT before sending its own: a
client that speaks AES-GCM is offered only that; one that does not (paramiko
before 3, older PuTTY/WinSCP, many NAS backup clients) is offered AES-CTR
with HMAC-SHA2 as well. A client that waits for the server's KEXINIT first
gets the full offer after `KEXINIT_WAIT` seconds.

Logins. paramiko asks `check_auth_publickey` before it verifies a key's
signature, and also for unsigned "would this key do?" queries; the server's
`admit()` is therefore called here, once the login has really succeeded
(password checked or signature verified), and may still refuse it; a
private account's key, a first step only, is reported the same way.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import paramiko
from paramiko.auth_handler import AuthHandler
from paramiko.channel import Channel
from paramiko.common import AUTH_FAILED, AUTH_PARTIALLY_SUCCESSFUL, AUTH_SUCCESSFUL, DEBUG, MSG_CHANNEL_REQUEST, cMSG_DISCONNECT

log = logging.getLogger(__name__)

GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
CTR_CIPHERS = ("aes128-ctr", "aes192-ctr", "aes256-ctr")
MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512")
KEXINIT_WAIT = 1.0                  # seconds to wait for the client's KEXINIT before offering everything
DISCONNECT_BY_APPLICATION = 11


class NotSsh(paramiko.SSHException):
    """The peer did not start with an SSH version line."""


def _request_then_start(chan, m):
    """Answer a channel request, then start the worker it asked for, so a
    command's output and exit status never overtake the request's reply."""
    Channel._handle_request(chan, m)
    server = chan.transport.server_object
    start = getattr(server, "pending", {}).pop(chan.get_id(), None)
    if start is not None:
        start()


class CofferAuthHandler(AuthHandler):
    def _send_auth_result(self, username, method, result):
        if result == AUTH_SUCCESSFUL and not self.transport.server_object.admit(method):
            result = AUTH_FAILED
        elif result == AUTH_PARTIALLY_SUCCESSFUL and method == "publickey":   # signature verified
            self.transport.server_object.key_step_passed(username)
        super()._send_auth_result(username, method, result)


class CofferTransport(paramiko.Transport):
    _preferred_ciphers = GCM_CIPHERS + CTR_CIPHERS
    _preferred_macs = MACS
    _channel_handler_table = dict(paramiko.Transport._channel_handler_table)
    _channel_handler_table[MSG_CHANNEL_REQUEST] = _request_then_start
    on_close = None
    on_banner = None            # called with a one-line reason when the peer is not an SSH client
    offer_ctr_to_all = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kex_lock = threading.RLock()
        self._offer_made = False

    quiet = False           # set once the connection's end is explained by one line of ours

    def run(self):
        try:
            super().run()
        finally:
            if self.on_close is not None:
                self.on_close()

    # -- the version line ---------------------------------------------------------------------
    def _check_banner(self):
        # paramiko reads lines of any length, and up to 100 of them: a client
        # sends its version line first (RFC 4253 4.2), at most 255 bytes.
        pk = self.packetizer
        buf = pk._Packetizer__remainder
        deadline = time.monotonic() + self.banner_timeout
        while b"\n" not in buf:
            if len(buf) > 255:
                self._not_ssh(f"is not an SSH client (it began {_printable(buf)})")
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise socket.timeout()
                buf += pk._read_timeout(left)
            except (EOFError, ConnectionError):
                self._not_ssh("closed without a word (a port check?)" if not buf else
                              f"is not an SSH client (it sent {_printable(buf)})")
            except OSError:
                self._not_ssh(f"sent no SSH version line within {self.banner_timeout:g} s")
        n = buf.index(b"\n")
        line, pk._Packetizer__remainder = buf[:n].rstrip(b"\r"), buf[n + 1:]
        if not line.startswith(b"SSH-"):
            self._not_ssh(f"is not an SSH client (it began {_printable(line)})")
        text = line.decode("utf-8", "replace")
        version = text.split(" ", 1)[0].split("-", 2)
        if len(version) < 3 or version[1] not in ("2.0", "1.99"):
            self._not_ssh(f"speaks an unsupported SSH version ({_printable(line)})")
        self.remote_version = text
        self._log(DEBUG, f"Remote version: {text}")

    def _not_ssh(self, why: str):
        self.quiet = True
        if self.on_banner is not None:
            self.on_banner(why)
        raise NotSsh(why)

    # -- paramiko's log: no tracebacks for a peer's misbehaviour -------------------------------
    def _log(self, level, msg, *args):
        if isinstance(msg, list) or self.quiet:
            level = DEBUG                       # tracebacks, and errors after our own one-line account
        super()._log(level, msg, *args)

    # -- the cipher offer --------------------------------------------------------------------
    def _offer_all(self):
        with self._kex_lock:
            if not self._offer_made and self.is_active():
                self._preferred_ciphers = GCM_CIPHERS + CTR_CIPHERS
                self._send_kex_init()

    def _send_kex_init(self):
        with self._kex_lock:
            if self.server_mode and not self._offer_made and not self.offer_ctr_to_all:
                if self._timer is None:
                    # run()'s first call: wait for the client's list (or KEXINIT_WAIT)
                    self._timer = threading.Timer(KEXINIT_WAIT, self._offer_all)
                    self._timer.daemon = True
                    self._timer.start()
                    return
            self._offer_made = True
            if self._timer is not None:
                self._timer.cancel()
            super()._send_kex_init()

    _timer = None

    def _negotiate_keys(self, m):
        with self._kex_lock:
            if self.server_mode and not self._offer_made and not self.offer_ctr_to_all:
                self._preferred_ciphers = _offer_for(m)
            super()._negotiate_keys(m)

    def _parse_newkeys(self, m):
        if self.server_mode and self.auth_handler is None:
            self.auth_handler = CofferAuthHandler(self)
        super()._parse_newkeys(m)

    # -- ending a connection with a reason ---------------------------------------------------------
    def disconnect(self, reason: str) -> None:
        """Tell the client why (OpenSSH prints it), then close; from any thread."""
        def run():
            self.quiet = True
            m = paramiko.Message()
            m.add_byte(cMSG_DISCONNECT)
            m.add_int(DISCONNECT_BY_APPLICATION)
            m.add_string(reason)
            m.add_string("en")
            try:
                self._send_message(m)
            except Exception:
                log.debug("sending a disconnect failed", exc_info=True)
            self.close()
        threading.Thread(target=run, name="sftp-disconnect", daemon=True).start()


def _printable(data: bytes) -> str:
    return repr(bytes(data[:40]))[1:]          # quoted, with non-ASCII bytes escaped


def _offer_for(m) -> tuple[str, ...]:
    """The ciphers to offer a client, from its KEXINIT: AES-GCM only when it
    speaks AES-GCM both ways, else AES-GCM and AES-CTR."""
    try:
        m.get_bytes(16)                     # cookie
        lists = [m.get_list() for _ in range(4)]     # kex, host key, client→server and server→client ciphers
    except Exception:
        lists = [[], [], [], []]
    finally:
        m.rewind()
    if any(c in GCM_CIPHERS for c in lists[2]) and any(c in GCM_CIPHERS for c in lists[3]):
        return GCM_CIPHERS
    return GCM_CIPHERS + CTR_CIPHERS
