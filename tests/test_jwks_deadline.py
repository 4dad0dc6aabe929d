"""A key server that trickles its answer cannot hold a request, nor the service.

Issue 16 item 1: a token with a trusted ``iss`` and an unknown ``kid`` starts a JWKS
fetch before any signature is checked, so anyone can make the service call the issuer's
key server; one that sends a byte every fraction of a second never trips a per-read
timeout. The fetch is bounded as a whole, runs once per URL at a time in the background,
and requests wait for it only briefly. The bounds asserted here are generous (several
times the configured ones): they tell "bounded" from "held for a minute", nothing finer.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from cds_hooks.auth.jwks import JwksCache, JwksFetchError, JwksPolicy, fetch_jwks
from tests.security.tokens import Client, bearer
from tests.served import serve
from tests.test_auth import Clock, eventually
from tests.trickling_server import TricklingServer

MARGIN = 3.0
"""Added to every configured bound: a shared, busy machine is slow, not a minute slow."""


def jwks_body(client: Client) -> bytes:
    return json.dumps(client.public_jwks()).encode()


def test_a_trickled_key_set_is_abandoned_at_the_deadline() -> None:
    with TricklingServer(jwks_body(Client()), byte_every=0.05) as server:
        assert server.seconds_to_answer > 10
        started = time.monotonic()
        with pytest.raises(JwksFetchError) as failed:
            fetch_jwks(server.url, JwksPolicy(timeout=1.0))
        elapsed = time.monotonic() - started
    assert failed.value.reason == "timeout"
    assert elapsed < 1.0 + MARGIN


def test_a_key_set_over_the_size_bound_is_refused_without_reading_it_all() -> None:
    """The size half of the bound: a key server that sends far more than ``max_bytes``
    (64 KiB), fast but more than the whole deadline's worth, is refused as too large once
    the bound is passed; the connection is dropped there, and a call that needs the keys
    is not held for it."""
    policy = JwksPolicy(timeout=2.0, wait=0.5)
    oversized = b'{"keys": [' + b" " * (256 * policy.max_bytes) + b"]}"
    with TricklingServer(oversized, byte_every=0.005, chunk=4096) as server:
        assert server.seconds_to_answer > 4 * policy.timeout, "reading it all would time out"
        with pytest.raises(JwksFetchError) as failed:
            fetch_jwks(server.url, policy)
        assert failed.value.reason == "too_large"

        started = time.monotonic()
        assert JwksCache(policy).key_for(server.url, "a-kid-nobody-has") is None
        assert time.monotonic() - started < policy.wait + MARGIN
        assert eventually(lambda: server.finished == server.connections == 2)
    assert server.sent < len(server.answer) // 4, "the client stopped reading and closed"


def test_requests_share_one_fetch_and_wait_for_it_only_briefly() -> None:
    policy = JwksPolicy(timeout=2.0, wait=0.5, refresh_interval=60.0)
    with TricklingServer(jwks_body(Client()), byte_every=0.05) as server:
        cache = JwksCache(policy)
        waited: list[float] = []

        def ask() -> None:
            started = time.monotonic()
            assert cache.key_for(server.url, "a-kid-nobody-has") is None
            waited.append(time.monotonic() - started)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(waited) == 8 and max(waited) < policy.wait + MARGIN
        assert server.connections == 1, "one fetch per URL at a time"


def test_a_refresh_of_keys_we_hold_is_never_waited_for() -> None:
    client, clock = Client(), Clock()
    policy = JwksPolicy(timeout=2.0, wait=0.5, max_age=3600.0, refresh_interval=60.0)
    with TricklingServer(jwks_body(client), byte_every=0.0) as server:
        cache = JwksCache(policy, clock=clock)
        assert cache.key_for(server.url, client.kid) is not None
        assert server.connections == 1

        server.byte_every = 0.5  # the key server turns slow; our keys grow stale
        clock.now += 3601
        started = time.monotonic()
        assert cache.key_for(server.url, client.kid) is not None
        assert time.monotonic() - started < MARGIN
        assert eventually(lambda: server.connections == 2), "refreshed in the background"


def test_a_trickling_key_server_does_not_hold_the_served_service(tmp_path: Path) -> None:
    """The issue's scenario against the real server (2 gunicorn workers, 4 threads each):
    unauthenticated tokens naming a trusted issuer and unknown kids, one a quarter second,
    with a 1 s refresh interval; good calls from another EHR go on being answered."""
    good, stranger = Client(), Client(iss="https://slow-ehr.example.org")
    issuers = [
        good.issuer_config(),
        {"iss": stranger.iss, "jwks_url": "JWKS_URL"},
    ]
    base = "https://cds.example.org"
    url = f"{base}/cds-services"
    with TricklingServer(jwks_body(Client()), byte_every=0.2) as jwks:
        assert jwks.seconds_to_answer > 60
        env = {
            "CDS_AUTH_MODE": "enforce",
            "CDS_PUBLIC_BASE_URL": base,
            "CDS_TRUSTED_ISSUERS": json.dumps(issuers).replace("JWKS_URL", jwks.url),
            "CDS_JWKS_REFRESH_INTERVAL": "1",
        }
        with serve(tmp_path, workers=2, env=env) as (served, _log, _process):
            unknown: list[tuple[int, float]] = []
            answered: list[tuple[int, float]] = []

            def call(token: str, into: list[tuple[int, float]]) -> None:
                started = time.monotonic()
                try:
                    status = requests.get(
                        f"{served}/cds-services", headers=bearer(token), timeout=15
                    ).status_code
                except requests.Timeout:
                    status = 0
                into.append((status, time.monotonic() - started))

            attackers = []
            for _ in range(12):
                attackers.append(threading.Thread(target=call, args=(stranger.token(url), unknown)))
                attackers[-1].start()
                time.sleep(0.25)
            for _ in range(6):
                call(good.token(url), answered)
            for thread in attackers:
                thread.join()

    bound = JwksPolicy().wait + MARGIN
    assert [status for status, _ in unknown] == [401] * 12
    assert max(seconds for _, seconds in unknown) < bound, unknown
    assert [status for status, _ in answered] == [200] * 6
    assert max(seconds for _, seconds in answered) < MARGIN, answered
