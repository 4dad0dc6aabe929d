"""The attack suite: each attack against the real app is refused with the right status,
and a good request is answered normally right after it (the service stays up).

The app runs in ``enforce`` mode with CDS_PUBLIC_BASE_URL set, trusting an EC and an RSA
test client (tests/security/conftest.py). Outbound connections are watched: anything
but loopback is refused by a guard before it leaves this machine, and the FHIR attacks
assert that no connection was even attempted.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_hooks.app import create_app
from tests.conftest import load_json
from tests.fhir_server import FhirServer, redirect
from tests.security.tokens import (
    PUBLIC_BASE,
    Client,
    alg_none_token,
    b64,
    bearer,
    hs256_with_public_key,
)

SERVICE_PATH = "/cds-services/baclofen-order-select"
SERVICE_URL = PUBLIC_BASE + SERVICE_PATH
OTHER_SERVICE_URL = PUBLIC_BASE + "/cds-services/baclofen-order-sign"
DISCOVERY_URL = PUBLIC_BASE + "/cds-services"
LENT_TOKEN = "lent-fhir-token-0b5c7e"


def hook_body() -> dict[str, Any]:
    """A real sandbox order-select request (prefetch complete; its fhirServer not allowlisted)."""
    return copy.deepcopy(
        load_json("requests/sandbox-order-select-baclofen10-2tab-tid-spasticity.json")["body"]
    )


def needs_the_fhir_server(fhir_server: str) -> dict[str, Any]:
    """The same request without prefetch: the patient can only come from ``fhir_server``."""
    body = hook_body()
    body.pop("prefetch", None)
    body["fhirServer"] = fhir_server
    body["fhirAuthorization"] = {
        "access_token": LENT_TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/Patient.read patient/Observation.read",
        "subject": "baclofen-cds",
    }
    return body


def assert_refused_401(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["diagnostics"] for i in outcome["issue"]] == ["authentication failed"]


def assert_still_serving(client: FlaskClient, ec_client: Client) -> None:
    response = client.post(
        SERVICE_PATH, json=hook_body(), headers=bearer(ec_client.token(SERVICE_URL))
    )
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


# --- caller authentication: 401 ---------------------------------------------------------------


def test_a_good_request_is_answered(
    client: FlaskClient, ec_client: Client, rsa_client: Client
) -> None:
    assert_still_serving(client, ec_client)
    response = client.post(
        SERVICE_PATH, json=hook_body(), headers=bearer(rsa_client.token(SERVICE_URL))
    )
    assert response.status_code == 200
    discovery = client.get("/cds-services", headers=bearer(ec_client.token(DISCOVERY_URL)))
    assert discovery.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["no-header", "empty", "bearer-without-token", "basic"],
)
def test_missing_token(client: FlaskClient, ec_client: Client, headers: dict[str, str]) -> None:
    response = client.post(SERVICE_PATH, json=hook_body(), headers=headers)
    assert_refused_401(response)
    assert "invalid_token" not in response.headers["WWW-Authenticate"]
    assert_still_serving(client, ec_client)


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "eyJhbGciOiJFUzM4NCJ9.e30", "eyJ.eyJ.sig", "é.é.é", "x" * 20000],
    ids=["word", "three-junk-parts", "two-parts", "bad-base64", "non-ascii", "huge"],
)
def test_malformed_token(client: FlaskClient, ec_client: Client, token: str) -> None:
    response = client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token))
    assert_refused_401(response)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert_still_serving(client, ec_client)


def test_alg_none(client: FlaskClient, ec_client: Client) -> None:
    response = client.post(
        SERVICE_PATH, json=hook_body(), headers=bearer(alg_none_token(ec_client, SERVICE_URL))
    )
    assert_refused_401(response)
    assert_still_serving(client, ec_client)


def test_hs256_signed_with_the_issuers_public_key(client: FlaskClient, ec_client: Client) -> None:
    token = hs256_with_public_key(ec_client, SERVICE_URL)
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(client, ec_client)


def test_unknown_kid(client: FlaskClient, ec_client: Client) -> None:
    stranger = Client(iss=ec_client.iss)
    assert_refused_401(
        client.post(SERVICE_PATH, json=hook_body(), headers=bearer(stranger.token(SERVICE_URL)))
    )
    assert_still_serving(client, ec_client)


def test_a_key_pair_claiming_the_trusted_kid(client: FlaskClient, ec_client: Client) -> None:
    impostor = Client(iss=ec_client.iss, kid=ec_client.kid)
    assert_refused_401(
        client.post(SERVICE_PATH, json=hook_body(), headers=bearer(impostor.token(SERVICE_URL)))
    )
    assert_still_serving(client, ec_client)


def test_untrusted_issuer(client: FlaskClient, ec_client: Client, untrusted_client: Client) -> None:
    token = untrusted_client.token(SERVICE_URL)
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(client, ec_client)


def test_jku_off_the_allowlist_is_never_fetched(
    client: FlaskClient, ec_client: Client, connections: list[Any]
) -> None:
    for jku in (
        "https://attacker.example.net/jwks.json",
        "http://169.254.169.254/latest/meta-data",
    ):
        stranger = Client(iss=ec_client.iss)
        token = stranger.token(SERVICE_URL, header={"jku": jku})
        assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert connections == []
    assert_still_serving(client, ec_client)


def test_wrong_audience_another_services_url(client: FlaskClient, ec_client: Client) -> None:
    token = ec_client.token(OTHER_SERVICE_URL)
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(client, ec_client)


def test_wrong_audience_plain_http_or_request_host(client: FlaskClient, ec_client: Client) -> None:
    for aud in ("http://cds.example.org" + SERVICE_PATH, "http://localhost" + SERVICE_PATH):
        assert_refused_401(
            client.post(SERVICE_PATH, json=hook_body(), headers=bearer(ec_client.token(aud)))
        )
    assert_still_serving(client, ec_client)


def test_discovery_token_used_on_a_service(client: FlaskClient, ec_client: Client) -> None:
    token = ec_client.token(DISCOVERY_URL)
    assert client.get("/cds-services", headers=bearer(token)).status_code == 200
    assert_refused_401(
        client.post(SERVICE_PATH, json=hook_body(), headers=bearer(ec_client.token(DISCOVERY_URL)))
    )
    assert_still_serving(client, ec_client)


def test_service_token_used_on_its_feedback_endpoint(
    client: FlaskClient, ec_client: Client
) -> None:
    feedback_path = SERVICE_PATH + "/feedback"
    wrong = client.post(
        feedback_path, json={"feedback": []}, headers=bearer(ec_client.token(SERVICE_URL))
    )
    assert_refused_401(wrong)
    right = client.post(
        feedback_path,
        json={"feedback": []},
        headers=bearer(ec_client.token(PUBLIC_BASE + feedback_path)),
    )
    assert right.status_code != 401
    assert_still_serving(client, ec_client)


def test_expired(client: FlaskClient, ec_client: Client) -> None:
    token = ec_client.token(SERVICE_URL, now=time.time() - 3600)
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(client, ec_client)


def test_issued_in_the_future(client: FlaskClient, ec_client: Client) -> None:
    token = ec_client.token(SERVICE_URL, now=time.time() + 3600)
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(client, ec_client)


def test_replayed_jti(client: FlaskClient, ec_client: Client) -> None:
    token = ec_client.token(SERVICE_URL)
    assert client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)).status_code == 200
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    same_jti = ec_client.token(SERVICE_URL, jti=json.loads(_claims(token))["jti"])
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(same_jti)))
    assert_still_serving(client, ec_client)


def test_replay_is_refused_by_another_instance_sharing_the_database(
    app: Flask, app_config: dict[str, Any], ec_client: Client
) -> None:
    token = ec_client.token(SERVICE_URL)
    assert (
        app.test_client().post(SERVICE_PATH, json=hook_body(), headers=bearer(token)).status_code
        == 200
    )
    second_instance = create_app(app_config).test_client()
    assert_refused_401(second_instance.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(second_instance, ec_client)


def test_refusals_are_logged_with_a_reason_and_without_the_token(
    client: FlaskClient, ec_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    token = ec_client.token(OTHER_SERVICE_URL)
    with caplog.at_level(logging.DEBUG):
        assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    reasons = [
        getattr(r, "reason", None)
        for r in caplog.records
        if r.getMessage() == "authentication failed"
    ]
    assert reasons == ["wrong_audience"]
    signature = token.rsplit(".", 1)[1]
    for record in caplog.records:
        text = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert token.split(".")[1] not in text and signature not in text


def _claims(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


# --- bodies: 413 and 400 ------------------------------------------------------------------


def test_oversized_body(client: FlaskClient, ec_client: Client, app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = b'{"hook": "order-select", "padding": "' + b"x" * (limit + 1) + b'"}'
    headers = {**bearer(ec_client.token(SERVICE_URL)), "Content-Type": "application/json"}
    assert client.post(SERVICE_PATH, data=big, headers=headers).status_code == 413
    unauthenticated = client.post(
        SERVICE_PATH, data=big, headers={"Content-Type": "application/json"}
    )
    assert unauthenticated.status_code == 401, "no token: refused before the body is read"
    assert_still_serving(client, ec_client)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json(client: FlaskClient, ec_client: Client, opener: str) -> None:
    depth = 100_000
    closer = "]" if opener == "[" else "}"
    body = opener * depth + "1" + closer * depth
    headers = {**bearer(ec_client.token(SERVICE_URL)), "Content-Type": "application/json"}
    response = client.post(SERVICE_PATH, data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert_still_serving(client, ec_client)


# --- the fhirServer the request names: 412, never contacted --------------------------------


@pytest.mark.parametrize(
    "fhir_server",
    [
        "https://attacker.example.net/fhir",
        "https://10.1.2.3/fhir",
        "http://10.1.2.3/fhir",
        "https://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/fhir",
        "https://[::ffff:169.254.169.254]/fhir",
        "https://user:pass@fhir.example.org/fhir",
    ],
)
def test_fhir_server_off_the_allowlist_is_never_contacted(
    client: FlaskClient, ec_client: Client, connections: list[Any], fhir_server: str
) -> None:
    response = client.post(
        SERVICE_PATH,
        json=needs_the_fhir_server(fhir_server),
        headers=bearer(ec_client.token(SERVICE_URL)),
    )
    assert response.status_code == 412
    assert LENT_TOKEN not in response.get_data(as_text=True)
    assert connections == []
    assert_still_serving(client, ec_client)


@pytest.mark.parametrize(
    "fhir_server",
    ["https://169.254.169.254/fhir", "https://[fe80::1]/fhir", "http://plain.example.org/fhir"],
)
def test_metadata_addresses_and_plain_http_are_refused_even_when_allowlisted(
    app_config: dict[str, Any], ec_client: Client, connections: list[Any], fhir_server: str
) -> None:
    client = create_app({**app_config, "FHIR_ALLOWLIST": [fhir_server]}).test_client()
    response = client.post(
        SERVICE_PATH,
        json=needs_the_fhir_server(fhir_server),
        headers=bearer(ec_client.token(SERVICE_URL)),
    )
    assert response.status_code == 412
    assert connections == []
    assert_still_serving(client, ec_client)


@pytest.fixture
def ehr_and_elsewhere() -> Iterator[tuple[FhirServer, FhirServer]]:
    with FhirServer() as ehr, FhirServer() as elsewhere:
        yield ehr, elsewhere


def test_redirect_to_another_host_never_gets_the_token(
    app_config: dict[str, Any],
    ec_client: Client,
    ehr_and_elsewhere: tuple[FhirServer, FhirServer],
    connections: list[Any],
) -> None:
    ehr, elsewhere = ehr_and_elsewhere
    port = elsewhere.origin.rsplit(":", 1)[1]
    ehr.route("Patient", redirect(f"http://localhost:{port}/fhir/Patient/stolen"))
    ehr.route("Observation", redirect(f"http://localhost:{port}/fhir/Observation"))
    ehr.route("MedicationRequest", redirect(f"http://localhost:{port}/fhir/MedicationRequest"))
    ehr.route("Condition", redirect(f"http://localhost:{port}/fhir/Condition"))
    client = create_app({**app_config, "FHIR_ALLOWLIST": [ehr.base_url]}).test_client()
    response = client.post(
        SERVICE_PATH,
        json=needs_the_fhir_server(ehr.base_url),
        headers=bearer(ec_client.token(SERVICE_URL)),
    )
    assert response.status_code == 412
    assert ehr.requests, "the allowlisted loopback server was asked"
    assert all(r.headers.get("Authorization") == f"Bearer {LENT_TOKEN}" for r in ehr.requests)
    assert elsewhere.requests == []
    assert all(address[0].startswith("127.") or address[0] == "::1" for address in connections)
    assert_still_serving(client, ec_client)


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"alg": ["ES384"]}, {}),
        ({"alg": {"x": 1}}, {}),
        ({"kid": ["k"]}, {}),
        ({"jku": ["https://ehr.example.org/jwks.json"]}, {}),
        ({"typ": "JWE"}, {}),
        ({}, {"iss": ["https://ehr.example.org"]}),
        ({}, {"iss": {"x": 1}}),
        ({}, {"jti": 12345}),
        ({}, {"exp": "tomorrow"}),
        ({}, {"aud": {"url": SERVICE_URL}}),
    ],
)
def test_odd_header_and_claim_types(
    client: FlaskClient, ec_client: Client, header: dict[str, Any], claims: dict[str, Any]
) -> None:
    """Fields with the wrong JSON type: 401, never a 500. Claims are validly signed; an
    odd header is swapped into a valid token (its type is checked before the signature)."""
    aud = claims.pop("aud", SERVICE_URL)
    token = ec_client.token(aud, **claims)
    if header:
        head = {"alg": ec_client.alg, "typ": "JWT", "kid": ec_client.kid, **header}
        _, payload, signature = token.split(".")
        token = f"{b64(head)}.{payload}.{signature}"
    assert_refused_401(client.post(SERVICE_PATH, json=hook_body(), headers=bearer(token)))
    assert_still_serving(client, ec_client)
