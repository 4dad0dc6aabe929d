"""The patient-view service: baclofen already being taken, judged when the chart is opened.

The rules themselves are pinned by the patient-view rows of the scenario table; here: the
discovery entry, a request shaped as the CDS Hooks sandbox sends ``patient-view`` replayed
through the app, the FHIR-server fallback, trust and metrics, and that a patient on no
baclofen is answered without reading the rest of the request.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks.app import create_app
from cds_hooks.discovery import SERVICES_BY_ID, prefetch_templates
from tests.conftest import load_json, sqlite_url
from tests.fhir_server import FhirServer, serve_chart
from tests.scenario_requests import post as cards
from tests.test_metrics import Gained, scrape

PATIENT_VIEW = "baclofen-patient-view"
SANDBOX_ORDER_SELECT = "requests/sandbox-order-select-baclofen10-2tab-tid-spasticity.json"
SANDBOX_PREFETCH_KEYS = {
    "patient": "patient",
    "egfr": "renalLabs",
    "activeMeds": "activeMedications",
}
"""The captured call's prefetch keys (its capture harness advertised these) and ours."""


def sandbox_patient_view(baclofen_signed: bool = False) -> dict[str, Any]:
    """A ``patient-view`` call as the sandbox sends it (cds-hooks-protocol.md §4.1: body keys
    hookInstance, hook, fhirServer, context, prefetch in that order; context is patientId and
    userId only; prefetch under our discovery keys, those whose fetch failed left out),
    built from the patient, labs and active list of a captured sandbox order-select call.

    ``baclofen_signed``: the captured call's baclofen draft (10 mg tablets, 2 three times a
    day) as signed since, i.e. on the active list with status ``active``.
    """
    captured = load_json(SANDBOX_ORDER_SELECT)["body"]
    prefetch = {
        ours: captured["prefetch"][theirs] for theirs, ours in SANDBOX_PREFETCH_KEYS.items()
    }
    if baclofen_signed:
        prefetch = copy.deepcopy(prefetch)
        (draft,) = (e["resource"] for e in captured["context"]["draftOrders"]["entry"])
        signed = {**draft, "status": "active", "id": "medrx-baclofen-1"}
        medications = prefetch["activeMedications"]
        medications["entry"].append({"resource": signed, "search": {"mode": "match"}})
        medications["total"] += 1
    return {
        "hookInstance": captured["hookInstance"],
        "hook": "patient-view",
        "fhirServer": captured["fhirServer"],
        "context": {
            "patientId": captured["context"]["patientId"],
            "userId": captured["context"]["userId"],
        },
        "prefetch": prefetch,
    }


def test_discovery_lists_patient_view_with_every_prefetch_template(client: FlaskClient) -> None:
    services = client.get("/cds-services").get_json()["services"]
    (entry,) = (s for s in services if s["hook"] == "patient-view")
    assert entry["id"] == PATIENT_VIEW
    assert entry["prefetch"] == prefetch_templates()
    assert "_include=MedicationRequest:medication" in entry["prefetch"]["activeMedications"]
    assert "status=active" in entry["prefetch"]["activeMedications"]
    assert entry["title"] and entry["description"] and entry["usageRequirements"]


def test_captured_discovery_shape_the_sandbox_needs(client: FlaskClient) -> None:
    """The sandbox keys services by id and drops a discovery with no services (protocol
    note §1): every id distinct, patient-view among them."""
    services = client.get("/cds-services").get_json()["services"]
    assert len({s["id"] for s in services}) == len(services) == len(SERVICES_BY_ID)
    assert {s["hook"] for s in services} >= {"patient-view", "order-select", "order-sign"}


def test_sandbox_patient_view_for_a_patient_on_no_baclofen_is_silent(client: FlaskClient) -> None:
    """The captured patient (eGFR 28, on oxycodone and lorazepam) takes no baclofen."""
    assert cards(client, sandbox_patient_view()) == []


def test_sandbox_patient_view_with_baclofen_signed(client: FlaskClient) -> None:
    """The same patient once the baclofen was signed (written on the capture day, so on it
    for under 90 days): her opioid and benzodiazepine predate the baclofen order, which the
    ordering check could have said, so a reminder at info; her only eGFR (28) is older than
    the 90-day look-back at 85, and the 90 days of therapy are not up, so no kidney card."""
    (card,) = cards(client, sandbox_patient_view(baclofen_signed=True))
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("cns-depressant", "info")
    assert "oxycodone" in card["detail"] and "lorazepam" in card["detail"]
    assert "suggestions" not in card  # nothing to take: no draft to remove


def test_sandbox_patient_view_long_term_with_a_stale_egfr(client: FlaskClient) -> None:
    """Written long ago: 60 mg/day is above the 20 mg/day ceiling of her last known eGFR 28,
    which is stale, so the kidney-check card is a warning with the creatinine order and the
    adjusted dose as an update of the active order."""
    body = sandbox_patient_view(baclofen_signed=True)
    order = body["prefetch"]["activeMedications"]["entry"][-1]["resource"]
    order["authoredOn"] = "2025-06-01"
    by_topic = {c["source"]["topic"]["code"]: c for c in cards(client, body)}
    stale = by_topic["renal-function-unknown"]
    assert stale["indicator"] == "warning"
    assert "eGFR 28" in stale["summary"]
    labels = [s["label"] for s in stale["suggestions"]]
    assert "Order serum creatinine" in labels
    (update,) = (
        s["actions"][0] for s in stale["suggestions"] if s["actions"][0]["type"] == "update"
    )
    assert update["resource"]["id"] == "medrx-baclofen-1"
    assert update["resource"]["status"] == "active"
    assert update["description"].startswith("Update the active baclofen order")


