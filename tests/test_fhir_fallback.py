"""Fetching what the client did not prefetch from a real FHIR server on loopback.

The server misbehaves in every way an EHR's can (down, slow, 401, 500, garbage,
endless pages, redirects elsewhere, huge bodies); the hook call must still come back,
name the gaps, answer 412 only when the Patient itself is missing, and never hand the
bearer token to any other host.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks import fhir_client
from cds_hooks.errors import PreconditionFailed
from cds_hooks.fhir_client import FetchRecord, check_fhir_server
from cds_hooks.model import (
    DataKind,
    FhirAuthorization,
    FhirVersion,
    HookRequest,
    MedicationOrder,
    PatientSnapshot,
)
from cds_hooks.snapshot import assemble_snapshot
from tests.conftest import DATA, sqlite_url
from tests.fhir_server import (
    FhirServer,
    Recorded,
    Reply,
    closed_port_url,
    garbage,
    make_settings,
    ok,
    operation_outcome,
    oversize,
    redirect,
    searchset,
    serve_chart,
    slow,
    status,
)

PATIENT_ID = "pt-1?x=y&z"
"""Deliberately needs URL-encoding (a hostile id must not add search parameters)."""
TOKEN = "secret-token-abc"
PATIENT = {
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "birthDate": "1941-03-02",
    "gender": "female",
}
EGFR = {
    "resourceType": "Observation",
    "id": "egfr-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
    "effectiveDateTime": "2026-10-01T08:00:00Z",
    "valueQuantity": {
        "value": 37,
        "unit": "mL/min/{1.73_m2}",
        "system": "http://unitsofmeasure.org",
    },
}
WEIGHT = {
    "resourceType": "Observation",
    "id": "wt-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "effectiveDateTime": "2026-10-01T08:00:00Z",
    "valueQuantity": {
        "value": 61,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
}
LORAZEPAM = {
    "resourceType": "MedicationRequest",
    "id": "lzp-1",
    "status": "active",
    "intent": "order",
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "197901",
                "display": "lorazepam 1 MG Oral Tablet",
            }
        ],
        "text": "lorazepam 1 MG Oral Tablet",
    },
}
CONDITION = {
    "resourceType": "Condition",
    "id": "ckd-1",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "433144002"}]},
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
}


STANDARD_LOG_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def medication(number: int) -> dict[str, Any]:
    return {**LORAZEPAM, "id": f"lzp-{number}"}


def observations(request: Recorded) -> Reply:
    """Renal or weight search, told apart by the LOINC codes asked for."""
    codes = ",".join(request.query.get("code", []))
    return ok(searchset([WEIGHT] if "29463-7" in codes else [EGFR]))


def serve_ehr(server: FhirServer) -> None:
    server.route(f"Patient/{PATIENT_ID}", ok(PATIENT))
    server.route("Observation", observations)
    server.route("MedicationRequest", ok(searchset([LORAZEPAM])))
    server.route("Condition", ok(searchset([CONDITION])))


def hook_request(
    server_url: str | None,
    prefetch: Mapping[str, Any] | None = None,
    token: str | None = TOKEN,
    drafts: Sequence[MedicationOrder] = (),
) -> HookRequest:
    return HookRequest(
        hook="order-sign",
        hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        service_id="baclofen-order-sign",
        patient_id=PATIENT_ID,
        fhir_server=server_url,
        fhir_authorization=FhirAuthorization(access_token=token) if token else None,
        draft_orders=tuple(drafts),
        selected=tuple(d.reference for d in drafts),
        prefetch=dict(prefetch or {}),
    )


@pytest.fixture
def server() -> Iterator[FhirServer]:
    with FhirServer() as fhir_server:
        yield fhir_server


@pytest.fixture
def elsewhere() -> Iterator[FhirServer]:
    """Another host, which must never see our requests or the token."""
    with FhirServer() as other:
        other.route("", ok(searchset([EGFR])))
        yield other


def snapshot_from(
    server: FhirServer, prefetch: Mapping[str, Any] | None = None, **settings: Any
) -> PatientSnapshot:
    return assemble_snapshot(
        hook_request(server.base_url, prefetch), make_settings([server.base_url], **settings)
    )


def test_absent_prefetch_is_fetched_from_the_server_with_the_token(server: FhirServer) -> None:
    serve_ehr(server)
    snapshot = snapshot_from(server)
    assert snapshot.unavailable == frozenset()
    assert snapshot.patient.id == PATIENT_ID
    assert snapshot.patient.birth_date is not None
    assert {o.id for o in snapshot.observations} == {"egfr-1", "wt-1"}
    assert [m.reference for m in snapshot.medications] == ["MedicationRequest/lzp-1"]
    assert [c.id for c in snapshot.conditions] == ["ckd-1"]
    assert len(server.requests) == 5
    for request in server.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Accept"] == "application/fhir+json"
    assert server.requests_to("Patient/pt-1%3Fx%3Dy%26z")
    for search in server.requests_to("Observation"):
        assert search.query["patient"] == [PATIENT_ID]


def test_without_a_token_the_open_server_is_still_asked(server: FhirServer) -> None:
    serve_ehr(server)
    request = hook_request(server.base_url, token=None)
    snapshot = assemble_snapshot(request, make_settings([server.base_url]))
    assert snapshot.unavailable == frozenset()
    assert all("Authorization" not in r.headers for r in server.requests)


def test_patient_missing_on_the_server_is_412(server: FhirServer) -> None:
    serve_ehr(server)
    server.route(f"Patient/{PATIENT_ID}", status(404))
    with pytest.raises(PreconditionFailed) as error:
        snapshot_from(server)
    assert error.value.status == 412
    assert "Patient could not be obtained" in error.value.message


def test_patient_of_another_id_is_not_accepted(server: FhirServer) -> None:
    serve_ehr(server)
    server.route(f"Patient/{PATIENT_ID}", ok({**PATIENT, "id": "someone-else"}))
    with pytest.raises(PreconditionFailed):
        snapshot_from(server)


def test_server_down_with_patient_prefetched_evaluates_with_every_gap() -> None:
    url = closed_port_url()
    request = hook_request(url, {"patient": PATIENT})
    snapshot = assemble_snapshot(request, make_settings([url]))
    assert snapshot.patient.id == PATIENT_ID
    assert snapshot.unavailable == {
        DataKind.RENAL_LABS,
        DataKind.WEIGHT,
        DataKind.MEDICATIONS,
        DataKind.CONDITIONS,
    }


def test_server_down_and_no_patient_prefetch_is_412() -> None:
    url = closed_port_url()
    with pytest.raises(PreconditionFailed):
        assemble_snapshot(hook_request(url), make_settings([url]))


def test_labs_500_is_recorded_as_a_gap_not_as_normal(server: FhirServer) -> None:
    serve_ehr(server)
    server.route("Observation", status(500))
    snapshot = snapshot_from(server)
    assert snapshot.unavailable == {DataKind.RENAL_LABS, DataKind.WEIGHT}
    assert snapshot.observations == ()
    assert snapshot.medications


@pytest.mark.parametrize(
    "reply",
    [
        status(401),
        status(403),
        status(503),
        garbage(),
        ok(operation_outcome("search failed")),
        ok(PATIENT),
        ok(["not", "a", "resource"]),
        oversize(20_000),
        oversize(20_000, declare_length=False),
    ],
    ids=[
        "401",
        "403",
        "503",
        "garbage",
        "operation-outcome",
        "wrong-resource-type",
        "json-array",
        "oversize-declared",
        "oversize-streamed",
    ],
)
def test_a_broken_lab_answer_is_a_gap(server: FhirServer, reply: Reply) -> None:
    serve_ehr(server)
    server.route("Observation", reply)
    snapshot = snapshot_from(server, FHIR_MAX_RESPONSE_BYTES=10_000)
    assert DataKind.RENAL_LABS in snapshot.unavailable
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_a_prefetched_null_is_not_fetched_and_not_a_gap(server: FhirServer) -> None:
    serve_ehr(server)
    snapshot = snapshot_from(server, {"patient": PATIENT, "renalLabs": None})
    assert DataKind.RENAL_LABS not in snapshot.unavailable
    codes = [",".join(r.query.get("code", [])) for r in server.requests_to("Observation")]
    assert codes and all("33914-3" not in c for c in codes)


def test_a_prefetched_operation_outcome_is_fetched_instead(server: FhirServer) -> None:
    serve_ehr(server)
    snapshot = snapshot_from(server, {"patient": PATIENT, "renalLabs": operation_outcome()})
    assert DataKind.RENAL_LABS not in snapshot.unavailable
    assert "egfr-1" in {o.id for o in snapshot.observations}


def test_pagination_is_bounded_and_an_unfinished_list_is_a_gap(server: FhirServer) -> None:
    serve_ehr(server)
    pages = iter(range(1, 1000))

    def endless(request: Recorded) -> Reply:
        page = next(pages)
        return ok(
            searchset([medication(page)], f"{server.base_url}/MedicationRequest?page={page + 1}")
        )

    server.route("MedicationRequest", endless)
    snapshot = snapshot_from(server, FHIR_MAX_PAGES=3)
    assert len(server.requests_to("MedicationRequest")) == 3
    assert len(snapshot.medications) == 3
    assert DataKind.MEDICATIONS in snapshot.unavailable


def test_all_pages_are_read_when_few(server: FhirServer) -> None:
    serve_ehr(server)

    def two_pages(request: Recorded) -> Reply:
        if request.query.get("page") == ["2"]:
            return ok(searchset([medication(2)]))
        return ok(searchset([medication(1)], f"{server.base_url}/MedicationRequest?page=2"))

    server.route("MedicationRequest", two_pages)
    snapshot = snapshot_from(server)
    assert {m.reference for m in snapshot.medications} == {
        "MedicationRequest/lzp-1",
        "MedicationRequest/lzp-2",
    }
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_a_relative_next_link_is_read_from_the_same_server(server: FhirServer) -> None:
    serve_ehr(server)

    def two_pages(request: Recorded) -> Reply:
        if request.query.get("page") == ["2"]:
            return ok(searchset([medication(2)]))
        return ok(searchset([medication(1)], "MedicationRequest?page=2"))

    server.route("MedicationRequest", two_pages)
    snapshot = snapshot_from(server)
    assert len(snapshot.medications) == 2
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_a_synthea_chart_is_fetched_when_nothing_was_prefetched(server: FhirServer) -> None:
    """A realistic (synthetic) chart: diazepam among the medications, epilepsy, an eGFR."""
    bundle = json.loads(
        (DATA / "synthea/Adalberto_Hartmann_44ec4447-9e2c-4eb9-bd4f-0bdb416b806e.json").read_text()
    )
    resources = [entry["resource"] for entry in bundle["entry"]]
    serve_chart(server, resources)
    patient_id = "ba18818d-faef-44cd-9744-b12d8973d402"
    request = HookRequest(
        hook="order-sign",
        hook_instance="i-1",
        service_id="baclofen-order-sign",
        patient_id=patient_id,
        fhir_server=server.base_url,
        fhir_authorization=FhirAuthorization(access_token=TOKEN),
    )
    snapshot = assemble_snapshot(request, make_settings([server.base_url]))
    assert snapshot.unavailable == frozenset()
    assert snapshot.patient.birth_date == date(1949, 11, 29)
    labels = " ".join(m.medication_label or "" for m in snapshot.medications).lower()
    assert "diazepam" in labels
    assert any(o.code.codes("http://loinc.org") == ("33914-3",) for o in snapshot.observations)
    assert any("epilep" in (c.code.label or "").lower() for c in snapshot.conditions)


def test_a_next_link_to_another_host_is_not_followed(
    server: FhirServer, elsewhere: FhirServer
) -> None:
    serve_ehr(server)
    next_url = f"{elsewhere.base_url}/MedicationRequest?page=2"
    server.route("MedicationRequest", ok(searchset([medication(1)], next_url)))
    settings = make_settings([server.base_url, elsewhere.base_url])
    snapshot = assemble_snapshot(hook_request(server.base_url), settings)
    assert elsewhere.requests == []
    assert DataKind.MEDICATIONS in snapshot.unavailable


def test_a_prefetched_next_page_is_read_from_the_server(server: FhirServer) -> None:
    serve_ehr(server)
    server.route("MedicationRequest", ok(searchset([medication(2)])))
    first = searchset([medication(1)], f"{server.base_url}/MedicationRequest?page=2")
    snapshot = snapshot_from(server, {"patient": PATIENT, "activeMedications": first})
    assert {m.reference for m in snapshot.medications} == {
        "MedicationRequest/lzp-1",
        "MedicationRequest/lzp-2",
    }
    assert DataKind.MEDICATIONS not in snapshot.unavailable
    assert server.requests_to("MedicationRequest")[0].query == {"page": ["2"]}


def test_a_prefetched_next_page_on_another_host_is_not_followed(
    server: FhirServer, elsewhere: FhirServer
) -> None:
    serve_ehr(server)
    first = searchset([medication(1)], f"{elsewhere.base_url}/MedicationRequest?page=2")
    settings = make_settings([server.base_url, elsewhere.base_url])
    request = hook_request(server.base_url, {"patient": PATIENT, "activeMedications": first})
    snapshot = assemble_snapshot(request, settings)
    assert elsewhere.requests == []
    assert [m.reference for m in snapshot.medications] == ["MedicationRequest/lzp-1"]
    assert DataKind.MEDICATIONS in snapshot.unavailable


def test_a_slow_server_is_bounded_by_the_total_timeout(server: FhirServer) -> None:
    serve_ehr(server)
    server.route("Observation", slow(30, searchset([EGFR])))
    snapshot = snapshot_from(
        server, {"patient": PATIENT}, FHIR_TOTAL_TIMEOUT=0.5, FHIR_CONNECT_TIMEOUT=0.5
    )
    assert {DataKind.RENAL_LABS, DataKind.WEIGHT} <= snapshot.unavailable
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_a_slow_patient_read_is_412(server: FhirServer) -> None:
    serve_ehr(server)
    server.route(f"Patient/{PATIENT_ID}", slow(30, PATIENT))
    with pytest.raises(PreconditionFailed):
        snapshot_from(server, FHIR_TOTAL_TIMEOUT=0.5)


def test_a_server_not_on_the_allowlist_is_never_contacted(
    server: FhirServer, elsewhere: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    serve_ehr(server)
    settings = make_settings([elsewhere.base_url])
    with caplog.at_level(logging.WARNING):
        snapshot = assemble_snapshot(hook_request(server.base_url, {"patient": PATIENT}), settings)
        with pytest.raises(PreconditionFailed):
            assemble_snapshot(hook_request(server.base_url), settings)
    assert server.requests == []
    assert elsewhere.requests == []
    assert DataKind.RENAL_LABS in snapshot.unavailable
    assert "fhirServer not used" in caplog.text


def test_a_server_off_the_allowlist_is_named_only_when_something_had_to_be_fetched(
    server: FhirServer, elsewhere: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every kind answered in prefetch (``null`` included): nothing to fetch, so the
    server's not being allowlisted is no news and is not logged on every call."""
    settings = make_settings([elsewhere.base_url])
    complete = {**{kind.value: None for kind in DataKind}, "patient": PATIENT}
    with caplog.at_level(logging.WARNING):
        assemble_snapshot(hook_request(server.base_url, complete), settings)
    assert "fhirServer not used" not in caplog.text

    missing_labs = {k: v for k, v in complete.items() if k != "renalLabs"}
    with caplog.at_level(logging.WARNING):
        snapshot = assemble_snapshot(hook_request(server.base_url, missing_labs), settings)
    assert DataKind.RENAL_LABS in snapshot.unavailable
    assert [r.getMessage() for r in caplog.records] == ["fhirServer not used: not allowlisted"]
    assert server.requests == []


