"""Which network destinations polku's outbound requests may reach (docs/security.md,
"Server-side request forgery"). A webhook URL is configuration that an admin token
can set: without a check it would let that token make the server call its own
loopback services, the cloud's metadata endpoint (169.254.169.254) or anything
else inside the network the server sits in. Only globally routable addresses are
reached unless a channel says ``allow_private_network: true``."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def is_public_address(address: str) -> bool:
    """A globally routable unicast address: not loopback, private, link-local,
    shared (100.64/10), reserved, unspecified or multicast; an IPv4 address inside
    IPv6 (``::ffff:127.0.0.1``) is judged as the IPv4 address it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone index (fe80::1%eth0) is no part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def refused_host(url: str) -> str | None:
    """Why ``url``'s host is refused before any lookup (an address literal that is
    not public, or a ``localhost`` name), or ``None``: names are checked again when
    they are resolved, at each connection."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine"
    address = _address_literal(host)
    if address is not None and not is_public_address(address):
        return f"{host} is not a public address (loopback, private, link-local or reserved)"
    return None


def _address_literal(host: str) -> str | None:
    """``host`` as an address if it is one — also in the legacy IPv4 forms that
    resolvers accept (``0``, ``127.1``, ``0x7f000001``, ``2130706433``) — else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None  # a name
