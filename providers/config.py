"""Coffer's configuration: one TOML file read into frozen dataclasses.

Shared by `coffer serve` and `coffer-admin`. Every option has a default
(documented in conf/coffer.example.toml); an unknown section or key, or a
value of the wrong type, is an error that names it. Relative paths are taken
from the folder of the config file (or the working folder without one).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CofferError


class ConfigError(CofferError):
    """The configuration file is missing, malformed or holds a bad value."""


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = "var"              # everything the server keeps, by default
    database_url: str = ""            # SQLAlchemy URL; "" = sqlite:///<data_dir>/coffer.db
    blob_backend: str = "local"       # "local" or "s3"
    blob_dir: str = ""                # local backend; "" = <data_dir>/blobs
    s3_endpoint: str = ""
    s3_bucket: str = "coffer"
    s3_region: str = "us-east-1"
    s3_access_key_file: str = ""      # file holding "ACCESS_KEY:SECRET_KEY"
    s3_prefix: str = "blobs/"         # key prefix inside the bucket (several servers can share one)
    chunk_size: int = 1024 * 1024     # bytes of plaintext per chunk (max 4 MiB)
    spool_dir: str = ""               # encrypted scratch for random-access writes; "" = <data_dir>/spool
    gc_every_hours: int = 24          # `coffer serve` runs gc this often; 0 = only `coffer-admin gc`
    gc_grace_seconds: int = 3600      # unreferenced blobs younger than this are spared (uploads in flight)
    small_file_bytes: int = 262144    # a file this small or smaller is kept in the database (0: never)


@dataclass(frozen=True)
class SecurityConfig:
    default_mode: str = "private"     # new accounts: "private" (only their password or app passwords
                                      # open their files) or "managed" (the server's master key does too)
    master_key_file: str = ""         # "" = <data_dir>/master.key (created on first use)
    bcrypt_rounds: int = 12
    argon2_memory_kib: int = 65536
    argon2_iterations: int = 3
    argon2_lanes: int = 4
    credential_cache_seconds: int = 300
    # the login guard (providers/throttle.py): failures count for login_window_seconds
    login_window_seconds: int = 900
    login_failures_before_delay: int = 3      # per account and address; then waits 1, 2, 4 … s
    login_max_delay_seconds: int = 60
    login_block_after: int = 10               # failures from one address (any accounts) ban it
    login_block_seconds: int = 900            # the first ban; each next one twice as long
    login_block_max_seconds: int = 86400      # longest ban; bans are forgotten after this long
    login_protect_after: int = 10             # failures on one account: addresses it does not trust
                                              # get one free guess on it instead of before_delay
    login_trust_days: int = 30                # a success trusts that account and address this long
    login_safe_networks: tuple = ()           # CIDRs never banned as a whole (an office NAT)


@dataclass(frozen=True)
class RetentionConfig:
    keep_all_minutes: int = 60        # every version younger than this
    hourly_hours: int = 24            # then one per hour
    daily_days: int = 30              # then one per day
    weekly_after: bool = True         # then one per week, up to max_age_days
    max_versions: int = 100           # per file, current included, the last hour's not counted
    max_age_days: int = 365           # older non-current versions go
    max_quota_share: float = 0.5      # old versions of one key domain never take more of the quota
    min_age_days: int = 7             # ...but none younger than this is dropped to make room
    trash_days: int = 30
    guard_window_minutes: int = 60    # mass-change guard: when, within this window,
    guard_share: float = 0.3          # this share of an account's files is overwritten, deleted or renamed
    guard_min_files: int = 50         # (and at least this many),
    guard_hold_days: int = 14         # nothing of the account is dropped for this long (versions, trash)
    exclude: tuple = ("*.tmp", "~$*", ".~lock.*#", ".DS_Store", "Thumbs.db", "._*", "desktop.ini")


@dataclass(frozen=True)
class WebDAVConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    allow_plain_http: bool = False    # only honoured on a loopback host
    cert_file: str = ""               # "" = <data_dir>/tls/cert.pem, self-signed on first run
    key_file: str = ""
    threads: int = 16                 # request threads per worker process, at least
    max_threads: int = 128            # more while all are busy (transfers in progress)
    header_timeout_seconds: int = 20  # connect (TLS handshake included) to the end of a request's headers
    idle_timeout_seconds: int = 120   # a kept-alive connection between requests (costs no thread)
    io_timeout_seconds: int = 60      # a body or response making no progress this long ends the request
    max_connections: int = 4096       # per worker process; when full, the longest-idle waiting one closes
    max_connections_per_address: int = 256   # per worker process, IPv4 address or IPv6 /64


@dataclass(frozen=True)
class TLSConfig:
    names: tuple = ()                 # more host names/addresses for the self-signed certificate
    acme_domains: tuple = ()          # names to get a trusted certificate for over ACME; () = self-signed
    acme_email: str = ""              # contact for expiry notices from the certificate authority
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_challenge: str = "http-01"   # "http-01" (on acme_http_port) or "tls-alpn-01" (on the HTTPS port)
    acme_http_port: int = 80
    acme_ca_file: str = ""            # CA to trust for the ACME directory itself (in-house CAs); "" = system
    acme_eab_kid: str = ""            # External Account Binding key id (ZeroSSL, Google, some in-house CAs)
    acme_eab_hmac_key_file: str = ""  # file holding the EAB HMAC key (base64url, as the CA gives it)
    acme_renew_days: int = 30         # renew when fewer days than this are left
    check_seconds: int = 3600         # how often certificates are checked (renewal, replaced files)


@dataclass(frozen=True)
class SFTPConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2222
    host_key_dir: str = ""            # "" = <data_dir>/ssh
    idle_timeout_seconds: int = 900
    max_sessions: int = 100           # logged-in connections in all
    max_sessions_per_account: int = 32  # rclone opens a connection per checker and transfer
    login_timeout_seconds: int = 30   # from connect to logged in
    max_unauthenticated: int = 100    # connections still logging in; when full, the oldest is dropped
    max_unauthenticated_per_address: int = 32   # per IPv4 address or IPv6 /64 (rclone opens ~12 at once)
    legacy_ciphers: bool = False      # offer AES-CTR even to clients that speak AES-GCM (more server CPU)


@dataclass(frozen=True)
class AccountsConfig:
    default_plan: str = "basic"
    plans: dict = field(default_factory=lambda: {"basic": 10 * 1024**3, "pro": 1024**4, "unlimited": 0})
    cancel_grace_days: int = 30
    session_record_days: int = 90
    audit_days: int = 365
    session_addresses: str = "none"   # what session records and audit events keep of a client's
                                      # address: "full", "truncated" (/24, IPv6 /48) or "none"


@dataclass(frozen=True)
class MailConfig:
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password_file: str = ""
    sender: str = "coffer@localhost"
    operator: str = ""                # the operator's address, for alerts (a mass change held)
    public_url: str = ""              # HTTPS address users reach the WebDAV port at, for links in mail;
                                      # "" = https://<first [tls] acme_domains name>:<[webdav] port>


@dataclass(frozen=True)
class ServerConfig:
    workers: int = 0                  # processes serving WebDAV and SFTP; 0 = one per CPU core
    proxy_protocol_from: tuple = ()   # load balancers (CIDRs) whose connections start with a PROXY header
    node_name: str = ""               # this node's name in session records; "" = the host name


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    webdav: WebDAVConfig = field(default_factory=WebDAVConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    sftp: SFTPConfig = field(default_factory=SFTPConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    base_dir: str = "."               # where relative paths are resolved; not a TOML key

    # -- resolved paths ------------------------------------------------------
    def path(self, value: str, default: str) -> Path:
        p = Path(value or default)
        if not p.is_absolute():
            p = Path(self.base_dir) / p
        return p

    @property
    def data_dir(self) -> Path:
        return self.path(self.storage.data_dir, "var")

    @property
    def database_url(self) -> str:
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.data_dir / 'coffer.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.path(self.storage.blob_dir, str(self.data_dir / "blobs"))

    @property
    def spool_dir(self) -> Path:
        return self.path(self.storage.spool_dir, str(self.data_dir / "spool"))

    @property
    def node_name(self) -> str:
        """This node's name in the session records it writes: unique among
        the nodes sharing one database (each closes its own dead processes'
        records on start)."""
        return self.server.node_name or socket.gethostname()

    @property
    def master_key_file(self) -> Path:
        return self.path(self.security.master_key_file, str(self.data_dir / "master.key"))

    def replace(self, **sections) -> "Config":
        """A copy with whole sections or single options changed (tests, CLI flags)."""
        return dataclasses.replace(self, **sections)


ADDRESS_POLICIES = ("full", "truncated", "none")
_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "base_dir"}


def _coerce(section: str, key: str, want, value):
    want = {"int": int, "str": str, "bool": bool, "float": float, "tuple": tuple, "dict": dict}.get(want, want)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is tuple and isinstance(value, list):
        return tuple(value)
    if want is int and isinstance(value, bool):
        raise ConfigError(f"[{section}] {key}: expected an integer, got {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"[{section}] {key}: expected {want.__name__}, got {value!r}")
    return value


def from_dict(raw: dict, base_dir: str = ".") -> Config:
    """Build a Config from parsed TOML, refusing unknown sections and keys."""
    sections = {}
    for name, body in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown config section [{name}]; known: {', '.join(sorted(_SECTIONS))}")
        if not isinstance(body, dict):
            raise ConfigError(f"[{name}] must be a table")
        cls = {"server": ServerConfig, "storage": StorageConfig, "security": SecurityConfig, "retention": RetentionConfig,
               "webdav": WebDAVConfig, "tls": TLSConfig, "sftp": SFTPConfig, "accounts": AccountsConfig,
               "mail": MailConfig}[name]
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {}
        for key, value in body.items():
            if key not in fields:
                raise ConfigError(f"unknown option [{name}] {key}; known: {', '.join(sorted(fields))}")
            values[key] = _coerce(name, key, fields[key], value)
        sections[name] = cls(**values)
    cfg = Config(**sections, base_dir=base_dir)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    if cfg.security.default_mode not in ("managed", "private"):
        raise ConfigError("[security] default_mode must be \"managed\" or \"private\"")
    if not 4 * 1024 <= cfg.storage.chunk_size <= 4 * 1024 * 1024:
        raise ConfigError("[storage] chunk_size must be between 4096 and 4194304 bytes")
    if cfg.storage.blob_backend not in ("local", "s3"):
        raise ConfigError("[storage] blob_backend must be \"local\" or \"s3\"")
    if cfg.storage.gc_every_hours < 0:
        raise ConfigError("[storage] gc_every_hours must be 0 (never) or more")
    if not 0 <= cfg.storage.small_file_bytes <= 1024 * 1024:
        raise ConfigError("[storage] small_file_bytes must be between 0 and 1048576 (1 MiB)")
    if cfg.storage.gc_grace_seconds < 900:
        # an upload refreshes its local packs every 10 minutes; a shorter grace could take them
        raise ConfigError("[storage] gc_grace_seconds must be at least 900")
    if cfg.accounts.default_plan not in cfg.accounts.plans:
        raise ConfigError(f"[accounts] default_plan {cfg.accounts.default_plan!r} is not in [accounts] plans")
    for plan, size in cfg.accounts.plans.items():
        if not isinstance(size, int) or size < 0:
            raise ConfigError(f"[accounts] plans.{plan}: a size in bytes (0 = unlimited)")
    if not 0 < cfg.retention.max_quota_share <= 1:
        raise ConfigError("[retention] max_quota_share must be in (0, 1]")
    if not 0 < cfg.retention.guard_share <= 1:
        raise ConfigError("[retention] guard_share must be in (0, 1]")
    for key in ("login_timeout_seconds", "max_sessions", "max_sessions_per_account", "max_unauthenticated",
                "max_unauthenticated_per_address"):
        if getattr(cfg.sftp, key) < 1:
            raise ConfigError(f"[sftp] {key} must be 1 or more")
    if cfg.accounts.session_addresses not in ADDRESS_POLICIES:
        raise ConfigError('[accounts] session_addresses must be "full", "truncated" (IPv4 /24, IPv6 /48) '
                          'or "none"')
    if len(cfg.server.node_name) > 128:
        raise ConfigError("[server] node_name: at most 128 characters")
    if cfg.server.workers < 0:
        raise ConfigError("[server] workers must be 0 (one per CPU core) or more")
    for net in cfg.server.proxy_protocol_from:
        try:
            ipaddress.ip_network(net, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(f"[server] proxy_protocol_from: {net!r} is not an address or network such as "
                              "\"10.0.0.2\" or \"10.0.0.0/24\" (the load balancers' own addresses)") from None
    for key in ("threads", "max_threads", "header_timeout_seconds", "idle_timeout_seconds", "io_timeout_seconds",
                "max_connections", "max_connections_per_address"):
        if getattr(cfg.webdav, key) < 1:
            raise ConfigError(f"[webdav] {key} must be 1 or more")
    if cfg.webdav.max_threads < cfg.webdav.threads:
        raise ConfigError("[webdav] max_threads must be at least threads")
    if not 4 <= cfg.security.bcrypt_rounds <= 31:
        raise ConfigError("[security] bcrypt_rounds must be between 4 and 31")
    url = cfg.mail.public_url
    if url and (not url.startswith("https://") or len(url) <= len("https://") or any(ch in url for ch in "?#\" <>")):
        raise ConfigError("[mail] public_url must be an https:// address without query, such as "
                          "\"https://files.example.org:8443\" (links in mail lead there)")
    _validate_login_guard(cfg.security)
    _validate_tls(cfg.tls, cfg.webdav)


def _validate_login_guard(sec: SecurityConfig) -> None:
    for key in ("login_window_seconds", "login_failures_before_delay", "login_max_delay_seconds",
                "login_block_after", "login_block_seconds", "login_protect_after", "login_trust_days"):
        if getattr(sec, key) < 1:
            raise ConfigError(f"[security] {key} must be 1 or more")
    if sec.login_block_max_seconds < sec.login_block_seconds:
        raise ConfigError("[security] login_block_max_seconds must be at least login_block_seconds")
    for net in sec.login_safe_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(f"[security] login_safe_networks: {net!r} is not an address or network "
                              "such as \"192.0.2.0/24\" or \"2001:db8::/48\"") from None


def _validate_tls(t: TLSConfig, webdav: WebDAVConfig) -> None:
    if t.acme_challenge not in ("http-01", "tls-alpn-01"):
        raise ConfigError('[tls] acme_challenge must be "http-01" or "tls-alpn-01"')
    if t.acme_domains and not t.acme_directory.startswith("https://"):
        raise ConfigError("[tls] acme_directory must be an https:// URL")
    if t.acme_domains and (webdav.cert_file or webdav.key_file):
        raise ConfigError("[tls] acme_domains and [webdav] cert_file/key_file exclude each other: pick one")
    if t.acme_domains and not webdav.tls:
        raise ConfigError("[tls] acme_domains needs [webdav] tls = true")
    for key in ("names", "acme_domains"):
        if not all(isinstance(n, str) and n.strip() for n in getattr(t, key)):
            raise ConfigError(f"[tls] {key}: a list of host names or addresses")
    if not 0 < t.acme_http_port < 65536:
        raise ConfigError("[tls] acme_http_port must be a port number (80 for Let's Encrypt)")
    if bool(t.acme_eab_kid) != bool(t.acme_eab_hmac_key_file):
        raise ConfigError("[tls] acme_eab_kid and acme_eab_hmac_key_file go together: set both or neither")
    if t.acme_renew_days < 1 or t.check_seconds < 1:
        raise ConfigError("[tls] acme_renew_days and check_seconds must be at least 1")


def load(path: str | os.PathLike | None = None) -> Config:
    """Read the config named by `path`, else $COFFER_CONFIG, else defaults.

    Defaults put everything under ./var relative to the working folder.
    """
    path = path or os.environ.get("COFFER_CONFIG")
    if not path:
        return from_dict({}, base_dir=os.getcwd())
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found; copy conf/coffer.example.toml and edit it") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    return from_dict(raw, base_dir=str(p.resolve().parent))
