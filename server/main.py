"""`coffer serve`: the WebDAV and SFTP front-ends in one process.

    coffer serve [--config PATH] [--init [NAME]]

`--init` creates a first account when none exists and prints its password
once, on this terminal, with how to connect each kind of client. The server
runs until SIGINT or SIGTERM; periodic maintenance (cached logins, idle
session records, expired locks, retention and trash, and a daily gc) runs in
the background.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from providers import config as config_mod
from providers.accounts import PASSWORD_BITS, generate_password
from providers.errors import CofferError

log = logging.getLogger("coffer")
MAINTENANCE_SECONDS = 60


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("wsgidav", "cheroot", "paramiko", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _init_account(st, cfg, name: str) -> None:
    if st.accounts.list():
        print("coffer: accounts already exist; --init created nothing", flush=True)
        return
    password = generate_password()
    st.accounts.create(name, password)
    print(f"coffer: created the account {name!r}; its password (shown only now): {password}", flush=True)
    print(f"coffer: (a random {PASSWORD_BITS}-bit password; change it with "
          f"`coffer-admin user passwd {name}`)", flush=True)


def _connect_help(name: str, dav_url: str | None, sftp_addr: tuple | None) -> str:
    lines = ["", "How to connect:"]
    if dav_url:
        host_port = dav_url.split("://", 1)[1].rstrip("/")
        lines += [
            f"  Windows Explorer : Map network drive -> {dav_url}  (user {name})",
            f"  macOS Finder     : Go > Connect to Server -> {dav_url}",
            f"  Linux (GNOME)    : Other Locations -> davs://{host_port}/",
            f"  Linux (davfs2)   : mount -t davfs {dav_url} /mnt/coffer",
            f"  rclone           : rclone config -> new remote, type webdav, url {dav_url}, vendor owncloud,"
            f" user {name}",
            f"  Cyberduck/WinSCP : WebDAV (HTTPS), server {host_port}",
        ]
    if sftp_addr:
        host, port = sftp_addr
        lines += [f"  SFTP             : sftp -P {port} {name}@{host}",
                  f"  restic           : restic -r sftp://{name}@{host}:{port}//backup init"]
    return "\n".join(lines)


def serve(args) -> int:
    os.umask(0o077)                  # everything under the data folder is the server's alone
    cfg = config_mod.load(args.config)
    _setup_logging(args.log_level)
    from providers.storage import Storage
    from .webdav_server import start_webdav

    st = Storage.open(cfg)
    if args.init is not None:
        _init_account(st, cfg, args.init)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    running = []
    dav_url = None
    sftp_addr = None
    try:
        if cfg.webdav.enabled:
            dav = start_webdav(st, cfg)
            running.append(dav)
            dav_url = dav.url
            print(f"coffer: WebDAV listening on {dav.url}", flush=True)
            if dav.fingerprint:
                print(f"coffer: TLS certificate SHA-256 fingerprint {dav.fingerprint}", flush=True)
        if cfg.sftp.enabled:
            try:
                from .sftp import start_sftp
            except ImportError:
                log.warning("the SFTP front-end is not available in this build")
            else:
                ssh = start_sftp(st, cfg)
                running.append(ssh)
                sftp_addr = (cfg.sftp.host, getattr(ssh, "port", cfg.sftp.port))
                print(f"coffer: SFTP listening on {sftp_addr[0]}:{sftp_addr[1]}", flush=True)
                for fp in getattr(ssh, "fingerprints", []) or []:
                    print(f"coffer: SSH host key fingerprint {fp}", flush=True)
        if args.init is not None:
            print(_connect_help(args.init, dav_url, sftp_addr), flush=True)
        if not running:
            print("coffer: nothing to serve: both [webdav] and [sftp] are disabled", file=sys.stderr)
            return 2
        print("coffer: ready", flush=True)
        while not stop.wait(MAINTENANCE_SECONDS):
            _maintain(st, running)
    finally:
        for srv in reversed(running):
            try:
                srv.stop()
            except Exception:
                log.exception("stopping a front-end failed")
        close = getattr(st, "close", None)
        if close:
            close()
    return 0


def _maintain(st, running) -> None:
    """Every minute: the front-ends' housekeeping, then the storage core's
    periodic job (`Storage.maintenance`: due erasures, record retention,
    hourly version and trash retention for every account, and gc every
    `[storage] gc_every_hours`)."""
    for srv in running:
        app = getattr(srv, "app", None)
        if app is not None and hasattr(app, "maintain"):
            try:
                app.maintain()
            except Exception:
                log.exception("front-end maintenance failed")
    try:
        st.maintenance()
    except Exception:
        log.exception("periodic maintenance failed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="coffer", description="Coffer storage server")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the WebDAV and SFTP servers")
    s.add_argument("--config", metavar="PATH", help="config file (default: $COFFER_CONFIG, else built-in defaults)")
    s.add_argument("--init", nargs="?", const="admin", metavar="NAME",
                   help="create a first account (default name: admin) if none exists and print how to connect")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
    except (CofferError, OSError) as e:
        print(f"coffer: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
