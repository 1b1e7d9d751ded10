"""Connect: how to reach the account from each system and tool, filled in
with the account's name and this server's address, and the fingerprints
to check on first connection (SSH host keys, the TLS certificate).

The address is `[mail] public_url` when set (what the server is known as
from outside), else the one the browser used for this page. No command
carries a password: each asks for it, or reads it from the environment."""
from __future__ import annotations

import re
import shlex
from urllib.parse import urlsplit

from . import sftp_hostkeys, tls
from .web import refuse, render, url

HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def base_url(cfg, environ) -> str:
    """The server's public address, without a trailing slash."""
    if cfg.mail.public_url:
        return cfg.mail.public_url.rstrip("/")
    host = environ.get("HTTP_HOST", "")
    if not HOST_RE.match(host):                 # a Host header that is no host name: the one listened on
        return tls.public_url(cfg).rstrip("/")
    return f"{'https' if cfg.webdav.tls else 'http'}://{host}"


def connect(web, visit, environ, method, path):
    if path != "/" or method not in ("GET", "HEAD"):
        raise refuse("404 Not Found", "No such page", "There is no page at this address.", back=url("connect") + "/")
    cfg = web.st.cfg
    name = visit.vfs.user.name
    base = base_url(cfg, environ)
    parts = urlsplit(base)
    host, secure = parts.hostname or "localhost", parts.scheme == "https"
    shown_host = f"[{host}]" if ":" in host else host
    port = parts.port or (443 if secure else 80)
    dav = base + "/"
    cert = tls.served_cert_file(cfg)
    sftp_on = cfg.sftp.enabled
    return render("200 OK", "connect.html", title="Connect", signed_in=True, csrf=visit.csrf, name=name,
                  dav=dav, secure=secure, **_commands(name, dav, shown_host, port, secure, cfg.sftp.port),
                  sftp=sftp_on, sftp_host=host, sftp_port=cfg.sftp.port,
                  host_keys=sftp_hostkeys.public_fingerprints(sftp_hostkeys.host_key_dir(cfg)) if sftp_on else [],
                  tls_fingerprint=tls.fingerprint(cert) if cert and cert.is_file() else None,
                  local_ca=tls.local_ca_file(cfg) is not None)


def _commands(name: str, dav: str, host: str, port: int, secure: bool, sftp_port: int) -> dict:
    """The command lines of the page, each ready to paste."""
    q = shlex.quote
    unc = f"\\\\{host}{'@SSL' if secure else ''}@{port}\\DavWWWRoot"
    davs = f"{'davs' if secure else 'dav'}://{name}@{host}:{port}/"
    return {
        "windows": f"net use Z: {unc} /user:{name} *",
        "gvfs": davs,
        "davfs2": f"sudo mount -t davfs {q(dav)} /mnt/coffer -o uid=$(id -u),gid=$(id -g)",
        "sftp_cmd": f"sftp -P {sftp_port} {q(name)}@{host}",
        "rclone": (f'export RCLONE_WEBDAV_PASS="$(rclone obscure -)"\n'
                   f"rclone lsd :webdav: --webdav-url {q(dav)} --webdav-vendor other --webdav-user {q(name)}"),
        "restic": f"restic -r sftp://{name}@{host}:{sftp_port}//restic init",
        "duplicity": f"duplicity ~/Documents {'webdavs' if secure else 'webdav'}://{name}@{host}:{port}/duplicity",
    }
