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
import shlex
import sys
from pathlib import Path

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
    user, recovery = st.accounts.create(name, password)
    print(f"coffer: created the {user.mode} account {name!r}; its password (shown only now): {password}",
          flush=True)
    print(f"coffer: (a random {PASSWORD_BITS}-bit password; change it with "
          f"`coffer-admin user passwd {name}`)", flush=True)
    if recovery:
        print(f"coffer: its recovery code, the only other way to its files if the password is lost (shown only "
              f"now; keep it offline): {recovery}", flush=True)
        print("coffer: only this password (or an app password made with it: `coffer app-password add` over SSH) "
              "opens its files; the server's administrator cannot", flush=True)


def _connect_help(name: str, dav_url: str | None, sftp_addr: tuple | None, ca_file: Path | None = None,
                  known_hosts: Path | None = None) -> str:
    """How to connect each client. Indented lines are commands that work
    as pasted into a POSIX shell on this machine; none holds the password."""
    q = shlex.quote
    lines = ["", "How to connect (indented lines are shell commands for this machine; "
                 "they ask for the password, none holds it):"]
    if dav_url:
        host_port = dav_url.split("://", 1)[1].rstrip("/")
        ca = f" --cacert {q(str(ca_file))}" if ca_file else ""
        rca = f" --ca-cert {q(str(ca_file))}" if ca_file else ""
        if ca_file:
            lines += [f"  Certificate      : made by this server's own CA {ca_file}; trust that file once on each",
                      "                     client (Windows, macOS, GNOME, Firefox, davfs2): coffer-admin tls show"]
        lines += [
            f"  Web browser      : {dav_url}  (sign in: your files, versions, trash, sharing, My Profile,",
            "                     two-step sign-in and app passwords, and each client's settings under Connect)",
            f"  Windows Explorer : Map network drive -> {dav_url}  (user {name})",
            f"  macOS Finder     : Go > Connect to Server -> {dav_url}",
            f"  Linux (GNOME)    : Other Locations -> davs://{host_port}/",
            f"  Cyberduck/WinSCP : WebDAV (HTTPS), server {host_port}",
            "  curl (asks for the password):",
            f"      curl{ca} -u {q(name)} -X PROPFIND -H 'Depth: 1' {dav_url}",
            "  rclone (the first command waits for the password: type it, press Enter):",
            '      read -rs PW && export RCLONE_WEBDAV_PASS="$(printf %s "$PW" | rclone obscure -)" && unset PW',
            f"      rclone lsd{rca} {q(f':webdav,url={chr(34)}{dav_url}{chr(34)},vendor=owncloud,user={name}:')}",
            "  davfs2 (as root; asks for the user name and password):",
        ]
        if ca_file:
            lines.append(f"      echo {q(f'trust_ca_cert {ca_file}')} >> /etc/davfs2/davfs2.conf")
        lines.append(f"      mkdir -p /mnt/coffer && mount -t davfs {dav_url} /mnt/coffer")
    if sftp_addr:
        host, port = sftp_addr
        kh = f"-o UserKnownHostsFile={q(str(known_hosts))} " if known_hosts else ""
        ssh = f"ssh {kh}-p {port} {name}@{host} -s sftp"
        lines += ["  SFTP (asks for the password):",
                  f"      sftp {kh}-P {port} {q(name)}@{host}",
                  "  restic (asks for a new password for the backup repository, then for the account's password,"
                  " once per connection):",
                  f"      restic -o sftp.command={q(ssh)} -r sftp:{q(name)}@{host}:/backup init"]
        if known_hosts:
            lines += [f"  SSH host keys    : {known_hosts} holds this server's (fingerprints above); to trust them",
                      f"                     for good: cat {q(str(known_hosts))} >> ~/.ssh/known_hosts"]
    return "\n".join(lines)


