"""Reading prefetch values: the five CDS Hooks states, legacy wrappers, foreign keys."""

from __future__ import annotations

from typing import Any

from cds_hooks.model import DataKind
from cds_hooks.prefetch import PrefetchState, read_prefetch, read_value
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
