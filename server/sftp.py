"""The SSH front-end: SFTP (and a few exec commands) over paramiko.

`start_sftp(storage, cfg)` listens on `[sftp] host:port` and returns a handle
with `.stop()`, `.port` and `.fingerprints` (the host keys, to print at
start). Each connection logs in with the account password (the same check
and throttling as WebDAV) or an SSH key registered with `coffer-admin user
key add`; it then gets the `sftp` subsystem, the commands in `sftp_exec`, and
nothing else: shells, port and agent forwarding are refused.

A login counts against `max_sessions` and `max_sessions_per_account` only
once it has succeeded; until then a connection is one of at most
`max_unauthenticated` (`max_unauthenticated_per_address` per address), and
is closed after `login_timeout_seconds`. Every channel, exec and SFTP
request re-checks the account's credential generation in the database (reads
and writes on open files at least every `CHECK_ACCOUNT_EVERY` seconds) and
idle connections are re-checked by the reaper: a disabled account or a
changed password ends the whole connection.

Tuning, measured: the cipher offer is in `sftp_transport` (AES-GCM where the
client speaks it); paramiko's default window and packet sizes are kept
(larger ones were slower); and the SFTP layer advertises
`limits@openssh.com` so OpenSSH sends 255 KiB requests.
"""
from __future__ import annotations

import itertools
import logging
import shutil
import socket
import threading
import time

import paramiko
from paramiko.common import AUTH_FAILED, AUTH_PARTIALLY_SUCCESSFUL, AUTH_SUCCESSFUL, \
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_SUCCEEDED, cMSG_USERAUTH_BANNER

from providers.accounts import normalize_name
from providers.config import ConfigError
from providers.errors import AuthenticationFailed, CofferError, Locked, NotFound, Throttled
from providers.meta.db import now_us
from providers.sshkeys import SSHKeys
from providers.throttle import address_of
from providers.vfs import UNLIMITED_SPACE

from . import proxy_protocol, sftp_exec, sftp_hostkeys
from .auth import CredentialCache
from .sessions import SessionTracker
from .sftp_session import SftpSession
from .sftp_transport import CofferTransport

log = logging.getLogger(__name__)

WINDOW_SIZE = paramiko.common.DEFAULT_WINDOW_SIZE
MAX_PACKET_SIZE = paramiko.common.DEFAULT_MAX_PACKET_SIZE
CHANNELS_PER_CONNECTION = 10
RECORD_SECONDS = 60                  # long connections update their session record this often
LIVE_RECORD_US = 3 * RECORD_SECONDS * 1_000_000   # a record written this recently has a live process
ACCOUNT_CHECK_SECONDS = 2            # idle logged-in connections re-check their account this often
REFUSAL_LOG_SECONDS = 60             # one log line per address and minute for refused connections
PRIVATE_KEY_MESSAGE = ("Coffer: account {name!r} is in private mode: its files are unlocked only by its "
                       "password, so an SSH key alone cannot log in to it. The key is accepted as a first step: "
                       "now give the password or an app password (`coffer app-password add`).\r\n")
TOO_MANY_MESSAGE = "Coffer: too many open sessions for this account (limit {n}); close one and retry.\r\n"
SERVER_FULL_MESSAGE = "Coffer: the server has too many open sessions (limit {n}); retry later.\r\n"
REVOKED_MESSAGE = ("Coffer: this login no longer stands: the account's password was changed or the account "
                   "was disabled. Log in again.")


