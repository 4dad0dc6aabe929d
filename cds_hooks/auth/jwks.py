"""Fetching and caching issuers' JSON Web Key Sets.

Keys rotate, so an unknown ``kid`` triggers a refetch; but anyone can send a token with a
trusted ``iss`` and an unknown ``kid`` (no valid signature needed to get this far), and
the issuer's key server may be slow or trickle its answer a byte at a time. So:

- the whole fetch (connect, TLS handshake, every read) ends at ``JwksPolicy.timeout``
  seconds and ``max_bytes``: each socket operation may wait only for the time left, so a
  server that sends one byte just inside a read timeout cannot stretch it (a per-read
  timeout restarts with every byte);
- a fetch runs in a background thread, one per URL at a time: the requests that need its
  keys wait for it at most ``wait`` seconds, and a refresh of keys we already hold (older
  than ``max_age``) is never waited for, so a key server never holds a worker;
- refetches of one URL are spaced by ``refresh_interval``.

A fetch that fails (timeout, bad status, garbage) leaves the cached keys in use: the
issuer's outage costs at most the calls signed with a key we have never seen, never the
service. Only URLs from the issuer registry are fetched (the verifier checks ``jku``
first). The host name is resolved outside the deadline (the resolver has its own), but in
the background thread, never in a request's.

The fetch uses http.client, not requests as the FHIR client does: requests (and urllib3
under it) offer only a timeout per socket operation, and a deadline needs each
operation's timeout set to the time left.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from joserfc.jwk import KeySet
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from cds_hooks.auth.issuers import signing_keys
from cds_hooks.network import address_refusal, is_loopback_host

log = logging.getLogger(__name__)

ACCEPT = "application/jwk-set+json, application/json"


@dataclass(frozen=True, slots=True)
class JwksPolicy:
    timeout: float = 2.0
    """Seconds for the whole fetch: connect, TLS handshake, status, headers and body."""
    refresh_interval: float = 60.0
    """Minimum seconds between two fetches of one URL."""
    max_age: float = 3600.0
    """Cached keys older than this are refetched on next use (and kept if that fails)."""
    max_bytes: int = 64 * 1024
    wait: float = 1.0
    """Longest a request waits for a fetch of keys it does not have."""


@dataclass(slots=True)
class _Entry:
    keys: KeySet | None = None
    fetched_at: float | None = None
    attempted_at: float | None = None
    fetching: threading.Event | None = None
    """Set while a fetch of this URL runs; the event fires when it ends."""


class JwksFetchError(Exception):
    """A failed JWKS fetch; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fetch_jwks(url: str, policy: JwksPolicy) -> KeySet:
    """GET one JWK Set: https (or loopback), no redirects, bounded in total time and size."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
        raise JwksFetchError("https required")
    refusal = address_refusal(host, named_by_allowlist=True)
    if refusal:
        raise JwksFetchError(refusal)
    deadline = time.monotonic() + policy.timeout
    try:
        status, body = _get(url, deadline, policy.max_bytes)
    except TimeoutError:  # socket.timeout, and the deadline passing between operations
        raise JwksFetchError("timeout") from None
    except (OSError, http.client.HTTPException, ValueError):
        raise JwksFetchError("connection") from None
    if status != 200:
        raise JwksFetchError(f"http_status_{status}")
    if len(body) > policy.max_bytes:
        raise JwksFetchError("too_large")
    try:
        keys = signing_keys(json.loads(body))
    except ValueError:
        raise JwksFetchError("not_a_jwk_set") from None
    if not keys.keys:
        raise JwksFetchError("no_signature_keys")
    return keys


def _get(url: str, deadline: float, max_bytes: int) -> tuple[int, bytes]:
    """Status and up to ``max_bytes + 1`` bytes of body, all before ``deadline``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, parts.port, timeout=_left(deadline), context=_tls_context()
        )
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=_left(deadline))
    connection._create_connection = _deadline_connection(deadline)  # type: ignore[attr-defined]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.connect()
        if isinstance(connection.sock, _DeadlineSSLSocket):
            connection.sock.deadline = deadline
        connection.request("GET", path, headers={"Accept": ACCEPT})
        response = connection.getresponse()
        if response.status != 200:
            return response.status, b""
        return 200, response.read(max_bytes + 1)
    finally:
        connection.close()


