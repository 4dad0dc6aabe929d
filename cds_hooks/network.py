"""Where outbound calls (FHIR server, JWKS) may go, and where they may never go.

A hook request names the FHIR server we should call and lends us a token for it, so a
forged or careless request could aim us at a cloud metadata service or an internal
host. Link-local (169.254.0.0/16, fe80::/10: where metadata services live), unspecified,
multicast and reserved addresses are refused whatever the allowlist says. Private and
loopback addresses are reachable only when the allowlist names that address itself; a
host name on the allowlist is trusted to resolve inside the network the administrator
chose, except to the always-refused ranges above.

A URL is compared with another (an allowlist entry, a next link, a redirect) only as an
``Endpoint``: what decides where a request, and the token with it, goes. Calls to one
server share its connections (``SessionPool``), and a fan-out of calls can be cut at
its deadline (``Cutoff``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

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


class Cutoff:
    """The connections one fan-out of calls holds, so they can all be cut at its deadline.

    A socket timeout bounds each read, not the call: a server that trickles a byte at a
    time keeps a thread reading, and the lent token's socket open, long after the hook
    has answered. Calls made while ``active`` register the pooled connection they hold;
    ``cut`` shuts down every one still held (a blocked read returns at once) and any
    connection opened after it. A connection given back to its pool is no longer held,
    so a cut never touches another call's exchange.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[_HeldConnection] = set()
        self._cut = False

    @contextmanager
    def active(self) -> Iterator[None]:
        """Calls from this thread, inside the block, are held by this cutoff."""
        token = _CUTOFF.set(self)
        try:
            yield
        finally:
            _CUTOFF.reset(token)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for connection in self._held:
                _shut(connection.sock)

    def _hold(self, connection: _HeldConnection) -> None:
        with self._lock:
            connection.holder = self
            self._held.add(connection)
            if self._cut:
                _shut(connection.sock)

    def _release(self, connection: _HeldConnection) -> None:
        with self._lock:
            connection.holder = None
            self._held.discard(connection)

    def _connected(self, connection: _HeldConnection) -> None:
        """A connection held before the cut but connected after it is cut too."""
        with self._lock:
            if self._cut:
                _shut(connection.sock)


_CUTOFF: ContextVar[Cutoff | None] = ContextVar("cutoff", default=None)


def _shut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HeldConnection(HTTPConnection):
    holder: Cutoff | None = None

    def connect(self) -> None:
        super().connect()
        holder = self.holder
        if holder is not None:
            holder._connected(self)


class _HeldHTTPSConnection(_HeldConnection, HTTPSConnection):
    pass


class _HeldPoolMixin:
    """A connection pool whose connections the current thread's ``Cutoff`` holds while in use."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        cutoff = _CUTOFF.get()
        if cutoff is not None and isinstance(connection, _HeldConnection):
            cutoff._hold(connection)
        return connection

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _HeldConnection) and conn.holder is not None:
            conn.holder._release(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _HeldPool(_HeldPoolMixin, HTTPConnectionPool):
    ConnectionCls = _HeldConnection


class _HeldHTTPSPool(_HeldPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _HeldHTTPSConnection


class _HeldAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HeldPool, "https": _HeldHTTPSPool}


class SessionPool:
    """One pooled ``requests.Session`` per origin, shared by every thread (thread-safe).

    Calls to one server reuse its connections instead of a TCP and TLS handshake each.
    The session holds nothing of one call that could reach another: the token goes in
    each call's own headers, cookies are refused, and the environment's proxies are not
    read. At most ``max_origins`` sessions are kept (the least recently used is closed),
    each keeping at most ``connections`` idle connections; more at once are opened and
    then closed.
    """

    def __init__(self, max_origins: int, connections: int) -> None:
        self.max_origins = max_origins
        self.connections = connections
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, str, int], requests.Session] = OrderedDict()

    def session(self, endpoint: Endpoint) -> requests.Session:
        with self._lock:
            session = self._sessions.get(endpoint.origin)
            if session is not None:
                self._sessions.move_to_end(endpoint.origin)
                return session
            session = self._sessions[endpoint.origin] = self._new_session()
            evicted = (
                self._sessions.popitem(last=False)[1]
                if len(self._sessions) > self.max_origins
                else None
            )
        if evicted is not None:
            evicted.close()
        return session

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = _HeldAdapter(pool_connections=1, pool_maxsize=self.connections)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session
