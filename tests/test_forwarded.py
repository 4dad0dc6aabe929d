"""Issue 16 item 6: the audience a caller's token must name is not the caller's to choose.

In ``enforce`` mode the service refuses to start without CDS_PUBLIC_BASE_URL (the audience
followed the Host header before, and gunicorn believed X-Forwarded-Proto from loopback).
Forwarded headers count only from the proxies in CDS_TRUSTED_PROXIES; that is observable
where the request's URL is the audience, ``sandbox`` mode, with a captured sandbox token
(real signature, clock frozen at its issue time; its audience is the capture harness's
``http://127.0.0.1:8092/cds-services``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from gunicorn.config import Config

from cds_hooks import gunicorn_conf
from cds_hooks.app import create_app
from cds_hooks.config import ConfigError
from tests.conftest import sqlite_url
from tests.identity_provider import CLIENT_ID, CLIENT_SECRET, IdentityProvider
from tests.security.tokens import Client, bearer
from tests.served import free_port, serve
from tests.test_auth import capture, captured_token

CAPTURED = capture("sandbox-discovery-get.json")
# The captured token's audience is another host's URL than the one called below.
CALLED = "https://cds.hospital.example"
FORWARDED = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "127.0.0.1:8092"}
# The served enforce-mode tests: the service's public URL, and another host's whose token
# a caller replays to it, claiming through every header that it called that other URL.
OTHER = "https://cds.other-hospital.example"
CLAIMING_OTHER = {
    "Host": "cds.other-hospital.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "cds.other-hospital.example",
}


def sandbox_client(tmp_path: Path, **extra: Any) -> FlaskClient:
    frozen = CAPTURED["jwt_decoded_unverified"]["payload"]["iat"] + 1
    config = {
        "TESTING": True,
        "ENV": "development",
        "AUTH_MODE": "sandbox",
        "AUTH_CLOCK": lambda: frozen,
        "DATABASE_URL": sqlite_url(tmp_path, "s.sqlite3"),
        **extra,
    }
    return create_app(config).test_client()


def discovery(client: FlaskClient, peer: str, headers: dict[str, str]) -> int:
    response = client.get(
        "/cds-services",
        base_url=CALLED,
        headers={**bearer(captured_token(CAPTURED)), **headers},
        environ_base={"REMOTE_ADDR": peer},
    )
    return response.status_code


def test_the_served_service_refuses_to_start_in_enforce_mode_without_a_public_url(
    tmp_path: Path,
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CDS_") and key != "DATABASE_URL"
    }
    env.update(
        CDS_ENV="production",
        CDS_AUTH_MODE="enforce",
        CDS_TRUSTED_ISSUERS=json.dumps([Client().issuer_config()]),
        CDS_DATABASE_URL=sqlite_url(tmp_path, "s.sqlite3"),
    )
    command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(free_port())]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the service started serving in enforce mode without CDS_PUBLIC_BASE_URL")
    assert process.returncode == 2
    assert b"configuration error: CDS_AUTH_MODE=enforce needs CDS_PUBLIC_BASE_URL" in stderr


def test_forwarded_headers_are_ignored_unless_their_proxy_is_trusted(tmp_path: Path) -> None:
    client = sandbox_client(tmp_path)
    assert discovery(client, "127.0.0.1", FORWARDED) == 401, "not even from loopback"
    assert discovery(client, "10.1.2.3", FORWARDED) == 401


def test_a_trusted_proxy_says_which_url_the_caller_called(tmp_path: Path) -> None:
    client = sandbox_client(tmp_path, TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.7")
    assert discovery(client, "10.1.2.3", FORWARDED) == 200
    assert discovery(client, "192.0.2.7", FORWARDED) == 200
    assert discovery(client, "192.0.2.8", FORWARDED) == 401, "a peer outside the list"
    assert discovery(client, "10.1.2.3", {}) == 401, "nothing forwarded: the URL as called"


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDS_TRUSTED_PROXIES"):
        sandbox_client(tmp_path, TRUSTED_PROXIES="proxy.example.org")


def test_gunicorn_believes_no_forwarded_header() -> None:
    """gunicorn's default trusts X-Forwarded-Proto from loopback; the app decides instead."""
    config = Config()
    config.set("forwarded_allow_ips", gunicorn_conf.options()["forwarded_allow_ips"])
    assert config.forwarded_allow_ips == []