def test_patient_view_is_silent_without_reading_the_patient(client: FlaskClient) -> None:
    """On no baclofen nothing else of the request is read: a Patient that would be refused
    (412) for an order hook does not matter here."""
    body = sandbox_patient_view()
    body["prefetch"]["patient"] = {"resourceType": "OperationOutcome", "issue": []}
    del body["fhirServer"]
    assert cards(client, body) == []
    body["prefetch"]["activeMedications"]["entry"].append(
        {"resource": {"resourceType": "MedicationRequest", "status": "active"}}
    )  # a drug that cannot be identified could be baclofen: the full reading, and its 412
    assert client.post(f"/cds-services/{PATIENT_VIEW}", json=body).status_code == 412


def test_patient_view_refuses_a_request_without_a_patient(client: FlaskClient) -> None:
    body = sandbox_patient_view()
    del body["context"]["patientId"]
    response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.fixture
def ehr() -> Any:
    with FhirServer() as server:
        yield server


def _fallback_client(app_config: dict[str, Any], ehr: FhirServer) -> FlaskClient:
    return create_app({**app_config, "FHIR_ALLOWLIST": [ehr.base_url]}).test_client()


def _chart(with_baclofen: bool) -> list[dict[str, Any]]:
    body = sandbox_patient_view(baclofen_signed=with_baclofen)
    resources = [body["prefetch"]["patient"]]
    for key in ("renalLabs", "activeMedications"):
        resources += [e["resource"] for e in body["prefetch"][key]["entry"]]
    return resources


@pytest.mark.parametrize("with_baclofen", [False, True])
def test_patient_view_fetches_the_active_list_it_was_not_sent(
    app_config: dict[str, Any], ehr: FhirServer, with_baclofen: bool
) -> None:
    """No prefetch at all: the active list (and, for a patient on baclofen, the rest) comes
    from the EHR's FHIR server, with the bearer token."""
    chart = _chart(with_baclofen)
    for resource in chart:
        resource.setdefault("subject", {"reference": "Patient/baclofen-pt-1"})
    serve_chart(ehr, chart)
    client = _fallback_client(app_config, ehr)
    body = sandbox_patient_view()
    body["prefetch"] = {}
    body["fhirServer"] = ehr.base_url
    body["fhirAuthorization"] = {"access_token": "t0k", "token_type": "Bearer"}
    got = cards(client, body)
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in got] == (
        [("cns-depressant", "info")] if with_baclofen else []
    )
    searched = {r.path.split("?")[0].rsplit("/", 1)[-1] for r in ehr.requests}
    assert "MedicationRequest" in searched
    assert all(r.headers.get("Authorization") == "Bearer t0k" for r in ehr.requests)


def test_patient_view_needs_a_trusted_caller(tmp_path: Path) -> None:
    app = create_app(
        {
            "TESTING": True,
            "ENV": "development",
            "AUTH_MODE": "sandbox",
            "PUBLIC_BASE_URL": "http://127.0.0.1:8092",
            "DATABASE_URL": sqlite_url(tmp_path),
        }
    )
    response = app.test_client().post(
        f"/cds-services/{PATIENT_VIEW}", data=json.dumps(sandbox_patient_view())
    )
    assert response.status_code == 401


def test_patient_view_calls_are_counted_like_the_order_hooks(client: FlaskClient) -> None:
    before = scrape(client)
    cards(client, sandbox_patient_view())
    cards(client, sandbox_patient_view(baclofen_signed=True))
    gained = Gained(before, scrape(client))
    assert gained("cds_evaluations_total", service=PATIENT_VIEW, result="no_cards") == 1
    assert gained("cds_evaluations_total", service=PATIENT_VIEW, result="cards") == 1
    assert (
        gained("cds_cards_total", service=PATIENT_VIEW, topic="cns-depressant", indicator="info")
        == 1
    )


def test_patient_view_calls_are_logged_like_the_order_hooks(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One summary line per call with the service, hook and card count; the patient's id and
    drugs stay out of it."""
    with caplog.at_level(logging.INFO, logger="cds_hooks.request"):
        cards(client, sandbox_patient_view(baclofen_signed=True))
    (line,) = (r for r in caplog.records if r.getMessage() == "request handled")
    assert (line.service, line.hook, line.card_count) == (PATIENT_VIEW, "patient-view", 1)
    assert line.topics == ["cns-depressant"]
    text = json.dumps({k: str(v) for k, v in vars(line).items()})
    assert "baclofen-pt-1" not in text and "oxycodone" not in text.lower()


def test_patient_view_without_a_medication_list_is_silent(client: FlaskClient) -> None:
    """No active list from prefetch and no FHIR server to ask: nothing says the patient
    takes baclofen, and a card saying the list is missing would follow every chart opened."""
    body = sandbox_patient_view()
    del body["prefetch"]["activeMedications"], body["fhirServer"]
    assert cards(client, body) == []
