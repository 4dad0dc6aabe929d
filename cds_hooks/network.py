"""Where outbound calls (FHIR server, JWKS) may go, and where they may never go.

A hook request names the FHIR server we should call and lends us a token for it, so a
forged or careless request could aim us at a cloud metadata service or an internal
host. Link-local (169.254.0.0/16, fe80::/10: where metadata services live), unspecified,
multicast and reserved addresses are refused whatever the allowlist says. Private and
loopback addresses are reachable only when the allowlist names that address itself; a
host name on the allowlist is trusted to resolve inside the network the administrator
chose, except to the always-refused ranges above.

A URL is compared with another (an allowlist entry, a next link, a redirect) only as an
``Endpoint``: what decides where a request, and the token with it, goes.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL reduced to what decides where a request (and the token) goes."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint | None:
        """None for anything but an absolute http(s) URL without credentials or dot segments."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return None
        if parts.username is not None or parts.password is not None:
            return None
        segments = [unquote(s) for s in parts.path.split("/")]
        if any(s in (".", "..") for s in segments):
            return None
        return cls(
            scheme=scheme,
            host=parts.hostname.lower(),
            port=port if port is not None else DEFAULT_PORTS[scheme],
            path=parts.path.rstrip("/"),
        )

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def contains(self, other: Endpoint) -> bool:
        if self.origin != other.origin:
            return False
        return other.path == self.path or other.path.startswith(self.path + "/")

    def same_origin(self, other: Endpoint) -> bool:
        return self.origin == other.origin


def host_of(url: str) -> str:
    """Host only, for logs."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal (brackets and IPv4-mapped IPv6 unwrapped)."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """Traffic to this host never leaves the machine (so plain http exposes nothing)."""
    address = ip_literal(host)
    if address is None:
        return host.lower().rstrip(".") in LOOPBACK_NAMES
    return address.is_loopback


def _never(address: IPAddress) -> bool:
    return (
        address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


def address_refusal(host: str, *, named_by_allowlist: bool, resolve: bool = True) -> str | None:
    """Why no connection may be made to ``host``, or None.

    ``named_by_allowlist``: an allowlist entry names this exact host. For a host name,
    ``resolve`` looks up its addresses; a lookup that fails is not a refusal (the
    connection then fails on its own), a lookup that yields a forbidden address is.
    """
    address = ip_literal(host)
    if address is not None:
        if _never(address):
            return "link-local, metadata or reserved address"
        if not address.is_global and not named_by_allowlist:
            return "private or loopback address not named by the allowlist"
        return None
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return None if named_by_allowlist else "loopback host not named by the allowlist"
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        resolved = ip_literal(str(info[4][0]))
        if resolved is not None and _never(resolved):
            return "host resolves to a link-local, metadata or reserved address"
    return None
