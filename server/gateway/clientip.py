"""The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(setting: str) -> tuple[Network, ...]:
    """The TRUSTED_PROXIES setting ("10.0.0.0/8, 127.0.0.1") as networks."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in setting.split(",")
        if part.strip()
    )


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(peer: str, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The address a request came from.

    X-Forwarded-For is read right to left (each proxy appends the address it
    saw) and only while the hop that wrote it is trusted, so a client cannot
    choose its own address by sending the header itself.
    """
    address = peer
    if not forwarded_for:
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    while hops and _trusted(address, proxies):
        address = hops.pop()
    return address