class Connection:
    """One TCP connection: its transport, login and running totals."""

    counter = itertools.count(1)

    def __init__(self, server: "SftpServer", sock, addr):
        self.server, self.sock = server, sock
        self.tag = f"c{next(Connection.counter)}"      # names the connection in logs (no address, no account)
        self.addr = addr[0] if isinstance(addr, tuple) else str(addr)
        self.addr_key = address_of(self.addr)
        self.started = self.last_activity = time.monotonic()
        self.account: str | None = None      # set once logged in: counted against the session limits
        self.user_id: int | None = None
        self.generation: int | None = None   # the account's credential generation at login
        self.revoked = False
        self.vfs = None
        self.login = None                    # the cached login (server/auth.py) its vfs belongs to, if any
        self.session = None                  # its session record (server/sessions.py), once logged in
        self.announced = False               # its login has been logged
        self.channels = 0
        self.checked_at = time.monotonic()
        self.lock = threading.Lock()
        self.transport: CofferTransport | None = None
        self.finished = False

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def still_valid(self) -> bool:
        """Whether the login still stands: the account is active and its
        credential generation (read from the database, so a change made by
        `coffer-admin` in another process counts) is the one it logged in
        with. If not, the whole connection is ended."""
        if self.account is None or self.revoked:
            return False
        self.checked_at = time.monotonic()
        gen = self.server.storage.account_generation(self.account)
        if gen is not None and gen == self.generation:
            return True
        self.server.revoke(self)
        return False


