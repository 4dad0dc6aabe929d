"""A medication list, problem list or lab list is "none" only when the record said none.

Issue 13 reproduced each of these against the served process: a list short of its
``total``, an ``entry`` that is not a list, entries that cannot be read, a failed batch
entry, a search sent with ``{{context.patientId}}`` unreplaced, and an opioid and a
benzodiazepine written as ``medicationReference`` to Medications only on the FHIR
server. Each made the critical interaction card vanish without a word. Here each goes
through the real app (and a real loopback FHIR server where fetching is involved) and
must end in the interaction card or in a card saying what could not be retrieved.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_hooks.app import create_app
from tests.conftest import sqlite_url
from tests.fhir_server import FhirServer, Recorded, Reply, ok, operation_outcome, serve_chart
from tests.fhir_server import status as http_status
from tests.scenario_requests import PATIENT_ID, build_request, post
from tests.test_fuzz import json_values

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TOKEN = "lent-token-13"
CRITICAL = "Baclofen with an opioid plus benzodiazepine"
MEDS_GAP = "Active medications could not be retrieved"
"""Said in a card's summary, or, on a card about a drug in the session, in its data used:"""
MEDS_GAP_DETAIL = "Active medication list could not be obtained"
LABS_GAP = "Kidney function results could not be retrieved"
OXYCODONE = ("oxy", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet")
LORAZEPAM = ("lzp", "197901", "lorazepam 1 MG Oral Tablet")
SCENARIO: dict[str, Any] = {
    "patient": {"age": 50, "sex": "female"},
    "labs": [{"loinc": "98979-8", "value": 80, "unit": "mL/min/{1.73_m2}", "days_ago": 5}],
    "drafts": [
        {
            "id": "d1",
            "rxnorm": "197391",
            "name": "Baclofen 10 MG Oral Tablet",
            "dose": 1,
            "unit": "{pill}",
            "frequency": 3,
        }
    ],
    "active": [
        {"id": rid, "rxnorm": code, "name": name} for rid, code, name in (OXYCODONE, LORAZEPAM)
    ],
}


def base_body() -> dict[str, Any]:
    return build_request(SCENARIO, date.today())


def medication(drug: tuple[str, str, str]) -> dict[str, Any]:
    rid, code, name = drug
    return {
        "resourceType": "Medication",
        "id": f"{rid}-med",
        "code": {"coding": [{"system": RXNORM, "code": code, "display": name}], "text": name},
    }


def by_reference(order: dict[str, Any], reference: str) -> dict[str, Any]:
    """The order with its drug named only by ``medicationReference``."""
    written = {k: v for k, v in order.items() if k != "medicationCodeableConcept"}
    return {**written, "medicationReference": {"reference": reference}}


def active_orders(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in body["prefetch"]["activeMedications"]["entry"]]


def referenced_orders(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [by_reference(order, f"Medication/{order['id']}-med") for order in active_orders(body)]


def searchset(resources: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
        **fields,
    }


def self_link(url: str) -> dict[str, Any]:
    return {"link": [{"relation": "self", "url": url}]}


def summaries(cards: list[dict[str, Any]]) -> str:
    """Every card's summary, and its detail where it says the medication list is missing
    (a card about another drug of the session says so in a reason or its data used)."""
    return " | ".join(
        card["summary"]
        + (f" ({MEDS_GAP})" if MEDS_GAP_DETAIL.lower() in card.get("detail", "").lower() else "")
        for card in cards
    )


def with_server(body: dict[str, Any], server: FhirServer) -> dict[str, Any]:
    body["fhirServer"] = server.base_url
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "baclofen-cds",
    }
    return body


def chart(body: dict[str, Any], referenced: bool) -> list[dict[str, Any]]:
    """The patient's record as the EHR's server holds it (the drugs coded or referenced)."""
    orders = referenced_orders(body) if referenced else active_orders(body)
    labs = [entry["resource"] for entry in body["prefetch"]["renalLabs"]["entry"]]
    media = [medication(OXYCODONE), medication(LORAZEPAM)] if referenced else []
    return [body["prefetch"]["patient"], *orders, *labs, *media]


@pytest.fixture
def ehr() -> Iterator[FhirServer]:
    with FhirServer() as fhir_server:
        yield fhir_server


@pytest.fixture
def app_config(app_config: dict[str, Any], ehr: FhirServer) -> dict[str, Any]:
    return {**app_config, "FHIR_ALLOWLIST": [ehr.base_url], "FHIR_TOTAL_TIMEOUT": 10.0}


def test_the_whole_list_gives_the_critical_card(client: FlaskClient) -> None:
    assert CRITICAL in summaries(post(client, base_body()))


# --- lists that are not whole: said on a card, or fetched whole ------------------------


def short_of_total(body: dict[str, Any]) -> Any:
    return searchset(active_orders(body)[1:], total=2)


def entry_not_a_list(body: dict[str, Any]) -> Any:
    return {**searchset([]), "entry": {"resource": active_orders(body)[0]}}


def unreadable_entry(body: dict[str, Any]) -> Any:
    bundle = searchset(active_orders(body)[1:], total=2)
    bundle["entry"].append({"fullUrl": "urn:uuid:9e7c", "resource": "oxycodone"})
    return bundle


def failed_batch_entry(body: dict[str, Any]) -> Any:
    return {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": searchset(active_orders(body)[1:]), "response": {"status": "200 OK"}},
            {"resource": operation_outcome("timeout"), "response": {"status": "504"}},
        ],
    }