def test_a_redirect_to_another_host_never_gets_the_token(
    server: FhirServer, elsewhere: FhirServer
) -> None:
    serve_ehr(server)
    server.route("Observation", redirect(f"{elsewhere.base_url}/Observation"))
    settings = make_settings([server.base_url, elsewhere.base_url])
    snapshot = assemble_snapshot(hook_request(server.base_url), settings)
    assert elsewhere.requests == []
    assert DataKind.RENAL_LABS in snapshot.unavailable


def test_a_redirect_on_the_same_server_is_followed(server: FhirServer) -> None:
    serve_ehr(server)
    server.route("Observation", redirect(f"{server.base_url}/Moved"))
    server.route("Moved", observations)
    snapshot = snapshot_from(server)
    assert DataKind.RENAL_LABS not in snapshot.unavailable
    moved = server.requests_to("Moved")
    assert moved and all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in moved)


def test_dstu2_drafts_search_medication_orders(server: FhirServer) -> None:
    serve_ehr(server)
    order = {**LORAZEPAM, "resourceType": "MedicationOrder", "patient": {"reference": "Patient/x"}}
    del order["subject"]
    server.route("MedicationOrder", ok(searchset([order])))
    draft = MedicationOrder(
        reference="MedicationOrder/order-123",
        resource_type="MedicationOrder",
        fhir_version=FhirVersion.DSTU2,
        status="draft",
    )
    request = hook_request(server.base_url, {"patient": PATIENT}, drafts=[draft])
    snapshot = assemble_snapshot(request, make_settings([server.base_url]))
    assert server.requests_to("MedicationOrder")
    assert not server.requests_to("MedicationRequest")
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_logs_hold_no_token_no_patient_id_no_url(
    server: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    serve_ehr(server)
    server.route("Condition", status(500))
    with caplog.at_level(logging.DEBUG, logger="cds_hooks"):
        snapshot_from(server)
    assert caplog.records
    for record in caplog.records:
        extras = {k: v for k, v in vars(record).items() if k not in STANDARD_LOG_FIELDS}
        text = record.getMessage() + repr(extras)
        assert TOKEN not in text
        assert "pt-1" not in text
        assert "/fhir" not in text


def test_every_exchange_reaches_the_observers(server: FhirServer) -> None:
    serve_ehr(server)
    server.route("Condition", status(500))
    seen: list[FetchRecord] = []
    fhir_client.OBSERVERS.append(seen.append)
    try:
        snapshot_from(server)
    finally:
        fhir_client.OBSERVERS.remove(seen.append)
    assert len(seen) == 5
    failed = [r for r in seen if r.kind is DataKind.CONDITIONS]
    assert failed[0].status == 500 and failed[0].error == "http_status"
    assert all(r.host == "127.0.0.1" for r in seen)


@pytest.mark.parametrize(
    ("url", "allowlist", "development", "allowed"),
    [
        ("https://ehr.example.org/fhir", ["https://ehr.example.org/fhir"], False, True),
        ("https://ehr.example.org/fhir/r4", ["https://ehr.example.org/fhir"], False, True),
        ("https://EHR.example.org:443/fhir", ["https://ehr.example.org/fhir"], False, True),
        ("https://ehr.example.org.evil.com/fhir", ["https://ehr.example.org"], False, False),
        ("https://ehr.example.org@evil.com/fhir", ["https://ehr.example.org"], False, False),
        ("https://evil.com/?https://ehr.example.org", ["https://ehr.example.org"], False, False),
        ("https://ehr.example.org/fhir-evil", ["https://ehr.example.org/fhir"], False, False),
        ("https://ehr.example.org/fhir/../admin", ["https://ehr.example.org/fhir"], False, False),
        ("https://ehr.example.org:8443/fhir", ["https://ehr.example.org/fhir"], False, False),
        ("http://ehr.example.org/fhir", ["https://ehr.example.org/fhir"], False, False),
        ("http://127.0.0.1:9/fhir", ["http://127.0.0.1:9/fhir"], True, True),
        ("ftp://ehr.example.org/fhir", ["https://ehr.example.org/fhir"], False, False),
        ("https://ehr.example.org/fhir", [], False, False),
        ("not a url", ["https://ehr.example.org/fhir"], False, False),
    ],
)
def test_check_fhir_server(
    url: str, allowlist: list[str], development: bool, allowed: bool
) -> None:
    settings = make_settings(allowlist, ENV="development" if development else "production")
    assert (check_fhir_server(url, settings) is None) is allowed


# Through the real app: the hook endpoint with fhirServer pointing at the loopback server.


@pytest.fixture
def ehr() -> Iterator[FhirServer]:
    with FhirServer() as fhir_server:
        serve_ehr(fhir_server)
        yield fhir_server


@pytest.fixture
def app_config(tmp_path: Any, ehr: FhirServer) -> dict[str, Any]:
    return {
        "TESTING": True,
        "ENV": "development",
        "DATABASE_URL": sqlite_url(tmp_path),
        "FHIR_ALLOWLIST": [ehr.base_url],
        "FHIR_TOTAL_TIMEOUT": 2.0,
    }


def hook_body(fhir_server: str, prefetch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hookInstance": "0a7a3e2c-7a7f-4b8e-9a51-2f0c4a1d9b10",
        "hook": "order-sign",
        "fhirServer": fhir_server,
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "baclofen-cds",
        },
        "context": {
            "patientId": PATIENT_ID,
            "userId": "Practitioner/1",
            "draftOrders": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "MedicationRequest",
                            "id": "request-123",
                            "status": "draft",
                            "intent": "order",
                            "subject": {"reference": f"Patient/{PATIENT_ID}"},
                            "medicationCodeableConcept": {
                                "text": "Baclofen 10 MG Oral Tablet",
                                "coding": [
                                    {
                                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                        "code": "197391",
                                    }
                                ],
                            },
                        }
                    }
                ],
            },
        },
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def test_app_fetches_absent_prefetch_from_the_server(client: FlaskClient, ehr: FhirServer) -> None:
    response = client.post("/cds-services/baclofen-order-sign", json=hook_body(ehr.base_url))
    assert response.status_code == 200
    assert "cards" in response.get_json()
    assert ehr.requests_to("Patient/")
    assert ehr.requests_to("Observation")
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in ehr.requests)


