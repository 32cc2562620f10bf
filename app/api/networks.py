"""Who is calling: the client address behind trusted proxies, and whether an address is in a set of networks."""

import ipaddress
from collections.abc import Iterable

from app.settings import Networks


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: Networks) -> str:
    """The peer address, or, when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For that is not a trusted proxy (the right-most entries are added by the proxies
    nearest to us; anything left of an untrusted entry may be forged by the client)."""
    address = peer or "unknown"
    if not trusted or not address_in(address, trusted):
        return address
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            break  # garbage: keep the last address a trusted proxy vouched for
        if not address_in(address, trusted):
            break
    return address


def address_in(address: str, networks: Networks) -> bool:
    """False for anything that is not an IP address (e.g. a Unix socket peer)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