def error_outcome_among_entries(body: dict[str, Any]) -> Any:
    bundle = searchset(active_orders(body)[1:])
    bundle["entry"].append({"resource": operation_outcome(), "search": {"mode": "outcome"}})
    return bundle


def unreplaced_template(body: dict[str, Any]) -> Any:
    del body
    return searchset([], **self_link("MedicationRequest?patient={{context.patientId}}"))


def another_patients_search(body: dict[str, Any]) -> Any:
    return searchset(
        active_orders(body)[1:], **self_link("MedicationRequest?patient=someone-else&status=active")
    )


MANGLED_LISTS = [
    short_of_total,
    entry_not_a_list,
    unreadable_entry,
    failed_batch_entry,
    error_outcome_among_entries,
    unreplaced_template,
    another_patients_search,
]


@pytest.mark.parametrize("mangle", MANGLED_LISTS)
def test_a_list_that_is_not_whole_is_said_to_be_missing(client: FlaskClient, mangle: Any) -> None:
    body = base_body()
    body["prefetch"]["activeMedications"] = mangle(body)
    assert MEDS_GAP in summaries(post(client, body))


@pytest.mark.parametrize("mangle", MANGLED_LISTS)
def test_a_list_that_is_not_whole_is_fetched_whole_from_the_server(
    client: FlaskClient, ehr: FhirServer, mangle: Any
) -> None:
    body = base_body()
    serve_chart(ehr, chart(body, referenced=False))
    body["prefetch"]["activeMedications"] = mangle(body)
    said = summaries(post(client, with_server(body, ehr)))
    assert CRITICAL in said
    assert MEDS_GAP not in said
    assert ehr.requests_to("MedicationRequest")


def test_a_fetched_list_short_of_its_total_is_said_to_be_missing(
    client: FlaskClient, ehr: FhirServer
) -> None:
    body = base_body()
    short = short_of_total(body)
    ehr.route("MedicationRequest", ok(short))
    del body["prefetch"]["activeMedications"]
    said = summaries(post(client, with_server(body, ehr)))
    assert MEDS_GAP in said
    assert CRITICAL not in said


def test_searches_sent_with_the_token_unreplaced_are_fetched_for_this_patient(
    client: FlaskClient, ehr: FhirServer
) -> None:
    """The legacy sandbox could not fill ``{{context.patientId}}``: its server answered
    empty Bundles, which read as "no medications, no labs"."""
    body = base_body()
    serve_chart(ehr, chart(body, referenced=False))
    for key, search in [
        ("activeMedications", "MedicationRequest?patient={{context.patientId}}&status=active"),
        ("renalLabs", "Observation?patient=%7B%7Bcontext.patientId%7D%7D&code=x"),
    ]:
        body["prefetch"][key] = searchset([], **self_link(f"{ehr.base_url}/{search}"))
    said = summaries(post(client, with_server(body, ehr)))
    assert CRITICAL in said
    assert LABS_GAP not in said
    searched = [r.query.get("patient") for r in ehr.requests_to("MedicationRequest")]
    assert searched == [[PATIENT_ID]]


def test_searches_sent_with_the_token_unreplaced_and_no_server_are_missing_data(
    client: FlaskClient,
) -> None:
    body = base_body()
    for key in ("activeMedications", "renalLabs"):
        body["prefetch"][key] = unreplaced_template(body)
    said = summaries(post(client, body))
    assert MEDS_GAP in said
    assert LABS_GAP in said


