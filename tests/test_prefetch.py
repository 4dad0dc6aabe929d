"""Reading prefetch values: the five CDS Hooks states, legacy wrappers, foreign keys."""

from __future__ import annotations

from typing import Any

import pytest

from cds_hooks.model import DataKind
from cds_hooks.prefetch import Irregularity, PrefetchState, read_prefetch, read_value
from tests.conftest import load_json
from tests.fhir_server import operation_outcome, searchset

PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1941-03-02"}
EGFR = {
    "resourceType": "Observation",
    "id": "egfr-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
    "valueQuantity": {"value": 37, "unit": "mL/min/{1.73_m2}"},
}


def test_absent_key_is_absent_and_not_answered() -> None:
    prefetch = read_prefetch({"patient": PATIENT})
    value = prefetch.value(DataKind.RENAL_LABS)
    assert value.state is PrefetchState.ABSENT
    assert not value.answered


def test_null_means_the_client_has_no_data_so_nothing_to_fetch() -> None:
    value = read_prefetch({"renalLabs": None}).value(DataKind.RENAL_LABS)
    assert value.state is PrefetchState.NULL
    assert value.answered
    assert value.entries == ()


def test_single_resource_and_searchset_bundle() -> None:
    prefetch = read_prefetch({"patient": PATIENT, "renalLabs": searchset([EGFR])})
    assert prefetch.value(DataKind.PATIENT).entries[0].resource["id"] == "p1"
    labs = prefetch.value(DataKind.RENAL_LABS)
    assert labs.state is PrefetchState.RESOURCES
    assert [e.resource["id"] for e in labs.entries] == ["egfr-1"]


def test_empty_bundle_is_an_answer_with_no_resources() -> None:
    value = read_value({"resourceType": "Bundle", "type": "searchset", "total": 0})
    assert value.state is PrefetchState.RESOURCES
    assert value.answered
    assert value.entries == ()


def test_paginated_bundle_keeps_the_next_link() -> None:
    value = read_value(searchset([EGFR], next_url="https://ehr.example.org/fhir?page=2"))
    assert value.next_url == "https://ehr.example.org/fhir?page=2"


def test_operation_outcome_alone_is_an_error() -> None:
    value = read_value(operation_outcome())
    assert value.state is PrefetchState.ERROR
    assert not value.answered


def test_error_outcome_inside_a_bundle_is_an_error_but_keeps_resources() -> None:
    bundle = searchset([EGFR])
    bundle["entry"].append({"resource": operation_outcome(), "search": {"mode": "outcome"}})
    value = read_value(bundle)
    assert value.state is PrefetchState.ERROR
    assert [e.resource["id"] for e in value.entries] == ["egfr-1"]


def test_warning_outcome_inside_a_bundle_does_not_spoil_the_answer() -> None:
    bundle = searchset([EGFR])
    bundle["entry"].append({"resource": operation_outcome("ignored _sort", severity="warning")})
    value = read_value(bundle)
    assert value.state is PrefetchState.RESOURCES
    assert len(value.entries) == 1


def test_legacy_wrapper_is_unwrapped() -> None:
    wrapped = {"resource": PATIENT, "response": {"status": "200 OK"}}
    value = read_prefetch({"patient": wrapped}).value(DataKind.PATIENT)
    assert value.state is PrefetchState.RESOURCES
    assert value.entries[0].resource["id"] == "p1"


def test_legacy_wrapper_with_failed_status_is_an_error() -> None:
    value = read_value({"response": {"status": "404 Not Found"}})
    assert value.state is PrefetchState.ERROR


def test_unhashable_codes_do_not_crash() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": ["error"]}]}
    assert read_value(outcome).state is PrefetchState.ERROR
    bundle = searchset([EGFR])
    bundle["entry"].append({"resource": {**outcome, "issue": [{"severity": {"x": 1}}]}})
    assert read_value(bundle).state is PrefetchState.RESOURCES
    bundle["entry"].append({"resource": EGFR, "search": {"mode": ["include"]}})
    assert read_value(bundle).matched == 2


def test_junk_values_are_errors_not_crashes() -> None:
    junk: list[Any] = ["Patient/p1", 42, [PATIENT], {"id": "no-type"}, {"resourceType": 7}]
    for raw in junk:
        assert read_value(raw).state is PrefetchState.ERROR
    assert read_prefetch(["not", "a", "mapping"]).pool == ()


def test_resources_under_foreign_keys_are_pooled_and_deduplicated() -> None:
    prefetch = read_prefetch(
        {"egfr": searchset([EGFR]), "labsAgain": searchset([EGFR]), "patient": PATIENT}
    )
    assert prefetch.value(DataKind.RENAL_LABS).state is PrefetchState.ABSENT
    pooled = sorted(f"{e.resource_type}/{e.resource.get('id')}" for e in prefetch.pool)
    assert pooled == ["Observation/egfr-1", "Patient/p1"]