@contextmanager
def served_in_enforce_mode(
    tmp_path: Path, issuer: Client, **env: str
) -> Iterator[tuple[str, IdentityProvider]]:
    """gunicorn (one worker) in enforce mode with CDS_PUBLIC_BASE_URL set, and the
    console signing in through an identity provider: its redirect_uri is the one URL the
    service builds from the request, so it shows which forwarded headers were believed."""
    with IdentityProvider() as provider:
        environ = {
            "CDS_AUTH_MODE": "enforce",
            "CDS_PUBLIC_BASE_URL": CALLED,
            "CDS_TRUSTED_ISSUERS": json.dumps([issuer.issuer_config()]),
            "CDS_CONSOLE_OIDC_METADATA_URL": provider.metadata_url,
            "CDS_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
            "CDS_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            **env,
        }
        with serve(tmp_path, workers=1, env=environ) as (base, _, _):
            yield base, provider


def served_discovery(base: str, token: str, headers: dict[str, str]) -> int:
    response = requests.get(
        base + "/cds-services", headers={**bearer(token), **headers}, timeout=10
    )
    return response.status_code


def console_callback_url(base: str, headers: dict[str, str]) -> str:
    """The redirect_uri the console sends the identity provider, from these headers."""
    start = requests.get(
        base + "/console/oidc/login", headers=headers, allow_redirects=False, timeout=10
    )
    assert start.status_code == 302, start.text
    return parse_qs(urlsplit(start.headers["Location"]).query)["redirect_uri"][0]


def test_the_served_service_refuses_a_token_for_another_url_whatever_loopback_claims(
    tmp_path: Path,
) -> None:
    """The issue's attack on gunicorn itself: a token minted for another host's URL, sent
    from 127.0.0.1 with Host and X-Forwarded-Proto/-Host naming that URL, is refused; a
    token for the public URL with the same headers is accepted (the 401 is the audience's).
    Not listed in CDS_TRUSTED_PROXIES, loopback's forwarded headers are not believed."""
    issuer = Client()
    with served_in_enforce_mode(tmp_path, issuer) as (base, _):
        assert served_discovery(base, issuer.token(OTHER + "/cds-services"), CLAIMING_OTHER) == 401
        assert served_discovery(base, issuer.token(CALLED + "/cds-services"), CLAIMING_OTHER) == 200
        # Host is what the request says it is; the scheme is the connection's, not the header's.
        callback = console_callback_url(base, CLAIMING_OTHER)
        assert callback == "http://cds.other-hospital.example/console/oidc/callback"


def test_the_served_service_believes_a_trusted_proxy_but_keeps_its_public_audience(
    tmp_path: Path,
) -> None:
    """The same headers from a proxy in CDS_TRUSTED_PROXIES are believed (the console's
    callback URL takes the forwarded scheme), and still never decide the audience in
    enforce mode (docs/trust.md section 2): the other URL's token stays refused."""
    issuer = Client()
    trusted = {"CDS_TRUSTED_PROXIES": "127.0.0.1/32"}
    with served_in_enforce_mode(tmp_path, issuer, **trusted) as (base, _):
        callback = console_callback_url(base, CLAIMING_OTHER)
        assert callback == "https://cds.other-hospital.example/console/oidc/callback"
        assert served_discovery(base, issuer.token(OTHER + "/cds-services"), CLAIMING_OTHER) == 401
        assert served_discovery(base, issuer.token(CALLED + "/cds-services"), CLAIMING_OTHER) == 200
