"""Fetching and caching issuers' JSON Web Key Sets.

Keys rotate, so an unknown ``kid`` triggers a refetch; but an attacker can send unknown
``kid``s at will, so refetches of one URL are spaced by a minimum interval. A fetch
that fails (timeout, bad status, garbage) leaves the cached keys in use: the issuer's
outage costs at most the calls signed with a key we have never seen, never the service.
Only URLs from the issuer registry are fetched (the verifier checks ``jku`` first).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from joserfc.jwk import KeySet

from cds_hooks.auth.issuers import signing_keys
from cds_hooks.network import address_refusal, is_loopback_host

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class JwksPolicy:
    timeout: float = 2.0
    refresh_interval: float = 60.0
    """Minimum seconds between two fetches of one URL."""
    max_age: float = 3600.0
    """Cached keys older than this are refetched on next use (and kept if that fails)."""
    max_bytes: int = 64 * 1024


@dataclass(slots=True)
class _Entry:
    keys: KeySet | None
    fetched_at: float | None
    attempted_at: float


class JwksFetchError(Exception):
    """A failed JWKS fetch; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fetch_jwks(url: str, policy: JwksPolicy) -> KeySet:
    """GET one JWK Set: https (or loopback), no redirects, bounded time and size."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
        raise JwksFetchError("https required")
    refusal = address_refusal(host, named_by_allowlist=True)
    if refusal:
        raise JwksFetchError(refusal)
    deadline = time.monotonic() + policy.timeout
    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(
                url,
                headers={"Accept": "application/jwk-set+json, application/json"},
                timeout=(policy.timeout, policy.timeout),
                allow_redirects=False,
                stream=True,
            )
            with response:
                if response.status_code != 200:
                    raise JwksFetchError(f"http_status_{response.status_code}")
                body = bytearray()
                for chunk in response.iter_content(CHUNK_BYTES):
                    body.extend(chunk)
                    if len(body) > policy.max_bytes:
                        raise JwksFetchError("too_large")
                    if time.monotonic() > deadline:
                        raise JwksFetchError("timeout")
    except requests.Timeout:
        raise JwksFetchError("timeout") from None
    except requests.RequestException:
        raise JwksFetchError("connection") from None
    try:
        keys = signing_keys(json.loads(bytes(body)))
    except ValueError:
        raise JwksFetchError("not_a_jwk_set") from None
    if not keys.keys:
        raise JwksFetchError("no_signature_keys")
    return keys


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
        """The key ``kid`` from ``url``, fetching when unknown or stale (rate-limited)."""
        entry = self._entries.get(url)
        key = _find(entry.keys if entry else None, kid)
        stale = (
            entry is None
            or entry.fetched_at is None
            or self.clock() - entry.fetched_at > self.policy.max_age
        )
        if key is not None and not stale:
            return key
        if self._refresh(url):
            entry = self._entries.get(url)
            return _find(entry.keys if entry else None, kid)
        return key

    def _refresh(self, url: str) -> bool:
        """Fetch ``url`` unless it was tried within ``refresh_interval``; True if refetched."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(url)
            if entry is not None and now - entry.attempted_at < self.policy.refresh_interval:
                return False
            if entry is None:
                entry = _Entry(keys=None, fetched_at=None, attempted_at=now)
                self._entries[url] = entry
            entry.attempted_at = now
        try:
            keys = self.fetcher(url, self.policy)
        except JwksFetchError as exc:
            log.warning(
                "JWKS fetch failed; cached keys stay in use",
                extra={"jwks_host": urlsplit(url).hostname, "error": exc.reason},
            )
            return False
        with self._lock:
            entry.keys = keys
            entry.fetched_at = self.clock()
        log.info(
            "JWKS fetched",
            extra={"jwks_host": urlsplit(url).hostname, "key_count": len(keys.keys)},
        )
        return True


def _find(keys: KeySet | None, kid: str) -> object | None:
    if keys is None:
        return None
    for key in keys.keys:
        if key.kid == kid:
            return key
    return None