def test_app_answers_412_with_an_operation_outcome(client: FlaskClient, ehr: FhirServer) -> None:
    ehr.route(f"Patient/{PATIENT_ID}", status(404))
    response = client.post("/cds-services/baclofen-order-sign", json=hook_body(ehr.base_url))
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Patient could not be obtained" in outcome["issue"][0]["diagnostics"]


def test_app_never_contacts_a_server_off_the_allowlist(
    client: FlaskClient, ehr: FhirServer, elsewhere: FhirServer
) -> None:
    response = client.post("/cds-services/baclofen-order-sign", json=hook_body(elsewhere.base_url))
    assert response.status_code == 412
    assert elsewhere.requests == []
    with_patient = hook_body(elsewhere.base_url, {"patient": PATIENT})
    assert client.post("/cds-services/baclofen-order-sign", json=with_patient).status_code == 200
    assert elsewhere.requests == []


# Fetched answers are held to the same test as prefetched ones: a whole list or a gap.


@pytest.mark.parametrize(
    "bundle",
    [
        {**searchset([LORAZEPAM]), "total": 4},
        {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": LORAZEPAM}},
        {**searchset([LORAZEPAM]), "entry": [{"resource": LORAZEPAM}, {"fullUrl": "x"}]},
        {
            **searchset([LORAZEPAM]),
            "link": [{"relation": "self", "url": "MedicationRequest?patient=someone-else"}],
        },
    ],
    ids=["total-exceeds-entries", "entry-not-a-list", "unreadable-entry", "another-patient"],
)
def test_a_fetched_list_that_is_not_whole_is_a_gap(server: FhirServer, bundle: Any) -> None:
    serve_ehr(server)
    server.route("MedicationRequest", ok(bundle))
    snapshot = snapshot_from(server)
    assert snapshot.unavailable == {DataKind.MEDICATIONS}


def test_a_total_spread_over_pages_is_a_whole_list(server: FhirServer) -> None:
    serve_ehr(server)

    def two_pages(request: Recorded) -> Reply:
        if request.query.get("page") == ["2"]:
            return ok({**searchset([medication(2)]), "total": 2})
        first = searchset([medication(1)], f"{server.base_url}/MedicationRequest?page=2")
        return ok({**first, "total": 2})

    server.route("MedicationRequest", two_pages)
    assert DataKind.MEDICATIONS not in snapshot_from(server).unavailable
    prefetched = {**searchset([medication(1)], f"{server.base_url}/MedicationRequest?page=2")}
    snapshot = snapshot_from(server, {"patient": PATIENT, "activeMedications": prefetched})
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_a_prefetched_list_that_is_not_whole_is_fetched_again(server: FhirServer) -> None:
    serve_ehr(server)
    short = {**searchset([]), "total": 1}
    snapshot = snapshot_from(server, {"patient": PATIENT, "activeMedications": short})
    assert server.requests_to("MedicationRequest")
    assert [m.reference for m in snapshot.medications] == ["MedicationRequest/lzp-1"]
    assert snapshot.unavailable == frozenset()
