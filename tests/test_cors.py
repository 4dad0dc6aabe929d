"""The CDS Hooks sandbox runs in a browser: every call is preflighted and needs CORS."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks.app import create_app

SANDBOX = "https://sandbox.cds-hooks.org"
ROUTES = [
    "/cds-services",
    "/cds-services/baclofen-order-select",
    "/cds-services/baclofen-order-sign",
    "/cds-services/baclofen-medication-prescribe",
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


@pytest.mark.parametrize("path", ROUTES)
def test_preflight_from_the_sandbox_is_answered_on_every_route(
    client: FlaskClient, path: str
) -> None:
    response = preflight(client, path, SANDBOX)
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_actual_response_carries_the_origin(client: FlaskClient) -> None:
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX


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