class SshServer(paramiko.ServerInterface):
    """Authentication and channel policy for one connection."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.srv = conn.server
        self.pending: dict[int, object] = {}
        self.key_login: str | None = None
        self.candidate: tuple | None = None      # (name, user id, generation, vfs, mode, cached login) until admitted
        self.banner_sent = False
        self.key_step: str | None = None          # a private account whose key's signature checked out

    # -- authentication ---------------------------------------------------------------
    def get_allowed_auths(self, username):
        # a private account's key is a first step only: then its password or an app password
        return "password" if self.key_step is not None else "publickey,password"

    def key_step_passed(self, username) -> None:
        """A private account's key signature checked out (paramiko reports
        the partial success here): tell the client what comes next."""
        candidate, self.candidate = self.candidate, None
        if candidate is not None and candidate[4] == "private":
            self.key_step = candidate[0]
            log.info("sftp[%s]: key accepted for a private account; its password or an app password must follow",
                     self.conn.tag)
            self._banner(PRIVATE_KEY_MESSAGE.format(name=candidate[0]))

    def _banner(self, text: str) -> None:
        if self.banner_sent:
            return
        self.banner_sent = True
        m = paramiko.Message()
        m.add_byte(cMSG_USERAUTH_BANNER)
        m.add_string(text)
        m.add_string("en")
        try:
            self.conn.transport._send_message(m)
        except Exception:
            log.debug("sending a banner failed", exc_info=True)

    def check_auth_password(self, username, password):
        if self.conn.account is not None or not isinstance(password, str):
            return AUTH_FAILED
        if self.key_step is not None and normalize_name(username) != self.key_step:
            return AUTH_FAILED                        # the second step is for the account the key opened
        st = self.srv.storage
        gen = st.account_generation(username)       # read first: a change during the check counts
        login = None
        try:
            if self.key_step is None:
                # a password verified lately for this name opens the same
                # account at once (see SftpServer.logins)
                login = self.srv.logins.acquire(username, password, self.conn.addr, protocol="sftp")
                vfs = login.vfs
            else:
                vfs = st.open_account(username, password, client_addr=self.conn.addr, protocol="sftp",
                                      key_checked=True)   # the key is a second factor
        except AuthenticationFailed as e:
            log.info("sftp[%s]: password login refused", self.conn.tag)
            if isinstance(e, Throttled):       # the guard refused before any check: says nothing of the account
                self._banner(f"Coffer: {e}.\r\n")
            return AUTH_FAILED
        except CofferError:
            log.exception("sftp password login failed")
            return AUTH_FAILED
        self.candidate = (vfs.user.name, vfs.user.id, gen, vfs, None, login)
        return AUTH_SUCCESSFUL

    def check_auth_publickey(self, username, key):
        # Called for a client's "would this key do?" query as well as before
        # its signature is verified: nothing is counted or opened here (see
        # `admit`, called once the signature checks out).
        if self.conn.account is not None:
            return AUTH_FAILED
        info = self.srv.keys.find(username, key.asbytes())
        if info is None:
            return AUTH_FAILED
        try:
            user = self.srv.storage.accounts.get(username)
        except NotFound:
            return AUTH_FAILED
        gen = self.srv.storage.account_generation(user.name)
        if user.status != "active" or gen is None:
            return AUTH_FAILED
        self.candidate = (user.name, user.id, gen, None, user.mode, None)
        return AUTH_PARTIALLY_SUCCESSFUL if user.mode == "private" else AUTH_SUCCESSFUL

    def admit(self, method: str) -> bool:
        """The login succeeded (password right, or key signature valid):
        count it against the limits, or refuse it with a banner saying why."""
        candidate, self.candidate = self.candidate, None
        if candidate is None:
            return False
        name, user_id, gen, vfs, mode, login = candidate
        refusal = self.srv.claim(self.conn, name, user_id, gen)
        if refusal is not None:
            self._banner(refusal)
            self.srv.let_go(vfs, login)
            return False
        self.conn.vfs, self.conn.login = vfs, login
        if vfs is None:
            self.key_login = name
        self.conn.touch()
        return True

    def _finish_login(self) -> bool:
        """On the first channel: open a key login's account, start the session record."""
        if self.conn.vfs is None:
            if self.key_login is None:
                return False
            try:
                self.conn.vfs = self.srv.storage.open_account(self.key_login, how="key")
            except (Locked, AuthenticationFailed, NotFound) as e:
                log.info("sftp[%s]: key login could not open the account: %s", self.conn.tag, type(e).__name__)
                return False
        if self.conn.session is None:
            self.conn.session = self.srv.sessions.start(self.conn, self.conn.user_id, self.conn.addr)
        if not self.conn.announced:
            self.conn.announced = True
            how = "key" if self.key_login else "key and password" if self.key_step else "password"
            log.info("sftp[%s]: logged in (%s), session record %s", self.conn.tag, how, self.conn.session.sid)
        return True

    # -- channels -----------------------------------------------------------------------
    def check_channel_request(self, kind, chanid):
        if kind != "session":
            log.info("sftp[%s]: refused a %s channel", self.conn.tag, kind)
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        if (self.conn.channels >= CHANNELS_PER_CONNECTION or not self.conn.still_valid()
                or not self._finish_login()):
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return OPEN_SUCCEEDED

    def check_channel_subsystem_request(self, channel, name):
        if name != "sftp" or self.conn.vfs is None or not self.conn.still_valid():
            return False
        self.pending[channel.get_id()] = lambda: self.srv.spawn(self.conn, channel, self._run_sftp, channel)
        return True

    def check_channel_exec_request(self, channel, command):
        if self.conn.vfs is None or not self.conn.still_valid():
            return False
        self.pending[channel.get_id()] = lambda: self.srv.spawn(self.conn, channel, self._run_exec,
                                                                channel, bytes(command))
        return True

    def check_channel_shell_request(self, channel):
        self.pending[channel.get_id()] = lambda: self.srv.spawn(self.conn, channel, self._run_refusal, channel)
        return True

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
        return True             # so that the shell refusal reads cleanly

    def check_channel_window_change_request(self, channel, width, height, pixelwidth, pixelheight):
        return True

    def check_channel_env_request(self, channel, name, value):
        return False

    def check_channel_forward_agent_request(self, channel):
        log.info("sftp[%s]: refused agent forwarding", self.conn.tag)
        return False

    def check_channel_x11_request(self, channel, single_connection, auth_protocol, auth_cookie, screen_number):
        return False

    def check_port_forward_request(self, address, port):
        log.info("sftp[%s]: refused port forwarding", self.conn.tag)
        return False

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        log.info("sftp[%s]: refused port forwarding", self.conn.tag)
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind, msg):
        return False

    # -- workers --------------------------------------------------------------------------
    def _run_sftp(self, channel):
        s = SftpSession(channel, self.conn.vfs, self.conn.account or "user", self.srv.disk_space, self.conn.touch,
                        still_valid=self.conn.still_valid, tag=f"{self.conn.tag} session={self.conn.session.sid}")
        self.srv.sessions.follow(self.conn.session, s)
        try:
            s.run()
        finally:
            self.srv.sessions.add(self.conn.session, s.bytes_in, s.bytes_out, s.requests, part=s)

    def _run_exec(self, channel, command: bytes):
        self.conn.touch()
        code = 1
        try:
            code = sftp_exec.run(channel, self.conn.vfs, command, self.srv.disk_space)
        except Exception:
            log.exception("sftp exec command failed")
            try:
                channel.sendall_stderr(b"coffer: internal error\n")
            except Exception:
                pass
        finally:
            self.srv.sessions.add(self.conn.session, len(command), 0, 1)
            _finish(channel, code)

    def _run_refusal(self, channel):
        try:
            channel.sendall_stderr(sftp_exec.SHELL_REFUSED.encode())
        finally:
            _finish(channel, 1)