def test_a_lab_list_short_of_its_total_is_missing_kidney_data(client: FlaskClient) -> None:
    body = base_body()
    body["prefetch"]["renalLabs"] = searchset([], total=1)
    assert LABS_GAP in summaries(post(client, body))


# --- medications named by reference -------------------------------------------------------


def test_referenced_medications_only_on_the_server_are_read_from_it(
    client: FlaskClient, ehr: FhirServer
) -> None:
    body = base_body()
    serve_chart(ehr, chart(body, referenced=True))
    body["prefetch"]["activeMedications"] = searchset(referenced_orders(body))
    said = summaries(post(client, with_server(body, ehr)))
    assert CRITICAL in said
    reads = ehr.requests_to("Medication/")
    assert sorted(r.path for r in reads) == ["/fhir/Medication/lzp-med", "/fhir/Medication/oxy-med"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in reads)
    assert not ehr.requests_to("MedicationRequest")


def test_a_fetched_list_brings_its_medications_along(client: FlaskClient, ehr: FhirServer) -> None:
    body = base_body()
    serve_chart(ehr, chart(body, referenced=True))
    del body["prefetch"]["activeMedications"]
    said = summaries(post(client, with_server(body, ehr)))
    assert CRITICAL in said
    (search,) = ehr.requests_to("MedicationRequest")
    assert search.query["_include"] == ["MedicationRequest:medication"]
    assert not ehr.requests_to("Medication/")


def test_medications_a_server_did_not_include_are_read_after_the_search(
    client: FlaskClient, ehr: FhirServer
) -> None:
    body = base_body()
    serve_chart(ehr, chart(body, referenced=True), include=False)
    del body["prefetch"]["activeMedications"]
    said = summaries(post(client, with_server(body, ehr)))
    assert CRITICAL in said
    assert len(ehr.requests_to("Medication/")) == 2


def test_a_medication_on_another_server_is_never_asked_for_with_the_token(
    client: FlaskClient, ehr: FhirServer
) -> None:
    body = base_body()
    serve_chart(ehr, chart(body, referenced=True))
    with FhirServer() as elsewhere:
        elsewhere.route("", ok(medication(OXYCODONE)))
        orders = referenced_orders(body)
        orders[0] = by_reference(orders[0], f"{elsewhere.base_url}/Medication/oxy-med")
        body["prefetch"]["activeMedications"] = searchset(orders)
        post(client, with_server(body, ehr))
        assert elsewhere.requests == []


# --- property: a mangled list never ends in silence ---------------------------------------

not_a_resource_entry = json_values.filter(
    lambda v: (
        not (
            isinstance(v, dict)
            and isinstance(v.get("resource"), dict)
            and isinstance(v["resource"].get("resourceType"), str)
        )
    )
)


@st.composite
def opioid_writing(draw: st.DrawFn, server_has_medications: bool) -> str:
    """How the opioid order names its drug: each way the service can resolve."""
    ways = ["coded", "contained", "bundled"] + (["on-server"] if server_has_medications else [])
    return draw(st.sampled_from(ways))