def _known_hosts(cfg, keys, host: str, port: int) -> Path | None:
    """Write the SFTP server's host keys as known_hosts lines
    (`<data_dir>/known_hosts`), for the printed commands to check."""
    if not keys:
        return None
    pattern = host if port == 22 else f"[{host}]:{port}"
    path = cfg.data_dir / "known_hosts"
    text = "".join(f"{pattern} {k.get_name()} {k.get_base64()}\n" for k in keys)
    tmp = path.with_name("known_hosts.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _shown_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def serve(args) -> int:
    """Set up once (database, certificate, host keys, listening sockets),
    then serve in `[server] workers` processes that share the sockets (in
    this process when there is one)."""
    os.umask(0o077)                  # everything under the data folder is the server's alone
    cfg = config_mod.load(args.config)
    _setup_logging(args.log_level)
    from providers.storage import Storage
    from . import tls
    from .webdav_server import check_webdav, listen_webdav

    st = Storage.open(cfg)
    try:
        if args.init is not None:
            _init_account(st, cfg, args.init)
    finally:
        st.close()                   # workers open their own connections
    _cut_short(cfg)                  # before any worker of this start writes a record
    _raise_file_limit()
    sockets = {}
    dav_url = sftp_addr = ca_file = known_hosts = None
    if cfg.webdav.enabled:
        check_webdav(cfg)
        sockets["webdav"] = listen_webdav(cfg)
        host, port = sockets["webdav"].getsockname()[:2]
        dav_url = tls.public_url(cfg, host, port)
        print(f"coffer: WebDAV listening on {dav_url}", flush=True)
        if cfg.webdav.tls:
            cert, _key, created = tls.ensure_certificate(cfg)
            if created:
                log.info("issued a server certificate from the local CA %s", tls.tls_dir(cfg) / "ca.pem")
            print(f"coffer: TLS certificate SHA-256 fingerprint {tls.fingerprint(cert)}", flush=True)
            ca_file = tls.local_ca_file(cfg)
            if ca_file is not None:
                print(f"coffer: clients trust this server's own CA {ca_file} (SHA-256 "
                      f"{tls.fingerprint(ca_file)}); how, for each client: coffer-admin tls show", flush=True)
            if cfg.tls.acme_domains and ca_file is not None:
                print(f"coffer: requesting a certificate for {', '.join(cfg.tls.acme_domains)} from "
                      f"{cfg.tls.acme_directory} in the background", flush=True)
    if cfg.sftp.enabled:
        from . import sftp_hostkeys
        from .sftp import listen_sftp
        sockets["sftp"] = listen_sftp(cfg)
        sftp_addr = (_shown_host(cfg.sftp.host), sockets["sftp"].getsockname()[1])
        print(f"coffer: SFTP listening on {cfg.sftp.host}:{sftp_addr[1]}", flush=True)
        host_keys = sftp_hostkeys.load_or_create(sftp_hostkeys.host_key_dir(cfg))
        for key in host_keys:
            print(f"coffer: SSH host key fingerprint {sftp_hostkeys.fingerprint(key)}", flush=True)
        known_hosts = _known_hosts(cfg, host_keys, *sftp_addr)
    if args.init is not None:
        print(_connect_help(args.init, dav_url, sftp_addr, ca_file, known_hosts), flush=True)
    if not sockets:
        print("coffer: nothing to serve: both [webdav] and [sftp] are disabled", file=sys.stderr)
        return 2
    workers = cfg.server.workers or _cores()
    from providers.accounts import decoy_hash
    decoy_hash(cfg.security.bcrypt_rounds)     # every worker has it from the start (see there)
    from .workers import StopSignals, Supervisor, run_detached
    if workers == 1:
        stop = StopSignals()
        print("coffer: ready", flush=True)
        return _work(cfg, 0, sockets, stop)
    from providers.streams import share_spool_budget
    _preload()
    share_spool_budget()             # unfinished SFTP uploads of an account count once, in every worker
    sup = Supervisor(workers, lambda slot, stop: _work(cfg, slot, sockets, stop, sup.loads),
                     on_death=lambda pid: run_detached(lambda: _cut_short(cfg)))
    return sup.run(ready=f"coffer: ready ({workers} worker processes)")


def _cut_short(cfg) -> None:
    """Close the session records this node's dead processes left open (a
    server or worker killed outright): at their last activity, marked as
    cut short. A failure is logged; the periodic job ends them later."""
    from providers import meta
    from providers.storage import Sessions
    try:
        db = meta.Database(cfg.database_url)
        try:
            closed = Sessions(db, cfg).cut_short_dead()
        finally:
            db.dispose()
    except Exception:
        log.exception("could not close the session records of this node's dead processes")
        return
    if closed:
        log.info("closed %d session record(s) that dead processes of node %s left open (cut short)",
                 closed, cfg.node_name)


def _preload() -> None:
    """Import what every worker runs before forking: the workers share it and
    start at once (importing starts no thread)."""
    import providers.schedule  # noqa: F401
    import providers.streams  # noqa: F401
    from . import webdav_app, webdav_server  # noqa: F401
    try:
        from . import sftp  # noqa: F401
    except ImportError:
        pass


def _raise_file_limit() -> None:
    """Every connection is a descriptor: take the hard limit as the soft one."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _work(cfg, slot: int, sockets: dict, stop, loads=None) -> int:
    """One worker: serve on the shared sockets until `stop`, sharing new
    connections with the other workers by their `loads`. Worker 0 also
    obtains certificates over ACME; every worker ticks the scheduler, and
    the one holding the database lease runs the periodic jobs
    (providers/schedule.py)."""
    from providers.schedule import Scheduler
    from providers.storage import Storage
    from providers.streams import tune_malloc
    from .webdav_server import start_webdav

    tune_malloc()                    # for the whole process: this one streams (see providers/streams.py)
    st = Storage.open(cfg, upgrade=False)
    scheduler = Scheduler(st)
    running = []
    try:
        if "webdav" in sockets:
            running.append(start_webdav(st, cfg, sock=sockets["webdav"], acme=slot == 0,
                                        loads=None if loads is None else (loads, slot)))
        if "sftp" in sockets:
            try:
                from .sftp import start_sftp
            except ImportError:
                log.warning("the SFTP front-end is not available in this build")
            else:
                running.append(start_sftp(st, cfg, sock=sockets["sftp"]))
        while not stop.wait(MAINTENANCE_SECONDS):
            _maintain(scheduler, running)
    finally:
        for srv in reversed(running):
            try:
                srv.stop()
            except Exception:
                log.exception("stopping a front-end failed")
        st.close()
    return 0


def _maintain(scheduler, running) -> None:
    """Every minute: the front-ends' housekeeping, then the storage core's
    periodic jobs (providers/schedule.py: due erasures, record retention,
    hourly version and trash retention for every account, and gc every
    `[storage] gc_every_hours`)."""
    for srv in running:
        app = getattr(srv, "app", None)
        if app is not None and hasattr(app, "maintain"):
            try:
                app.maintain()
            except Exception:
                log.exception("front-end maintenance failed")
    if scheduler is None:
        return
    try:
        scheduler.tick()
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
