"""Address guard: which hosts the downloader may reach, checked on every socket it connects.

The submitted URL is checked in the HTTP handler, but redirects, playlist fragments and URLs
embedded in pages are only known inside yt-dlp. So the download host patches socket connects:
every TCP connection the downloader opens is resolved and checked here first.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.tasks import task_scope

if TYPE_CHECKING:
    import _socket  # the class that declares socket.socket's connect methods, in typeshed
    from socket import _GetAddrInfoResult  # what socket.getaddrinfo() returns, in typeshed

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ALLOWED_SCHEMES = ("http", "https")


class BlockedAddressError(OSError):
    """A connection or URL that the guard refuses."""


class UnresolvableHostError(Exception):
    """The URL's host name does not resolve."""


def blocked_reason(address: str, allow: Iterable[Network]) -> str | None:
    """Why address may not be reached, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allow if network.version == ip.version):
        return None
    for flag in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{flag}"):
            return f"{flag.replace('_', '-')} address {ip} is not allowed"
    if not ip.is_global:
        return f"non-public address {ip} is not allowed"
    return None


def check_url_syntax(url: str) -> str:
    """The URL's host name; raises BlockedAddressError for anything but http(s) with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise BlockedAddressError(f"malformed URL: {exc}") from None
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        raise BlockedAddressError(f"scheme {parts.scheme or '(none)'!r} is not allowed, only http and https")
    if not parts.hostname:
        raise BlockedAddressError("URL has no host")
    return parts.hostname


async def check_url_host(url: str, allow: Iterable[Network]) -> None:
    """Resolve the host of a URL that passed check_url_syntax and apply check_resolved to its
    addresses. Raises UnresolvableHostError or BlockedAddressError."""
    host = check_url_syntax(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHostError(f"host {host} does not resolve: {exc}") from None
    check_resolved(host, [str(info[4][0]) for info in infos], allow)


def check_resolved(host: str, addresses: Iterable[str], allow: Iterable[Network]) -> None:
    """Raise BlockedAddressError if host resolved to no address or to any blocked one.

    The one rule for host names, at submit and in every worker connect: a name with a single
    blocked address is refused whole, never narrowed to its allowed addresses.
    """
    allow = tuple(allow)
    addresses = list(addresses)
    if not addresses:
        raise BlockedAddressError(f"host {host} does not resolve")
    for address in addresses:
        reason = blocked_reason(address, allow)
        if reason:
            raise BlockedAddressError(f"host {host}: {reason}")


def install_socket_guard(allow: Iterable[Network]) -> None:
    """Patch socket connects in this process (the download host) so every TCP connection is checked.

    Host names given to connect() are resolved here and the socket is connected to the checked
    address itself, so a second DNS answer cannot swap in a different one.
    """
    allow = tuple(allow)
    raw_connect = socket.socket.connect
    raw_connect_ex = socket.socket.connect_ex
    raw_getaddrinfo = socket.getaddrinfo

    def checked_getaddrinfo(
        host: bytes | str | None, port: bytes | str | int | None, *args: int, **kwargs: int
    ) -> "_GetAddrInfoResult":
        # HTTP clients resolve names themselves and connect to one address after another: without
        # this, a name with a blocked and an allowed address would quietly use the allowed one.
        infos = raw_getaddrinfo(host, port, *args, **kwargs)
        inet = [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        if inet and isinstance(host, str) and not _is_ip_literal(host):
            try:
                check_resolved(host, inet, allow)
            except BlockedAddressError as exc:
                task_scope.current().refused.append(str(exc))
                raise
        return infos

    # A socket address: its shape depends on the socket's family (a tuple for AF_INET and AF_INET6).
    def checked_address(sock: "_socket.socket", address: Any) -> Any:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return address
        host, port, *rest = address
        if not _is_ip_literal(host):
            return checked_getaddrinfo(host, port, sock.family, socket.SOCK_STREAM)[0][4]
        reason = blocked_reason(host, allow)
        if reason:
            task_scope.current().refused.append(f"{reason} (port {port})")
            raise BlockedAddressError(reason)
        return (host, port, *rest)

    def connect(sock: "_socket.socket", address: Any) -> None:
        checked = checked_address(sock, address)
        task_scope.current().adopt_socket(sock)
        return raw_connect(sock, checked)

    def connect_ex(sock: "_socket.socket", address: Any) -> int:
        checked = checked_address(sock, address)
        task_scope.current().adopt_socket(sock)
        return raw_connect_ex(sock, checked)

    socket.getaddrinfo = checked_getaddrinfo
    # Patching the class's methods is the point here; mypy refuses assignments to methods.
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
