"""JWT replay protection: the shared database first, this worker's memory while it is down.

Cards are advisory and time-critical, so a database outage must not stop hook calls.
When the shared replay cache cannot be reached, a token id is checked against, and
remembered in, this worker's memory instead: a replay to the same worker is still
refused, one to another worker or instance is not caught until the database is back.
That gap is made loud: every fallback is counted (``cds_jwt_replay_fallbacks_total``)
and each failed attempt to reach the database is logged at ERROR. After a failure the
database is tried again by one call per ``retry_after`` seconds while the others use
memory, so a database that times out does not slow every call.
Ids remembered in memory are also checked while the database is up: a token accepted
during the outage cannot be replayed to this worker after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from cds_hooks import metrics
from cds_hooks.auth.verifier import RememberJti
from cds_hooks.errors import ServiceUnavailable

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
CAPACITY = 100_000
"""Ids kept in memory at most (about 10 MB); beyond it the oldest go first."""


class ReplayCache:
    """``RememberJti`` over the shared store, falling back to this process's memory."""

    def __init__(
        self,
        shared: RememberJti,
        retry_after: float = RETRY_SECONDS,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.retry_after = retry_after
        self.capacity = capacity
        self.clock = clock
        self._local: dict[tuple[str, str], float] = {}
        """(issuer, jti) -> expiry (epoch seconds), in insertion order."""
        self._failing = False
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def __call__(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        key = (issuer, jti)
        with self._lock:
            expiry = self._local.get(key)
            if expiry is not None and expiry > time.time():
                return False
        if self._database_turn():
            try:
                fresh = self.shared(issuer, jti, expires_at)
            except ServiceUnavailable:
                self._database_failed(issuer)
            else:
                self._database_answered()
                return fresh
        metrics.count_replay_fallback()
        return self._remember_locally(key, expires_at.timestamp())

    def _database_turn(self) -> bool:
        """Whether this call asks the database: always while it answers; after a failure,
        one call per ``retry_after`` (the others use memory meanwhile)."""
        with self._lock:
            now = self.clock()
            if now < self._retry_at:
                return False
            if self._failing:
                self._retry_at = now + self.retry_after
            return True

    def _database_failed(self, issuer: str) -> None:
        with self._lock:
            self._failing = True
            self._retry_at = self.clock() + self.retry_after
        log.error(
            "JWT replay check falls back to this worker's memory: the database is "
            "unavailable, so a token replayed to another worker or instance is not caught",
            extra={"issuer": issuer, "retry_seconds": self.retry_after},
        )

    def _database_answered(self) -> None:
        with self._lock:
            recovered, self._failing, self._retry_at = self._failing, False, 0.0
        if recovered:
            log.warning("JWT replay check is back on the shared database")

    def _remember_locally(self, key: tuple[str, str], expiry: float) -> bool:
        with self._lock:
            now = time.time()
            seen = self._local.get(key)
            if seen is not None and seen > now:
                return False
            self._local[key] = expiry
            if len(self._local) > self.capacity:
                self._local = {k: e for k, e in self._local.items() if e > now}
                while len(self._local) > self.capacity:
                    del self._local[next(iter(self._local))]
            return True