@st.composite
def mangled_lists(draw: st.DrawFn, server_has_medications: bool) -> tuple[str, Any]:
    """A medication list that holds the opioid and benzodiazepine, written one of the ways
    the service can resolve, then damaged the way real lists are: the result must not
    read as a whole list without the opioid."""
    body = base_body()
    orders = active_orders(body)
    oxy, lzp = orders
    way = draw(opioid_writing(server_has_medications))
    extra_entries: list[dict[str, Any]] = []
    if way == "contained":
        oxy = {**by_reference(oxy, "#m"), "contained": [{**medication(OXYCODONE), "id": "m"}]}
    elif way == "bundled":
        oxy = by_reference(oxy, "Medication/oxy-med")
        extra_entries.append({"resource": medication(OXYCODONE), "search": {"mode": "include"}})
    elif way == "on-server":
        oxy = by_reference(oxy, "Medication/oxy-med")
    entries = [{"resource": oxy}, {"resource": lzp}, *extra_entries]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": 2}
    damage = draw(
        st.sampled_from(
            [
                "none",
                "drop-opioid",
                "entry-not-a-list",
                "opioid-unreadable",
                "junk-entry",
                "failed-batch",
                "error-outcome",
                "template-self",
                "other-patient-self",
                "too-deep",
                "key-absent",
                "operation-outcome",
                "not-an-object",
                "legacy-failed",
            ]
        )
    )
    if damage == "drop-opioid":
        entries = entries[1:]
    elif damage == "opioid-unreadable":
        entries[0] = draw(not_a_resource_entry)
    elif damage == "junk-entry":
        entries.insert(draw(st.integers(0, len(entries))), draw(not_a_resource_entry))
    bundle["entry"] = entries
    if damage == "entry-not-a-list":
        bundle["entry"] = draw(
            json_values.filter(lambda v: not isinstance(v, list) and v is not None)
        )
    elif damage == "failed-batch":
        code = draw(st.sampled_from(["404 Not Found", "500", "503 Service Unavailable", 429]))
        failed = {"resource": operation_outcome("failed"), "response": {"status": code}}
        entries = [e for e in entries if e["resource"] is not oxy]
        bundle = {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"resource": {**bundle, "entry": entries}}, failed],
        }
    elif damage == "error-outcome":
        bundle["entry"] = [*entries[1:], {"resource": operation_outcome()}]
    elif damage == "template-self":
        token = draw(st.sampled_from(["{{context.patientId}}", "%7B%7BPatient.id%7D%7D"]))
        bundle |= self_link(f"MedicationRequest?patient={token}")
    elif damage == "other-patient-self":
        bundle |= self_link("MedicationRequest?patient=another-patient")
    elif damage == "too-deep":
        inner = {"resourceType": "Bundle", "entry": [{"resource": bundle}]}
        bundle = {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"resource": inner}],
        }
    elif damage == "operation-outcome":
        bundle = operation_outcome("search failed")
    elif damage == "not-an-object":
        bundle = draw(json_values.filter(lambda v: not isinstance(v, dict) and v is not None))
    elif damage == "legacy-failed":
        bundle = {"response": {"status": "500 Internal Server Error"}}
    value = None if damage == "key-absent" else copy.deepcopy(bundle)
    return damage, value


@pytest.fixture(scope="module")
def property_ehr() -> Iterator[FhirServer]:
    with FhirServer(keep_alive=True) as fhir_server:
        body = base_body()
        serve_chart(fhir_server, chart(body, referenced=True))
        yield fhir_server


@pytest.fixture(scope="module")
def property_app(tmp_path_factory: pytest.TempPathFactory, property_ehr: FhirServer) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "ENV": "development",
            "DATABASE_URL": sqlite_url(tmp_path_factory.mktemp("incomplete")),
            "FHIR_ALLOWLIST": [property_ehr.base_url],
            "FHIR_TOTAL_TIMEOUT": 10.0,
        }
    )


def medication_list_unavailable(request: Recorded) -> Reply:
    del request
    return http_status(503)


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(case=mangled_lists(server_has_medications=False))
def test_a_mangled_list_without_a_server_is_never_read_as_no_interaction(
    property_app: Flask, case: tuple[str, Any]
) -> None:
    damage, value = case
    body = base_body()
    body["prefetch"].pop("activeMedications")
    if value is not None:
        body["prefetch"]["activeMedications"] = value
    said = summaries(post(property_app.test_client(), body))
    assert CRITICAL in said or MEDS_GAP in said, (damage, said)


@PROPERTY
@given(
    case=mangled_lists(server_has_medications=True),
    server_list=st.sampled_from(["whole", "unavailable"]),
)
def test_a_mangled_list_with_a_server_is_never_read_as_no_interaction(
    property_app: Flask, property_ehr: FhirServer, case: tuple[str, Any], server_list: str
) -> None:
    damage, value = case
    if server_list == "whole":
        serve_chart(property_ehr, chart(base_body(), referenced=True))
    else:
        property_ehr.route("MedicationRequest", medication_list_unavailable)
    body = with_server(base_body(), property_ehr)
    body["prefetch"].pop("activeMedications")
    if value is not None:
        body["prefetch"]["activeMedications"] = value
    said = summaries(post(property_app.test_client(), body))
    assert CRITICAL in said or MEDS_GAP in said, (damage, server_list, said)


def test_an_opioid_whose_medication_is_nowhere_is_named_on_a_card(client: FlaskClient) -> None:
    body = base_body()
    orders = active_orders(body)
    orders[0] = by_reference(orders[0], "Medication/nowhere")
    body["prefetch"]["activeMedications"] = searchset(orders)
    cards = post(client, body)
    said = " ".join(card["summary"] + card.get("detail", "") for card in cards)
    assert "Active medication orders not identified, so not checked: 1" in said