def _finish(channel, code: int) -> None:
    try:
        channel.send_exit_status(code)
        channel.shutdown_write()
        channel.close()
    except Exception:
        pass


class SftpServer:
    """The listening socket, its connections and their limits."""

    def __init__(self, storage, cfg):
        self.storage, self.cfg = storage, cfg
        self.keys = SSHKeys(storage.db, storage.accounts)
        self.sessions = SessionTracker(storage, "sftp", update_seconds=RECORD_SECONDS)
        # Verified password logins, as WebDAV keeps them: a client that opens
        # several connections (FileZilla's transfers, rclone's and restic's
        # pools) pays for the password hash once, not 0.2-0.4 s of CPU each.
        self.logins = CredentialCache(storage, cfg.security.credential_cache_seconds)
        self.host_keys = sftp_hostkeys.load_or_create(sftp_hostkeys.host_key_dir(cfg))
        self.fingerprints = [sftp_hostkeys.fingerprint(k) for k in self.host_keys]
        self.conns: set[Connection] = set()
        self.per_account: dict[str, int] = {}
        self.logged_in = 0
        self.refusals_logged: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock: socket.socket | None = None
        self.port: int | None = None
        self.threads: list[threading.Thread] = []
        self.proxies = proxy_protocol.networks(cfg.server.proxy_protocol_from)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, sock: socket.socket | None = None) -> "SftpServer":
        """Serve on `sock` (already listening: a worker process) or on a socket bound now."""
        sock = sock if sock is not None else listen_sftp(self.cfg)
        sock.settimeout(0.5)
        self.sock, self.port = sock, sock.getsockname()[1]
        for target, name in ((self._accept_loop, "sftp-accept"), (self._reaper, "sftp-reaper")):
            th = threading.Thread(target=target, name=name, daemon=True)
            th.start()
            self.threads.append(th)
        log.info("SFTP listening on %s port %d", self.cfg.sftp.host, self.port)
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        for th in self.threads:
            th.join(timeout=5)
        for conn in conns:
            self._finished(conn)
        self.logins.close_all()

    def disk_space(self) -> tuple[int, int]:
        try:
            u = shutil.disk_usage(self.cfg.data_dir)
            return u.total, u.free
        except OSError:
            return UNLIMITED_SPACE, UNLIMITED_SPACE

    # -- connections -----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                time.sleep(0.1)
                continue
            if self.proxies and isinstance(addr, tuple) and proxy_protocol.trusted(self.proxies, addr[0]):
                threading.Thread(target=self._open_proxied, args=(sock, addr), name="sftp-proxy",
                                 daemon=True).start()
                continue
            self._admit(sock, addr)

    def _admit(self, sock, addr) -> None:
        if not self._room_for(sock, addr):
            return
        try:
            self._open(sock, addr)
        except Exception:
            log.exception("sftp: could not start a connection")
            sock.close()

    def _open_proxied(self, sock, addr) -> None:
        """A load balancer's connection: its PROXY header names the client
        (server/proxy_protocol.py), whose address counts from then on."""
        try:
            client = proxy_protocol.read_blocking(sock, self.cfg.sftp.login_timeout_seconds)
        except (proxy_protocol.ProxyError, OSError) as e:
            log.info("sftp: closed a connection from the load balancer %s: %s", addr[0], e)
            sock.close()
            return
        self._admit(sock, client or addr)

    def _room_for(self, sock, addr) -> bool:
        """Whether a new connection may start logging in: at most
        `max_unauthenticated_per_address` per address (more are refused), and
        at most `max_unauthenticated` in all (the oldest gives way)."""
        key = address_of(addr[0] if isinstance(addr, tuple) else str(addr))
        sftp = self.cfg.sftp
        with self.lock:
            waiting = [c for c in self.conns if c.account is None and not c.finished]
            if sum(1 for c in waiting if c.addr_key == key) >= sftp.max_unauthenticated_per_address:
                now = time.monotonic()
                if now - self.refusals_logged.get(key, -1e9) > REFUSAL_LOG_SECONDS:
                    self.refusals_logged[key] = now
                    if len(self.refusals_logged) > 10000:
                        self.refusals_logged.clear()
                    log.warning("sftp: refusing connections from an address with %d connections still logging in "
                                "(max_unauthenticated_per_address; logged once a minute)", len(waiting))
                sock.close()
                return False
            oldest = min(waiting, key=lambda c: c.started) if len(waiting) >= sftp.max_unauthenticated else None
        if oldest is not None and oldest.transport is not None:
            log.info("sftp[%s]: closed to make room: %d connections still logging in (max_unauthenticated)",
                     oldest.tag, len(waiting))
            oldest.transport.quiet = True
            oldest.transport.close()
        return True

    def _open(self, sock, addr) -> None:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(self, sock, addr)
        t = CofferTransport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
        t.offer_ctr_to_all = self.cfg.sftp.legacy_ciphers
        t.local_version = "SSH-2.0-Coffer"
        t.banner_timeout = t.handshake_timeout = t.auth_timeout = self.cfg.sftp.login_timeout_seconds
        t.on_banner = lambda why: log.info("sftp[%s]: closed: the peer %s", conn.tag, why)
        for key in self.host_keys:
            t.add_server_key(key)
        conn.transport = t
        t.on_close = lambda: self._finished(conn)
        with self.lock:
            self.conns.add(conn)
        t.start_server(event=threading.Event(), server=SshServer(conn))    # returns at once: no waiting here

    def claim(self, conn: Connection, name: str, user_id: int, generation: int) -> str | None:
        """Count a connection that has just logged in against the session
        limits; returns the banner to refuse it with, or None."""
        sftp = self.cfg.sftp
        with self.lock:
            if conn.finished or conn.account is not None:
                return ""
        try:        # counted with every worker's and node's open records, as this one's starts
            sid, full = self.storage.sessions.start_within(user_id, "sftp", conn.addr, now_us() - LIVE_RECORD_US,
                                                           sftp.max_sessions_per_account, sftp.max_sessions)
        except CofferError as e:
            log.warning("sftp[%s]: no session record (%s); counting this process's sessions only", conn.tag, e)
            sid, full = None, "unknown"
        if full == "unknown":
            with self.lock:
                full = ("server" if self.logged_in >= sftp.max_sessions else
                        "account" if self.per_account.get(name, 0) >= sftp.max_sessions_per_account else None)
        if full == "server":
            log.warning("sftp[%s]: login refused, the server is at max_sessions", conn.tag)
            return SERVER_FULL_MESSAGE.format(n=sftp.max_sessions)
        if full == "account":
            log.warning("sftp[%s]: login refused, the account is at max_sessions_per_account", conn.tag)
            return TOO_MANY_MESSAGE.format(n=sftp.max_sessions_per_account)
        conn.session = self.sessions.adopt(conn, sid)
        with self.lock:
            if conn.finished or conn.account is not None:
                self.sessions.end(conn)
                return ""
            self.per_account[name] = self.per_account.get(name, 0) + 1
            self.logged_in += 1
            conn.account, conn.user_id, conn.generation = name, user_id, generation
        return None

    def revoke(self, conn: Connection) -> None:
        """End a connection whose login no longer stands, telling the client why."""
        with self.lock:
            if conn.revoked:
                return
            conn.revoked = True
        log.info("sftp[%s]: the account was disabled or its password changed: connection closed", conn.tag)
        if conn.transport is not None:
            conn.transport.disconnect(REVOKED_MESSAGE)

    def spawn(self, conn: Connection, channel, target, *args) -> None:
        with conn.lock:
            conn.channels += 1

        def run():
            try:
                target(*args)
            finally:
                with conn.lock:
                    conn.channels -= 1

        threading.Thread(target=run, name="sftp-channel", daemon=True).start()

    def _reaper(self) -> None:
        sftp = self.cfg.sftp
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            with self.lock:
                conns = list(self.conns)
            checked: dict[str, int | None] = {}     # one database look-up per account and round
            for conn in conns:
                t = conn.transport
                if t is None:
                    continue
                if not t.is_active():
                    self._finished(conn)
                    continue
                if conn.account is None:
                    if now - conn.started > sftp.login_timeout_seconds:
                        log.info("sftp[%s]: closed: not logged in within %d s (login_timeout_seconds)",
                                 conn.tag, sftp.login_timeout_seconds)
                        t.quiet = True
                        t.close()
                    continue
                if now - conn.checked_at > ACCOUNT_CHECK_SECONDS and not conn.revoked:
                    try:
                        if conn.account not in checked:
                            checked[conn.account] = self.storage.account_generation(conn.account)
                        conn.checked_at = now
                        gen = checked[conn.account]
                        if gen is None or gen != conn.generation:
                            self.revoke(conn)
                            continue
                    except Exception:
                        log.exception("sftp: checking an account failed")
                if sftp.idle_timeout_seconds and now - conn.last_activity > sftp.idle_timeout_seconds:
                    log.info("sftp[%s]: closing an idle connection", conn.tag)
                    t.close()
            self.sessions.sweep()               # long connections' records get their totals so far
            self.logins.sweep()

    def let_go(self, vfs, login) -> None:
        """A connection is done with its account: a cached login is released
        (closed once unused and out of the cache), any other closed."""
        try:
            if login is not None:
                self.logins.release(login)
            elif vfs is not None:
                vfs.close()
        except Exception:
            log.debug("closing an account failed", exc_info=True)

    def _finished(self, conn: Connection) -> None:
        deadline = time.monotonic() + 5
        while conn.channels > 0 and time.monotonic() < deadline:     # let channel workers add their totals
            time.sleep(0.01)
        with self.lock:
            if conn.finished:
                return
            conn.finished = True
            self.conns.discard(conn)
            if conn.account is not None:
                self.logged_in -= 1
                left = self.per_account.get(conn.account, 1) - 1
                if left > 0:
                    self.per_account[conn.account] = left
                else:
                    self.per_account.pop(conn.account, None)
        self.sessions.end(conn)
        self.let_go(conn.vfs, conn.login)
        try:
            conn.sock.close()
        except OSError:
            pass


def listen_sftp(cfg) -> socket.socket:
    """Bind and listen on `[sftp] host:port` (before worker processes start)."""
    family = socket.AF_INET6 if ":" in cfg.sftp.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.sftp.host, cfg.sftp.port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"[sftp] cannot listen on {cfg.sftp.host} port {cfg.sftp.port}: "
                          f"{e.strerror or e}") from None
    sock.listen(1024)
    return sock


def start_sftp(storage, cfg, sock: socket.socket | None = None) -> SftpServer:
    """Start the SSH/SFTP listener (on `sock` when given); returns a handle
    with .stop(), .port and .fingerprints."""
    return SftpServer(storage, cfg).start(sock)