def test_real_sandbox_capture_pools_the_egfr_and_medications_keys() -> None:
    body = load_json("requests/sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json")["body"]
    prefetch = read_prefetch(body["prefetch"])
    types = {e.resource_type for e in prefetch.pool}
    assert {"Patient", "Observation", "MedicationRequest"} <= types
    assert prefetch.value(DataKind.PATIENT).state is PrefetchState.RESOURCES


def test_a_batch_response_of_searchsets_is_read_through() -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"resource": searchset([EGFR])}, {"resource": searchset([PATIENT])}],
    }
    value = read_value(batch)
    assert value.state is PrefetchState.RESOURCES
    assert {e.resource_type for e in value.entries} == {"Observation", "Patient"}


def test_deeply_nested_bundles_are_not_followed() -> None:
    nested: dict[str, Any] = searchset([EGFR])
    for _ in range(5000):
        nested = {"resourceType": "Bundle", "entry": [{"resource": nested}]}
    assert read_value(nested).entries == ()


# --- "none" only when the record said none ---------------------------------------------

LORAZEPAM = {
    "resourceType": "MedicationRequest",
    "id": "lzp",
    "status": "active",
    "subject": {"reference": "Patient/p1"},
    "medicationCodeableConcept": {"text": "lorazepam 1 MG Oral Tablet"},
}


def with_self(bundle: dict[str, Any], url: str) -> dict[str, Any]:
    return {**bundle, "link": [*bundle.get("link", []), {"relation": "self", "url": url}]}


def test_a_total_beyond_the_entries_without_a_next_page_is_not_a_whole_list() -> None:
    bundle = {**searchset([LORAZEPAM]), "total": 3}
    value = read_value(bundle)
    assert value.problems == (Irregularity.TOTAL_EXCEEDS_ENTRIES,)
    assert not value.answered
    assert [e.resource["id"] for e in value.entries] == ["lzp"]


def test_a_total_beyond_the_entries_of_a_first_page_is_what_the_next_page_is_for() -> None:
    bundle = {**searchset([LORAZEPAM], "https://ehr.example.org/fhir?page=2"), "total": 3}
    value = read_value(bundle)
    assert value.problems == ()
    assert value.answered
    assert (value.total, value.matched) == (3, 1)


def test_included_resources_and_outcomes_are_not_counted_against_the_total() -> None:
    bundle = searchset([LORAZEPAM])
    bundle["entry"] += [
        {"resource": {"resourceType": "Medication", "id": "m1"}, "search": {"mode": "include"}},
        {"resource": operation_outcome(severity="warning"), "search": {"mode": "outcome"}},
    ]
    value = read_value({**bundle, "total": 1})
    assert value.answered
    assert value.matched == 1
    assert len(value.entries) == 2


@pytest.mark.parametrize(
    "entry",
    [
        "MedicationRequest/x",
        None,
        {},
        {"resource": "MedicationRequest/x"},
        {"resource": {"id": "no-type"}},
        {"fullUrl": "https://ehr.example.org/fhir/MedicationRequest/x"},
    ],
)
def test_an_entry_that_cannot_be_read_leaves_the_list_incomplete(entry: Any) -> None:
    bundle = searchset([LORAZEPAM])
    bundle["entry"].append(entry)
    value = read_value(bundle)
    assert value.problems == (Irregularity.UNREADABLE,)
    assert not value.answered
    assert [e.resource["id"] for e in value.entries] == ["lzp"]


@pytest.mark.parametrize("entries", ["not a list", {"resource": LORAZEPAM}, 3])
def test_an_entry_that_is_not_a_list_leaves_the_list_incomplete(entries: Any) -> None:
    value = read_value({"resourceType": "Bundle", "type": "searchset", "entry": entries})
    assert value.problems == (Irregularity.ENTRY_NOT_A_LIST,)
    assert not value.answered


@pytest.mark.parametrize(
    "response",
    [
        {"status": "404 Not Found"},
        {"status": "500"},
        {"status": 403},
        {},
        "200 OK",
        {"status": "200 OK", "outcome": operation_outcome("partial")},
        {"status": "200 OK", "outcome": "broken"},
    ],
)
def test_a_failed_batch_entry_leaves_the_list_incomplete(response: Any) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": searchset([EGFR]), "response": {"status": "200 OK"}},
            {"resource": operation_outcome(), "response": response},
        ],
    }
    value = read_value(batch)
    assert Irregularity.ENTRY_FAILED in value.problems
    assert not value.answered
    assert [e.resource["id"] for e in value.entries] == ["egfr-1"]


