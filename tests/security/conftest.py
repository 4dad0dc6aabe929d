"""The real app in ``enforce`` mode, trusting one EC and one RSA test client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sqlite_url
from tests.security.tokens import OTHER_ISSUER, PUBLIC_BASE, Client


@pytest.fixture(scope="session")
def ec_client() -> Client:
    return Client(kind="EC")


@pytest.fixture(scope="session")
def rsa_client() -> Client:
    return Client(iss="https://rsa-ehr.example.org", kind="RSA")


@pytest.fixture(scope="session")
def untrusted_client() -> Client:
    return Client(iss=OTHER_ISSUER)


@pytest.fixture
def app_config(tmp_path: Path, ec_client: Client, rsa_client: Client) -> dict[str, Any]:
    return {
        "TESTING": True,
        "ENV": "development",
        "AUTH_MODE": "enforce",
        "PUBLIC_BASE_URL": PUBLIC_BASE,
        "TRUSTED_ISSUERS": [
            ec_client.issuer_config(jku=["https://ehr.example.org/jwks.json"]),
            rsa_client.issuer_config(),
        ],
        "DATABASE_URL": sqlite_url(tmp_path, "store.sqlite3"),
    }


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every outbound connection attempt; anything but loopback is refused, not made.

    Guards the "never connect" promise and this machine's no-traffic-off-loopback rule.
    """
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        attempts.append(address)
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not (
            host.startswith("127.") or host in ("::1", "localhost")
        ):
            raise ConnectionRefusedError(f"test guard: no connection to {host}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts
