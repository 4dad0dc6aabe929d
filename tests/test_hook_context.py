"""Hook request bodies as real clients send them, turned into the HookRequest the engine sees."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks.discovery import SERVICES, ServiceDefinition
from cds_hooks.errors import BadRequest
from cds_hooks.hook_context import parse_hook_request
from cds_hooks.model import RXNORM, FhirVersion, HookRequest, MedicationOrder

DATA = Path(__file__).parent / "data"


def load_json(relative: str) -> Any:
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


SERVICE_BY_HOOK = {service.hook: service for service in SERVICES}
CAPTURES = sorted(
    path.name
    for path in (DATA / "requests").glob("*.json")
    if isinstance(load_json(f"requests/{path.name}"), dict)
    and load_json(f"requests/{path.name}").get("body")
)
ORDER_SELECT = "sandbox-order-select-baclofen10-2tab-tid-spasticity.json"
ORDER_SIGN = "sandbox-order-sign-baclofen10-3tab-daily.json"


def captured_body(name: str) -> dict[str, Any]:
    body = load_json(f"requests/{name}")["body"]
    assert isinstance(body, dict)
    return body


def parse(body: Any, hook: str | None = None) -> HookRequest:
    return parse_hook_request(body, SERVICE_BY_HOOK[hook or body["hook"]])


def only_dose(
    order: MedicationOrder,
) -> tuple[float, str | None, int | None, float | None, str | None]:
    (dosage,) = order.dosages
    assert dosage.dose is not None and dosage.timing is not None
    timing = dosage.timing
    return dosage.dose.value, dosage.dose.units, timing.frequency, timing.period, timing.period_unit


def baclofen_draft(resource_id: str | None = "request-123", **changes: Any) -> dict[str, Any]:
    resource = copy.deepcopy(
        captured_body(ORDER_SELECT)["context"]["draftOrders"]["entry"][0]["resource"]
    )
    if resource_id is None:
        resource.pop("id")
    else:
        resource["id"] = resource_id
    resource.update(changes)
    return resource


def oxycodone_draft() -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "oxy-draft",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/baclofen-pt-1"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "1049621", "display": "oxycodone 5 MG"}]
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
    }


def order_select(*resources: Any, selections: list[str] | None = None) -> dict[str, Any]:
    body = captured_body(ORDER_SELECT)
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "entry": [{"resource": resource} for resource in resources],
    }
    if selections is not None:
        body["context"]["selections"] = selections
    return body


@pytest.mark.parametrize("name", CAPTURES)
def test_every_captured_request_parses(name: str) -> None:
    body = captured_body(name)
    request = parse(body)
    assert request.hook == body["hook"]
    assert request.service_id == SERVICE_BY_HOOK[body["hook"]].id
    assert request.hook_instance == body["hookInstance"]
    assert request.patient_id == body["context"]["patientId"]
    assert request.fhir_server == body["fhirServer"]
    assert request.fhir_authorization is None
    assert request.prefetch == body.get("prefetch", {})
    assert len(request.draft_orders) == 1
    assert request.selected == (request.draft_orders[0].reference,)
    assert request.orders_under_review == request.draft_orders


def test_sandbox_order_select_baclofen_2_tablets_tid() -> None:
    request = parse(captured_body(ORDER_SELECT))
    (order,) = request.orders_under_review
    assert order.reference == "MedicationRequest/request-123"
    assert order.fhir_version is FhirVersion.R4
    assert order.status == "draft" and order.intent == "order"
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197391",)
    assert order.medication_label == "Baclofen 10 MG Oral Tablet"
    assert only_dose(order) == (2.0, "{pill}", 3, 1.0, "d")
    assert order.authored_on == "2026-11-22"
    assert order.problems == ()
    assert request.user_id == "Practitioner/COREPRACTITIONER1"
    assert set(request.prefetch) == {"patient", "egfr", "activeMeds"}


@pytest.mark.parametrize(
    "name", [ORDER_SIGN, "sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json"]
)
def test_sandbox_order_sign_three_tablets_daily(name: str) -> None:
    (order,) = parse(captured_body(name)).orders_under_review
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197391",)
    assert only_dose(order) == (3.0, "{pill}", 1, 1.0, "d")
    assert order.problems == ()


@pytest.mark.parametrize(
    "name",
    [
        "sandbox-order-select-no-medication-yet.json",
        "legacy-medication-prescribe-no-medication-yet.json",
    ],
)
def test_draft_without_a_drug_yet_is_read_without_complaint(name: str) -> None:
    (order,) = parse(captured_body(name)).orders_under_review
    assert order.medication is None
    assert order.dosages == ()
    assert order.status == "draft"
    assert order.problems == ()


def test_legacy_medication_prescribe_stu3_odt() -> None:
    request = parse(captured_body("legacy-medication-prescribe-baclofen10odt.json"))
    (order,) = request.orders_under_review
    assert order.reference == "MedicationRequest/#0"
    assert order.fhir_version is FhirVersion.STU3
    assert order.medication is not None and order.medication.codes(RXNORM) == ("617299",)
    assert only_dose(order) == (1.0, "{pill}", 1, 1.0, "d")
    timing = order.dosages[0].timing
    assert timing is not None
    assert (timing.bounds_start, timing.bounds_end) == ("2026-11-22", "2026-12-22")
    assert order.problems == ()
    assert request.user_id == "Practitioner/example"
    assert request.prefetch["patient"]["response"] == {"status": "200 OK"}


def test_legacy_top_level_patient_stands_in_for_patient_id() -> None:
    body = captured_body("legacy-medication-prescribe-baclofen10odt.json")
    del body["context"]["patientId"]
    body["patient"] = "Patient/baclofen-pt-1"
    assert parse(body).patient_id == "baclofen-pt-1"


def test_medication_prescribe_1_0_bundle_of_dstu2_orders_from_2018_sandbox() -> None:
    body = {
        "hookInstance": "8cb2b4f5-86d7-4340-9880-fa83e1db99de",
        "hook": "medication-prescribe",
        "fhirServer": "https://api.hspconsortium.org/cdshooksdstu2/open",
        "user": "Practitioner/COREPRACTITIONER1",
        "patient": "SMART-1288992",
        "context": {
            "patientId": "SMART-1288992",
            "user": "Practitioner/COREPRACTITIONER1",
            "medications": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "MedicationOrder",
                            "dateWritten": "2026-11-22",
                            "status": "draft",
                            "patient": {"reference": "Patient/SMART-1288992"},
                            "dosageInstruction": [
                                {
                                    "doseQuantity": {
                                        "value": 2,
                                        "system": "http://unitsofmeasure.org",
                                        "code": "{pill}",
                                    },
                                    "timing": {
                                        "repeat": {"frequency": 3, "period": 1, "periodUnits": "d"}
                                    },
                                }
                            ],
                            "medicationCodeableConcept": {
                                "text": "Baclofen 10 MG Oral Tablet",
                                "coding": [{"system": RXNORM, "code": "197391"}],
                            },
                        }
                    }
                ],
            },
        },
    }
    request = parse(body)
    (order,) = request.orders_under_review
    assert order.reference == "MedicationOrder/#0"
    assert order.fhir_version is FhirVersion.DSTU2
    assert only_dose(order) == (2.0, "{pill}", 3, 1.0, "d")
    assert order.authored_on == "2026-11-22"
    assert request.user_id == "Practitioner/COREPRACTITIONER1"


def test_unselected_drafts_are_co_medications() -> None:
    body = order_select(
        baclofen_draft(), oxycodone_draft(), selections=["MedicationRequest/request-123"]
    )
    request = parse(body)
    assert [o.reference for o in request.orders_under_review] == ["MedicationRequest/request-123"]
    (other,) = request.other_drafts
    assert other.medication is not None and other.medication.codes(RXNORM) == ("1049621",)
    assert other.dosages[0].timing is not None and other.dosages[0].timing.period_unit == "h"


def test_selection_naming_no_draft_evaluates_nothing() -> None:
    request = parse(order_select(baclofen_draft(), selections=["MedicationRequest/elsewhere"]))
    assert request.selected == ()
    assert len(request.draft_orders) == 1


def test_selection_by_bare_id_or_absolute_url_still_matches() -> None:
    for selection in ("request-123", "http://ehr.example/fhir/MedicationRequest/request-123"):
        request = parse(order_select(baclofen_draft(), selections=[selection]))
        assert request.selected == ("MedicationRequest/request-123",)


def test_order_sign_evaluates_every_draft_and_ignores_selections() -> None:
    body = order_select(baclofen_draft(), oxycodone_draft(), selections=["MedicationRequest/x"])
    body["hook"] = "order-sign"
    request = parse(body)
    assert request.selected == ("MedicationRequest/request-123", "MedicationRequest/oxy-draft")


def test_non_medication_orders_are_skipped() -> None:
    service_request = {
        "resourceType": "ServiceRequest",
        "id": "ct-head",
        "status": "draft",
        "intent": "order",
        "code": {"text": "CT head"},
    }
    body = order_select(
        service_request,
        baclofen_draft(),
        selections=["ServiceRequest/ct-head", "MedicationRequest/request-123"],
    )
    request = parse(body)
    assert [o.reference for o in request.draft_orders] == ["MedicationRequest/request-123"]
    assert request.selected == ("MedicationRequest/request-123",)


def test_drafts_without_id_get_stable_positional_references() -> None:
    body = order_select(oxycodone_draft(), baclofen_draft(resource_id=None), selections=[])
    body["hook"] = "order-sign"
    request = parse(body)
    assert request.selected == ("MedicationRequest/oxy-draft", "MedicationRequest/#1")
    assert parse(body).selected == request.selected


@pytest.mark.parametrize("shape", ["array", "lone resource"])
def test_drafts_outside_a_bundle_are_still_checked(shape: str) -> None:
    body = captured_body(ORDER_SIGN)
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    body["context"]["draftOrders"] = [draft] if shape == "array" else draft
    (order,) = parse(body).orders_under_review
    assert order.reference == "MedicationRequest/request-123"
    assert only_dose(order) == (3.0, "{pill}", 1, 1.0, "d")


def test_bundled_medication_resolves_medication_reference() -> None:
    draft = baclofen_draft()
    del draft["medicationCodeableConcept"]
    draft["medicationReference"] = {"reference": "Medication/bac10", "display": "baclofen"}
    body = order_select(draft, selections=["MedicationRequest/request-123"])
    body["context"]["draftOrders"]["entry"].append(
        {
            "resource": {
                "resourceType": "Medication",
                "id": "bac10",
                "code": {"coding": [{"system": RXNORM, "code": "197391"}]},
                "form": {"text": "tablet"},
            }
        }
    )
    (order,) = parse(body).orders_under_review
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197391",)
    assert order.product is not None and order.product.form is not None
    assert order.product.form.text == "tablet"
    assert order.problems == ()


def test_unreadable_baclofen_draft_is_kept_with_problems() -> None:
    broken = baclofen_draft(
        dosageInstruction=[{"doseAndRate": [{"doseQuantity": {"value": "two"}}]}]
    )
    body = order_select(broken, "Baclofen 10 mg three times daily", {}, selections=[])
    body["hook"] = "order-sign"
    request = parse(body)
    first, text_only, empty = request.orders_under_review
    assert first.medication is not None and first.medication.codes(RXNORM) == ("197391",)
    assert first.dosages[0].dose is None
    assert first.problems
    assert all("two" not in problem for problem in first.problems)
    assert text_only.medication is not None
    assert text_only.medication.text == "Baclofen 10 mg three times daily"
    assert text_only.problems and empty.problems


def test_fhir_authorization_is_read_and_kept_out_of_repr() -> None:
    body = captured_body(ORDER_SELECT)
    body["fhirAuthorization"] = {
        "access_token": "secret-token-value",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "client-id",
        "patient": "baclofen-pt-1",
    }
    request = parse(body)
    assert request.fhir_authorization is not None
    assert request.fhir_authorization.access_token == "secret-token-value"
    assert request.fhir_authorization.expires_in == 300
    assert "secret-token-value" not in repr(request)
    assert "secret-token-value" not in repr(request.fhir_authorization)


def _without(path: str) -> Any:
    def change(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        del node[leaf]

    return change


def _setting(path: str, value: Any) -> Any:
    def change(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        node[leaf] = value

    return change


BAD_REQUESTS = [
    ("order-select", _without("hook"), "hook"),
    ("order-select", _setting("hook", 7), "hook"),
    ("order-select", _without("hookInstance"), "hookInstance"),
    ("order-select", _without("context"), "context"),
    ("order-select", _setting("context", []), "context"),
    ("order-select", _without("context.patientId"), "context.patientId"),
    ("order-select", _setting("context.patientId", 42), "context.patientId"),
    ("order-select", _without("context.draftOrders"), "context.draftOrders"),
    ("order-select", _setting("context.draftOrders", "Bundle"), "context.draftOrders"),
    ("order-select", _without("context.selections"), "context.selections"),
    ("order-select", _setting("context.selections", "MedicationRequest/1"), "context.selections"),
    ("order-select", _setting("context.userId", ["x"]), "context.userId"),
    ("order-select", _setting("prefetch", []), "prefetch"),
    ("order-select", _setting("fhirServer", 1), "fhirServer"),
    ("order-select", _setting("fhirAuthorization", "t"), "fhirAuthorization"),
    (
        "order-select",
        _setting("fhirAuthorization", {"access_token": "t", "expires_in": "300"}),
        "fhirAuthorization.expires_in",
    ),
    ("order-sign", _without("context.draftOrders"), "context.draftOrders"),
]


@pytest.mark.parametrize(("hook", "change", "expression"), BAD_REQUESTS)
def test_malformed_requests_are_refused(hook: str, change: Any, expression: str) -> None:
    body = captured_body(ORDER_SELECT if hook == "order-select" else ORDER_SIGN)
    change(body)
    with pytest.raises(BadRequest) as refused:
        parse_hook_request(body, SERVICE_BY_HOOK[hook])
    assert refused.value.expression == expression


def test_fhir_authorization_needs_fhir_server_and_token() -> None:
    body = captured_body(ORDER_SELECT)
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer"}
    del body["fhirServer"]
    with pytest.raises(BadRequest) as refused:
        parse(body)
    assert refused.value.expression == "fhirServer"
    body = captured_body(ORDER_SELECT)
    body["fhirAuthorization"] = {"token_type": "Bearer"}
    with pytest.raises(BadRequest) as refused:
        parse(body)
    assert refused.value.expression == "fhirAuthorization.access_token"


def test_medication_prescribe_needs_medications() -> None:
    body = captured_body("legacy-medication-prescribe-baclofen10odt.json")
    del body["context"]["medications"]
    with pytest.raises(BadRequest) as refused:
        parse(body)
    assert refused.value.expression == "context.medications"


def _service(hook: str) -> ServiceDefinition:
    return SERVICE_BY_HOOK[hook]


def test_wrong_hook_is_refused_over_http_with_operation_outcome(client: FlaskClient) -> None:
    body = captured_body(ORDER_SIGN)
    response = client.post(f"/cds-services/{_service('order-select').id}", json=body)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["expression"] == ["hook"]
    assert "answers the order-select hook; this request is order-sign" in issue["diagnostics"]


@pytest.mark.parametrize("body", [[1, 2], "text", {"hook": "order-select"}])
def test_non_object_or_incomplete_body_is_400_over_http(client: FlaskClient, body: Any) -> None:
    response = client.post(f"/cds-services/{_service('order-select').id}", json=body)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_junk_draft_orders_never_fail_the_call_over_http(client: FlaskClient) -> None:
    body = order_select(
        baclofen_draft(dosageInstruction={"timing": "tid"}), 17, None, selections=["request-123"]
    )
    response = client.post(f"/cds-services/{_service('order-select').id}", json=body)
    assert response.status_code == 200
    assert "cards" in response.get_json()