def test_a_successful_batch_entry_with_a_warning_is_a_whole_answer() -> None:
    warning = operation_outcome("ignored _sort", severity="warning")
    batch = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": searchset([EGFR]), "response": {"status": "200", "outcome": warning}}
        ],
    }
    assert read_value(batch).answered


def test_a_search_in_a_batch_with_pages_left_or_short_of_its_total_is_incomplete() -> None:
    paged = searchset([EGFR], "https://ehr.example.org/fhir/Observation?page=2")
    short = {**searchset([EGFR]), "total": 2}
    for inner, problem in [
        (paged, Irregularity.NESTED_PAGE_MISSING),
        (short, Irregularity.TOTAL_EXCEEDS_ENTRIES),
    ]:
        batch = {"resourceType": "Bundle", "type": "batch-response", "entry": [{"resource": inner}]}
        assert read_value(batch).problems == (problem,)


def test_bundles_nested_too_deep_are_named() -> None:
    inner = {"resourceType": "Bundle", "entry": [{"resource": searchset([EGFR])}]}
    value = read_value({"resourceType": "Bundle", "entry": [{"resource": inner}]})
    assert value.problems == (Irregularity.NESTED_TOO_DEEP,)


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/fhir/MedicationRequest?patient={{context.patientId}}",
        "https://ehr.example.org/fhir/MedicationRequest?patient=%7B%7Bcontext.patientId%7D%7D",
        "https://ehr.example.org/fhir/MedicationRequest?patient=%7b%7bPatient.id%7d%7d",
        "MedicationRequest?subject=Patient/{{user.patientId}}&status=active",
    ],
)
def test_a_search_with_the_template_token_unreplaced_is_not_an_answer(url: str) -> None:
    prefetch = read_prefetch({"activeMedications": with_self(searchset([]), url)}, "p1")
    value = prefetch.value(DataKind.MEDICATIONS)
    assert value.problems == (Irregularity.UNREPLACED_TEMPLATE,)
    assert value.state is PrefetchState.ERROR
    assert not value.answered
    assert DataKind.MEDICATIONS in prefetch.doubtful


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/fhir/MedicationRequest?patient=p2&status=active",
        "https://ehr.example.org/fhir/MedicationRequest?subject=Patient/p2",
        "https://ehr.example.org/fhir/MedicationRequest?patient=https://ehr.example.org/fhir/Patient/p2",
        "https://ehr.example.org/fhir/Patient/p2/MedicationRequest?status=active",
        "https://ehr.example.org/fhir/MedicationRequest?patient=p11",
        "https://ehr.example.org/fhir/MedicationRequest?patient=",
    ],
)
def test_a_search_for_another_patient_is_not_an_answer(url: str) -> None:
    bundle = with_self(searchset([LORAZEPAM]), url)
    prefetch = read_prefetch({"activeMedications": bundle}, "p1")
    value = prefetch.value(DataKind.MEDICATIONS)
    assert value.problems == (Irregularity.NOT_THIS_PATIENT,)
    assert value.entries == ()
    assert prefetch.pool == ()


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/fhir/MedicationRequest?patient=p1&status=active",
        "https://ehr.example.org/fhir/MedicationRequest?patient=Patient%2Fp1",
        "https://ehr.example.org/fhir/MedicationRequest?subject:Patient=https://ehr.example.org/fhir/Patient/p1",
        "https://ehr.example.org/fhir/MedicationRequest?patient=p1,p2",
        "https://ehr.example.org/fhir/Patient/p1/MedicationRequest",
        "https://ehr.example.org/fhir/MedicationRequest?_getpages=abc&_offset=0",
        "https://ehr.example.org/fhir/MedicationRequest?patient.identifier=123",
    ],
)
def test_a_search_for_this_patient_or_that_does_not_say_is_an_answer(url: str) -> None:
    value = read_value(with_self(searchset([LORAZEPAM]), url), "p1")
    assert value.answered
    assert value.searched == "MedicationRequest"


def test_an_irregular_answer_under_a_key_of_the_clients_own_makes_its_kinds_doubtful() -> None:
    meds = {**searchset([LORAZEPAM]), "total": 2}
    labs = with_self({"resourceType": "Bundle", "entry": "x"}, "Observation?patient=p1")
    prefetch = read_prefetch({"activeMeds": meds, "egfr": labs, "conditions": searchset([])}, "p1")
    assert prefetch.doubtful == {DataKind.MEDICATIONS, DataKind.RENAL_LABS, DataKind.WEIGHT}
    assert prefetch.value(DataKind.CONDITIONS).answered
