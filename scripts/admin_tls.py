"""coffer-admin tls: the server's certificate and how each client trusts it."""
from __future__ import annotations

import sys

from server import tls

from .admin_common import UsageError, out


def cmd_tls_show(st, args):
    cfg = st.cfg
    if not cfg.webdav.tls:
        raise UsageError("[webdav] tls = false: this server speaks plain HTTP on loopback, with no certificate")
    cert, _key, _ = tls.ensure_certificate(cfg)
    ca = tls.local_ca_file(cfg)
    if args.pem:
        if ca is None:
            raise UsageError("this server's certificate comes from a public or configured CA: clients trust it "
                             "already, there is no local CA to hand out")
        sys.stdout.write(ca.read_text())
        return 0
    served = tls.cert_info(cert)
    if cfg.webdav.cert_file:
        source = "the configured [webdav] cert_file"
    elif ca is None:
        source = f"ACME, from {cfg.tls.acme_directory}"
    elif cfg.tls.acme_domains:
        source = f"the local CA, until ACME ({cfg.tls.acme_directory}) gives one for {', '.join(cfg.tls.acme_domains)}"
    else:
        source = "Coffer's local CA"
    url = tls.public_url(cfg)
    data = {"url": url, "source": source, "certificate": served}
    lines = [f"Server certificate ({source}):",
             f"  file     : {served['path']}",
             f"  SHA-256  : {served['sha256']}",
             f"  valid    : {served['not_before']} to {served['not_after']}",
             f"  names    : {', '.join(served['names'])}",
             f"  issuer   : {served['issuer']}"]
    if ca is not None:
        info = tls.cert_info(ca)
        steps = tls.trust_steps(ca, url)
        data["local_ca"] = info
        data["trust"] = {client: step for client, step in steps}
        lines += ["", "Clients trust Coffer's local CA once (the server certificate is re-issued from it "
                      "without a new trust step):",
                  f"  file     : {info['path']}   (print it to copy elsewhere: coffer-admin tls show --pem)",
                  f"  SHA-256  : {info['sha256']}   (compare before trusting)",
                  f"  valid    : {info['not_before']} to {info['not_after']}",
                  "", "How each client trusts it:"]
        lines += [f"  {client:27}: {step}" for client, step in steps]
    else:
        lines += ["", "Clients trust it through their usual certificate store: no step needed."]
    out(args, data, "\n".join(lines))
    return 0


def register(sub, user_sub, add) -> None:
    group = sub.add_parser("tls", help="the HTTPS certificate: show it and how clients trust it")
    ts = group.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    sp = add(ts, "show", cmd_tls_show, "the served certificate (path, fingerprint, validity, names) and the "
             "exact trust step for rclone, curl, davfs2, Windows, macOS, GNOME and Firefox", True)
    sp.add_argument("--pem", action="store_true", help="print only the local CA certificate, to copy to clients")
