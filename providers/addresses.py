"""What the records keep of a client's address: `[accounts] session_addresses`.

Session records and audit events outlive the connection by months; the
address in them is personal data. The policy says how much of it they keep:

- `full`: the address as the connection gave it;
- `truncated`: the network only, IPv4 by its /24 and IPv6 by its /48 (a
  whole site or provider area, not a host); an IPv4-mapped IPv6 address
  counts as IPv4;
- `none`: nothing.

The login guard and the connection limits work on the full address while
the connection lives; this applies only to what is written to be kept.
"""
from __future__ import annotations

import ipaddress

PREFIX = {4: 24, 6: 48}


def kept_address(addr: str | None, policy: str) -> str | None:
    """The part of `addr` a record may keep under `policy`; None for none.
    Something that is not an IP address is kept only under `full`."""
    if not addr or policy == "none":
        return None
    if policy == "full":
        return addr
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ipaddress.ip_network(f"{ip}/{PREFIX[ip.version]}", strict=False))
