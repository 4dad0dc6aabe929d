"""The CDS Hooks sandbox runs in a browser: every call is preflighted and needs CORS."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks.app import create_app
from cds_hooks.cors import RefusedOrigins

SANDBOX = "https://sandbox.cds-hooks.org"
LOCAL_SANDBOX = "http://localhost:8080"
ROUTES = [
    "/cds-services",
    "/cds-services/baclofen-order-select",
    "/cds-services/baclofen-order-sign",
    "/cds-services/baclofen-medication-prescribe",
    "/cds-services/baclofen-patient-view",
    "/cds-services/baclofen-order-sign/feedback",
]


def preflight(client: FlaskClient, path: str, origin: str, method: str = "POST") -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


@pytest.fixture
def sandbox_client(app_config: dict[str, Any]) -> FlaskClient:
    """The service as ``make run AUTH=sandbox`` runs it."""
    return create_app({**app_config, "AUTH_MODE": "sandbox"}).test_client()


@pytest.mark.parametrize("path", ROUTES)
def test_preflight_from_the_sandbox_is_answered_on_every_route(
    sandbox_client: FlaskClient, path: str
) -> None:
    response = preflight(sandbox_client, path, SANDBOX)
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_actual_response_carries_the_origin(sandbox_client: FlaskClient) -> None:
    """Even a refusal: the page must be able to read its 401."""
    response = sandbox_client.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX


@pytest.mark.parametrize("mode", ["off", "enforce"])
def test_the_public_sandbox_is_allowed_by_default_only_in_sandbox_mode(
    app_config: dict[str, Any], mode: str
) -> None:
    """Only sandbox mode accepts the public sandbox's tokens; in any other mode its page
    has no business reading the answers. A locally run sandbox stays allowed."""
    config = {**app_config, "AUTH_MODE": mode, "PUBLIC_BASE_URL": "https://cds.example.org"}
    client = create_app(config).test_client()
    refused = preflight(client, "/cds-services/baclofen-order-sign", SANDBOX)
    assert "Access-Control-Allow-Origin" not in refused.headers
    local = preflight(client, "/cds-services/baclofen-order-sign", LOCAL_SANDBOX)
    assert local.headers["Access-Control-Allow-Origin"] == LOCAL_SANDBOX


def test_a_call_without_origin_gets_no_cors_headers(client: FlaskClient) -> None:
    """An EHR's server sends no Origin: nothing to grant, and no allowlisted origin leaks."""
    for response in (
        client.get("/cds-services"),
        client.post("/cds-services/baclofen-order-sign", data="{", content_type="application/json"),
    ):
        assert not [k for k, _ in response.headers.items() if k.startswith("Access-Control")]


def test_origin_not_on_the_allowlist_gets_no_cors_grant(client: FlaskClient) -> None:
    response = preflight(client, "/cds-services/baclofen-order-sign", "https://evil.example")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_origin_allowlist_is_configurable(app_config: dict[str, Any]) -> None:
    app_config["CORS_ORIGINS"] = "https://ehr.example.org"
    client = create_app(app_config).test_client()
    granted = preflight(client, "/cds-services", "https://ehr.example.org", "GET")
    assert granted.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    refused = preflight(client, "/cds-services", SANDBOX, "GET")
    assert "Access-Control-Allow-Origin" not in refused.headers


def refused_origin_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "cds_hooks.cors"]


def test_a_refused_origin_is_logged_once_naming_the_variable_to_set(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The service answers 200 while the browser drops the answer: without this line the
    sandbox says "All clear!" and nothing anywhere says why."""
    local_sandbox_on_another_port = "http://localhost:3000"
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            response = client.get(
                "/cds-services", headers={"Origin": local_sandbox_on_another_port}
            )
            assert response.status_code == 200
        preflight(client, "/cds-services/baclofen-order-sign", local_sandbox_on_another_port)
    (warning,) = refused_origin_warnings(caplog)
    assert warning.levelno == logging.WARNING
    assert local_sandbox_on_another_port in warning.getMessage()
    assert "CDS_CORS_ORIGINS" in warning.getMessage()


def test_allowed_origins_and_server_calls_are_not_logged(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client.get("/cds-services", headers={"Origin": LOCAL_SANDBOX})
        client.get("/cds-services")
    assert refused_origin_warnings(caplog) == []


def test_each_refused_origin_is_logged_and_a_malformed_one_is_not_quoted(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for origin in (
            "https://a.example",
            "https://b.example",
            "https://a.example/<script>forged",
        ):
            client.get("/cds-services", headers={"Origin": origin})
    messages = [r.getMessage() for r in refused_origin_warnings(caplog)]
    assert len(messages) == 3
    assert "https://a.example" in messages[0] and "https://b.example" in messages[1]
    assert "malformed" in messages[2] and "forged" not in messages[2]


def test_refused_origins_are_logged_again_after_the_interval_and_capped() -> None:
    now = [0.0]
    origins = RefusedOrigins(interval=3600.0, capacity=2, clock=lambda: now[0])
    assert origins.first_in_interval("https://a.example")
    assert not origins.first_in_interval("https://a.example")
    assert origins.first_in_interval("https://b.example")
    # A page can send any Origin: past the cap, new ones wait for the next interval.
    assert not origins.first_in_interval("https://c.example")
    now[0] = 3600.0
    assert origins.first_in_interval("https://c.example")
    assert origins.first_in_interval("https://a.example")
