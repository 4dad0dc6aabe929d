"""Bad input gets a clear 4xx with an OperationOutcome, never a 500 or a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.cds_checks import assert_operation_outcome

SERVICE = "/cds-services/baclofen-order-sign"


def order_sign_body() -> dict[str, Any]:
    return {
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "patientId": "pt-1",
            "userId": "Practitioner/1",
            "draftOrders": {"resourceType": "Bundle", "entry": []},
        },
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "pt-1", "birthDate": "1970-01-01"}
        },
    }


def test_malformed_json_is_400_with_position(client: FlaskClient) -> None:
    response = client.post(SERVICE, data='{"hook": "order-sign",', content_type="application/json")
    assert response.status_code == 400
    assert_operation_outcome(response.get_json(), mentions="not valid JSON")


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    response = client.post(SERVICE, data=json.dumps(order_sign_body()), content_type="text/plain")
    assert response.status_code == 415
    assert_operation_outcome(response.get_json(), mentions="application/json")


def test_empty_body_is_400(client: FlaskClient) -> None:
    response = client.post(SERVICE, data="", content_type="application/json")
    assert response.status_code == 400
    assert_operation_outcome(response.get_json(), mentions="empty")


def test_unknown_service_is_404(client: FlaskClient) -> None:
    response = client.post("/cds-services/no-such-service", json=order_sign_body())
    assert response.status_code == 404
    assert_operation_outcome(response.get_json(), mentions="no-such-service")


def test_hook_that_does_not_match_the_service_is_400(client: FlaskClient) -> None:
    body = order_sign_body() | {"hook": "patient-view"}
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert_operation_outcome(response.get_json(), mentions="order-sign")


@pytest.mark.parametrize("missing", ["hook", "hookInstance", "context"])
def test_missing_required_field_is_400(client: FlaskClient, missing: str) -> None:
    body = order_sign_body()
    del body[missing]
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert_operation_outcome(response.get_json())


def test_missing_patient_id_is_400_naming_it(client: FlaskClient) -> None:
    body = order_sign_body()
    del body["context"]["patientId"]
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert_operation_outcome(response.get_json(), mentions="patientId")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_rejected(client: FlaskClient, constant: str) -> None:
    raw = json.dumps(order_sign_body()).replace('"pt-1"', constant, 1)
    response = client.post(SERVICE, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert_operation_outcome(response.get_json())


def test_oversized_body_is_413(app_config: dict[str, Any]) -> None:
    from cds_hooks.app import create_app

    app_config["MAX_BODY_BYTES"] = 4096
    client = create_app(app_config).test_client()
    body = order_sign_body()
    body["padding"] = "x" * 5000
    response = client.post(SERVICE, json=body)
    assert response.status_code == 413
    assert_operation_outcome(response.get_json())


def test_deeply_nested_json_is_400_not_500(client: FlaskClient) -> None:
    raw = '{"hook": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post(SERVICE, data=raw, content_type="application/json")
    assert response.status_code in (400, 413)
    assert_operation_outcome(response.get_json())


REQUESTS = Path(__file__).parent / "data" / "requests"


@pytest.mark.parametrize("levels", [300, 1000])
def test_a_draft_order_nested_beyond_the_bound_is_400_at_the_edge(
    client: FlaskClient, levels: int
) -> None:
    """A captured order-sign whose draft order carries a deep array: the parser takes up to
    1,024 levels, but the answer echoes the order and could not be written back (a 500)."""
    captured = json.loads((REQUESTS / "sandbox-order-sign-baclofen10-3tab-daily.json").read_text())
    order = captured["body"]["context"]["draftOrders"]["entry"][0]["resource"]
    order["note"] = "NESTED"
    raw = json.dumps(captured["body"]).replace('"NESTED"', "[" * levels + "]" * levels)
    response = client.post(SERVICE, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert_operation_outcome(response.get_json())
    assert "nested too deeply" in response.get_json()["issue"][0]["diagnostics"]


def test_get_on_a_service_is_405_with_outcome(client: FlaskClient) -> None:
    response = client.get(SERVICE)
    assert response.status_code == 405
    assert_operation_outcome(response.get_json())
    assert "POST" in response.headers["Allow"]


def test_unknown_path_is_404_with_outcome(client: FlaskClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert_operation_outcome(response.get_json())
