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
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from gunicorn.config import Config

from cds_hooks import gunicorn_conf
from cds_hooks.app import create_app
from cds_hooks.config import ConfigError
from tests.conftest import sqlite_url
from tests.security.tokens import Client, bearer
from tests.served import free_port
from tests.test_auth import capture, captured_token

CAPTURED = capture("sandbox-discovery-get.json")
# The captured token's audience is another host's URL than the one called below.
CALLED = "https://cds.hospital.example"
FORWARDED = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "127.0.0.1:8092"}


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