def _left(deadline: float) -> float:
    """Seconds until ``deadline``; past it, the fetch is over."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("JWKS fetch deadline passed")
    return left


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every read waits at most until ``deadline``."""

    deadline = float("inf")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS socket over it: the handshake keeps to the plain socket's timeout (the time
    left when it began), and every read after it to ``deadline``."""

    deadline = float("inf")

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


def _deadline_connection(deadline: float) -> Callable[..., socket.socket]:
    """http.client's ``socket.create_connection``, returning a ``_DeadlineSocket``."""

    def create_connection(address: tuple[str, int], *_: Any, **__: Any) -> socket.socket:
        plain = socket.create_connection(address, timeout=_left(deadline))
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline = deadline
        sock.settimeout(_left(deadline))
        return sock

    return create_connection


@cache
def _tls_context() -> ssl.SSLContext:
    """Certificates checked against the bundle requests uses (certifi), as the FHIR client's
    are; proxies from the environment are not used, nor are redirects followed."""
    context = ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH)
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class JwksCache:
    """Key sets by URL, shared by all requests of one process (thread-safe)."""

    def __init__(
        self,
        policy: JwksPolicy,
        clock: Callable[[], float] = time.monotonic,
        fetcher: Callable[[str, JwksPolicy], KeySet] = fetch_jwks,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.fetcher = fetcher
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def key_for(self, url: str, kid: str) -> object | None:
        """The key ``kid`` from ``url``; fetched when unknown (waiting at most
        ``policy.wait``) or refreshed in the background when stale (rate-limited)."""
        entry = self._entries.get(url)
        key = _find(entry.keys if entry else None, kid)
        stale = (
            entry is None
            or entry.fetched_at is None
            or self.clock() - entry.fetched_at > self.policy.max_age
        )
        if key is not None and not stale:
            return key
        fetch = self._start_fetch(url)
        if key is not None or fetch is None:
            return key
        fetch.wait(self.policy.wait)
        entry = self._entries.get(url)
        return _find(entry.keys if entry else None, kid)

    def _start_fetch(self, url: str) -> threading.Event | None:
        """The running fetch of ``url``, or a new one unless ``url`` was tried within
        ``refresh_interval``; None when there is none to wait for."""
        now = self.clock()
        with self._lock:
            entry = self._entries.setdefault(url, _Entry())
            if entry.fetching is not None:
                return entry.fetching
            if entry.attempted_at is not None and (
                now - entry.attempted_at < self.policy.refresh_interval
            ):
                return None
            entry.attempted_at = now
            done = entry.fetching = threading.Event()
        threading.Thread(
            target=self._fetch, args=(url, entry, done), name="jwks-fetch", daemon=True
        ).start()
        return done

    def _fetch(self, url: str, entry: _Entry, done: threading.Event) -> None:
        try:
            keys = self.fetcher(url, self.policy)
        except JwksFetchError as exc:
            log.warning(
                "JWKS fetch failed; cached keys stay in use",
                extra={"jwks_host": urlsplit(url).hostname, "error": exc.reason},
            )
        else:
            with self._lock:
                entry.keys = keys
                entry.fetched_at = self.clock()
            log.info(
                "JWKS fetched",
                extra={"jwks_host": urlsplit(url).hostname, "key_count": len(keys.keys)},
            )
        finally:
            with self._lock:
                entry.fetching = None
            done.set()


def _find(keys: KeySet | None, kid: str) -> object | None:
    if keys is None:
        return None
    for key in keys.keys:
        if key.kid == kid:
            return key
    return None
