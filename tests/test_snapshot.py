"""Assembling the patient snapshot from what the client prefetched (real captures included)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks import fhir
from cds_hooks.discovery import SERVICES_BY_ID
from cds_hooks.engine import renal
from cds_hooks.errors import PreconditionFailed
from cds_hooks.hook_context import parse_hook_request
from cds_hooks.knowledge import observation_codes
from cds_hooks.model import DataKind, FhirVersion, HookRequest, MedicationOrder
from cds_hooks.snapshot import assemble_snapshot
from tests.conftest import load_json
from tests.fhir_server import FhirServer, make_settings, operation_outcome, searchset

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NO_SERVER = make_settings([])
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1941-03-02", "gender": "female"}


def observation(rid: str, code: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": "2026-10-01",
        "valueQuantity": {"value": value, "unit": "mL/min/{1.73_m2}"},
        **extra,
    }


def med(rid: str, code: str, name: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": name}],
            "text": name,
        },
        **extra,
    }


LORAZEPAM = med("lzp", "197901", "lorazepam 1 MG Oral Tablet")
AMOXICILLIN = med("amox", "308191", "Amoxicillin 500 MG Oral Capsule")
METFORMIN = med("met", "860975", "Metformin hydrochloride 500 MG Oral Tablet")


def request_with(prefetch: Mapping[str, Any], **fields: Any) -> HookRequest:
    values: dict[str, Any] = {
        "hook": "order-sign",
        "hook_instance": "i-1",
        "service_id": "baclofen-order-sign",
        "patient_id": "p1",
        "prefetch": dict(prefetch),
    }
    values.update(fields)
    return HookRequest(**values)


def from_capture(name: str) -> HookRequest:
    body = load_json(f"requests/{name}")["body"]
    service = next(s for s in SERVICES_BY_ID.values() if s.hook == body["hook"])
    return parse_hook_request(body, service)


def full_prefetch(**overrides: Any) -> dict[str, Any]:
    prefetch: dict[str, Any] = {
        "patient": PATIENT,
        "renalLabs": searchset([observation("egfr", "33914-3", 37)]),
        "weight": searchset([observation("wt", "29463-7", 61)]),
        "activeMedications": searchset([LORAZEPAM]),
        "conditions": searchset([]),
    }
    prefetch.update(overrides)
    return prefetch


def test_full_prefetch_gives_a_complete_snapshot() -> None:
    snapshot = assemble_snapshot(request_with(full_prefetch()), NO_SERVER)
    assert snapshot.patient.birth_date == date(1941, 3, 2)
    assert {o.id for o in snapshot.observations} == {"egfr", "wt"}
    assert [m.reference for m in snapshot.medications] == ["MedicationRequest/lzp"]
    assert snapshot.conditions == ()
    assert snapshot.unavailable == frozenset()


def test_sandbox_capture_with_its_own_prefetch_keys() -> None:
    """The sandbox sends ``egfr`` and ``activeMeds``; their resources are still used."""
    request = from_capture("sandbox-order-select-baclofen10-2tab-tid-spasticity.json")
    snapshot = assemble_snapshot(request, NO_SERVER)
    assert snapshot.patient.birth_date == date(1941, 3, 2)
    assert any(o.code.codes("http://loinc.org") == ("33914-3",) for o in snapshot.observations)
    assert "lorazepam" in " ".join(m.medication_label or "" for m in snapshot.medications).lower()
    assert DataKind.RENAL_LABS not in snapshot.unavailable
    assert DataKind.MEDICATIONS not in snapshot.unavailable
    assert {DataKind.WEIGHT, DataKind.CONDITIONS} <= snapshot.unavailable


def test_synthea_capture_keeps_the_opioid_and_the_kidney_values() -> None:
    request = from_capture("sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json")
    snapshot = assemble_snapshot(request, NO_SERVER)
    labels = " ".join(m.medication_label or "" for m in snapshot.medications).lower()
    assert "oxycodone" in labels
    assert DataKind.RENAL_LABS not in snapshot.unavailable
    assert all(
        m.reference not in {o.reference for o in request.draft_orders} for m in snapshot.medications
    )


def test_legacy_wrapped_patient_is_read() -> None:
    request = from_capture("legacy-medication-prescribe-baclofen10odt.json")
    snapshot = assemble_snapshot(request, NO_SERVER)
    assert snapshot.patient.id == "baclofen-pt-1"
    assert snapshot.patient.birth_date == date(1941, 3, 2)
    assert snapshot.unavailable == {
        DataKind.RENAL_LABS,
        DataKind.WEIGHT,
        DataKind.MEDICATIONS,
        DataKind.CONDITIONS,
    }


def test_no_patient_and_no_server_is_412() -> None:
    with pytest.raises(PreconditionFailed):
        assemble_snapshot(request_with(full_prefetch(patient=operation_outcome())), NO_SERVER)


def test_a_pooled_patient_of_another_id_is_not_used() -> None:
    prefetch = full_prefetch(patient=None, someone={**PATIENT, "id": "p2"})
    with pytest.raises(PreconditionFailed):
        assemble_snapshot(request_with(prefetch), NO_SERVER)


def test_a_pooled_patient_with_the_right_id_is_used() -> None:
    prefetch = full_prefetch(subject=PATIENT)
    del prefetch["patient"]
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    assert snapshot.patient.birth_date == date(1941, 3, 2)


@pytest.fixture
def server() -> Iterator[FhirServer]:
    with FhirServer() as fhir_server:
        yield fhir_server


def test_null_patient_is_412_without_asking_the_server(server: FhirServer) -> None:
    request = request_with(full_prefetch(patient=None), fhir_server=server.base_url)
    with pytest.raises(PreconditionFailed):
        assemble_snapshot(request, make_settings([server.base_url]))
    assert server.requests == []


def test_answered_keys_are_not_fetched_again(server: FhirServer) -> None:
    request = request_with(full_prefetch(renalLabs=None), fhir_server=server.base_url)
    snapshot = assemble_snapshot(request, make_settings([server.base_url]))
    assert server.requests == []
    assert snapshot.unavailable == frozenset()


def test_medications_are_current_ones_other_than_this_hooks_drafts() -> None:
    draft = MedicationOrder(
        reference="MedicationRequest/draft-1",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        status="draft",
    )
    meds = [
        LORAZEPAM,
        med("lzp-stopped", "197901", "lorazepam 1 MG Oral Tablet", status="stopped"),
        med("lzp-hold", "197901", "lorazepam 1 MG Oral Tablet", status="on-hold"),
        med("draft-1", "197391", "Baclofen 10 MG Oral Tablet", status="draft"),
        med("draft-2", "197391", "Baclofen 10 MG Oral Tablet", status="draft"),
    ]
    prefetch = full_prefetch(activeMedications=searchset(meds))
    request = request_with(prefetch, draft_orders=(draft,), selected=(draft.reference,))
    snapshot = assemble_snapshot(request, NO_SERVER)
    assert {m.reference for m in snapshot.medications} == {
        "MedicationRequest/lzp",
        "MedicationRequest/lzp-hold",
        "MedicationRequest/draft-2",
    }


def test_the_active_version_of_a_drafted_order_is_kept() -> None:
    """An EHR may send a stop or a new dose as the active order itself (same id): the
    prefetched active version is the order before the change, so it stays in the list."""
    stop = MedicationOrder(
        reference="MedicationRequest/bac-1",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        status="stopped",
    )
    meds = [med("bac-1", "197391", "Baclofen 10 MG Oral Tablet", authoredOn="2024-05-02")]
    prefetch = full_prefetch(activeMedications=searchset(meds))
    request = request_with(prefetch, draft_orders=(stop,), selected=(stop.reference,))
    (kept,) = assemble_snapshot(request, NO_SERVER).medications
    assert (kept.reference, kept.status, kept.authored_on) == (
        "MedicationRequest/bac-1",
        "active",
        "2024-05-02",
    )


def test_only_medications_of_interest_are_normalised() -> None:
    irrelevant = [{**AMOXICILLIN, "id": f"amox-{i}"} for i in range(10)]
    irrelevant += [{**METFORMIN, "id": f"met-{i}"} for i in range(9)]
    meds = [LORAZEPAM, *irrelevant]
    snapshot = assemble_snapshot(
        request_with(full_prefetch(activeMedications=searchset(meds))), NO_SERVER
    )
    assert [m.reference for m in snapshot.medications] == ["MedicationRequest/lzp"]
    assert DataKind.MEDICATIONS not in snapshot.unavailable


def test_bundled_medication_resources_resolve_references() -> None:
    by_reference = {
        "resourceType": "MedicationRequest",
        "id": "oxy",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "Medication/m-oxy"},
    }
    medication = {
        "resourceType": "Medication",
        "id": "m-oxy",
        "code": {"coding": [{"system": RXNORM, "code": "1049621", "display": "oxycodone 5 MG"}]},
    }
    prefetch = full_prefetch(activeMedications=searchset([by_reference, medication]))
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    (order,) = snapshot.medications
    assert order.medication is not None
    assert order.medication.codes(RXNORM) == ("1049621",)


def test_an_unresolvable_reference_is_counted_not_dropped_in_silence() -> None:
    unknown = {
        "resourceType": "MedicationRequest",
        "id": "mystery",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/elsewhere"},
    }
    prefetch = full_prefetch(activeMedications=searchset([unknown]))
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    assert snapshot.medications == ()
    assert snapshot.unidentified_medications == 1


def test_malformed_resources_do_not_fail_the_call() -> None:
    junk_condition = {"resourceType": "Condition", "id": "bad", "code": 5, "subject": []}
    junk_med = {"resourceType": "MedicationRequest", "status": "active", "dosageInstruction": 7}
    junk_obs = observation("weird", "33914-3", 0, valueQuantity="many")
    odd_types = [
        observation("list-status", "33914-3", 1, status=["final"]),
        {**observation("list-code", "33914-3", 1), "code": {"coding": [{"code": ["x"]}]}},
        {**LORAZEPAM, "id": "list-status", "status": ["active"]},
    ]
    prefetch = full_prefetch(
        conditions=searchset([junk_condition]),
        activeMedications=searchset([LORAZEPAM, junk_med, AMOXICILLIN, odd_types[2]]),
        renalLabs=searchset([junk_obs, *odd_types[:2], observation("egfr", "33914-3", 37)]),
        otherLabs={
            "resourceType": "Bundle",
            "entry": [{"resource": operation_outcome(), "search": {"mode": "outcome"}}],
            "link": [{"relation": "next", "url": ["not", "a", "url"]}],
        },
        extra=["not", "fhir"],
    )
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    assert "egfr" in {o.id for o in snapshot.observations}
    assert "MedicationRequest/lzp" in {m.reference for m in snapshot.medications}


def test_only_known_codes_of_live_observations_are_kept() -> None:
    labs = [
        observation("egfr", "33914-3", 37),
        observation("glucose", "2345-7", 5.4),
        observation("retracted", "33914-3", 90, status="entered-in-error"),
    ]
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset(labs))), NO_SERVER)
    assert {o.id for o in snapshot.observations} == {"egfr", "wt"}


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/p2",
        "https://ehr.example.org/fhir/Patient/p2",
        "Patient/p2/_history/3",
        "Patient/p1x",
    ],
)
def test_resources_of_another_patient_are_dropped(reference: str) -> None:
    foreign = observation("other-egfr", "33914-3", 90, subject={"reference": reference})
    prefetch = full_prefetch(renalLabs=searchset([foreign]))
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    assert "other-egfr" not in {o.id for o in snapshot.observations}


@pytest.mark.parametrize(
    "reference", ["Patient/p1", "https://ehr.example.org/fhir/Patient/p1", "Patient/p1/_history/2"]
)
def test_resources_of_this_patient_are_kept_however_referenced(reference: str) -> None:
    own = observation("own-egfr", "33914-3", 90, subject={"reference": reference})
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset([own]))), NO_SERVER)
    assert "own-egfr" in {o.id for o in snapshot.observations}


def test_a_prefetched_operation_outcome_without_a_server_is_a_gap() -> None:
    prefetch = full_prefetch(renalLabs=operation_outcome(), conditions=operation_outcome())
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    assert snapshot.unavailable == {DataKind.RENAL_LABS, DataKind.CONDITIONS}


def test_a_prefetched_list_with_unread_pages_and_no_server_is_a_gap() -> None:
    paged = searchset([LORAZEPAM], "https://ehr.example.org/fhir/MedicationRequest?page=2")
    snapshot = assemble_snapshot(request_with(full_prefetch(activeMedications=paged)), NO_SERVER)
    assert [m.reference for m in snapshot.medications] == ["MedicationRequest/lzp"]
    assert DataKind.MEDICATIONS in snapshot.unavailable


# --- only what the engine uses is validated --------------------------------------------

CREATININE = "38483-4"
WEIGHT = "29463-7"


def lab(rid: str, code: str, value: float, day: str, **extra: Any) -> dict[str, Any]:
    return observation(rid, code, value, effectiveDateTime=day, **extra)


def test_a_broken_irrelevant_part_of_the_patient_does_not_matter() -> None:
    patient = {
        **PATIENT,
        "extension": [{"url": 5, "valueString": {"not": "a string"}}],
        "identifier": "not a list of identifiers",
        "address": [{"line": 7}],
        "text": {"status": "nonsense", "div": 3},
    }
    assert fhir.patient(patient) == fhir.patient(PATIENT)
    snapshot = assemble_snapshot(request_with(full_prefetch(patient=patient)), NO_SERVER)
    assert snapshot.patient.birth_date == date(1941, 3, 2)
    assert snapshot.patient.gender == "female"


def test_only_the_newest_lab_of_each_kind_is_read() -> None:
    labs = [
        lab("egfr-old", "33914-3", 80, "2019-01-01", valueQuantity="malformed"),
        lab("egfr-new", "33914-3", 37, "2026-10-01"),
        lab("scr-old", CREATININE, 1.0, "2020-01-01", status=["final"]),
        lab(
            "scr-new", CREATININE, 1.4, "2026-10-02", valueQuantity={"value": 1.4, "unit": "mg/dL"}
        ),
        lab("egfr-older", "33914-3", 60, "2025-01-01"),
    ]
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset(labs))), NO_SERVER)
    assert {o.id for o in snapshot.observations} == {"egfr-new", "scr-new", "wt"}
    assert DataKind.RENAL_LABS not in snapshot.unavailable


@pytest.mark.parametrize(
    "unusable",
    [
        {"valueQuantity": None, "dataAbsentReason": {"text": "not performed"}},
        {"status": "registered"},
        {"valueQuantity": {"value": 37, "unit": "%"}},
        {"valueQuantity": "malformed"},
        {"valueQuantity": {"value": -1, "unit": "mL/min/{1.73_m2}"}},
    ],
)
def test_a_newest_lab_the_engine_cannot_use_does_not_hide_the_next(
    unusable: dict[str, Any],
) -> None:
    newest = {**lab("egfr-new", "33914-3", 37, "2026-10-01"), **unusable}
    labs = [newest, lab("egfr-next", "33914-3", 52, "2026-09-01")]
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset(labs))), NO_SERVER)
    assert "egfr-next" in {o.id for o in snapshot.observations}
    status = renal.assess(
        snapshot.observations, snapshot.patient, observation_codes(), date(2026, 10, 5), 365
    )
    egfr = status.egfr()
    assert egfr is not None and egfr.value == 52


def test_labs_of_the_newest_day_are_all_read() -> None:
    """On one day the engine prefers its first code; it must see every candidate of that day."""
    labs = [
        lab("egfr-a", "33914-3", 40, "2026-10-01T08:00:00Z"),
        lab("egfr-b", "62238-1", 45, "2026-10-01T09:00:00Z"),
        lab("egfr-old", "33914-3", 70, "2026-01-01"),
    ]
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset(labs))), NO_SERVER)
    assert {o.id for o in snapshot.observations} >= {"egfr-a", "egfr-b"}
    assert "egfr-old" not in {o.id for o in snapshot.observations}


def test_the_creatinines_of_the_kidney_injury_window_are_read_and_no_older_ones() -> None:
    """The engine compares the newest creatinine with those of the window before it."""
    window = observation_codes().creatinine_rise.history_days
    newest = date(2026, 10, 20)

    def creatinine(rid: str, value: float, days_before: int) -> dict[str, Any]:
        day = date.fromordinal(newest.toordinal() - days_before).isoformat()
        return lab(rid, CREATININE, value, day, valueQuantity={"value": value, "unit": "mg/dL"})

    labs = [
        creatinine("scr-new", 1.4, 0),
        creatinine("scr-window", 0.9, window),
        creatinine("scr-beyond", 0.5, window + 2),
        lab("egfr-new", "33914-3", 50, newest.isoformat()),
        lab("egfr-day-before", "33914-3", 90, "2026-10-19"),
    ]
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset(labs))), NO_SERVER)
    read = {o.id for o in snapshot.observations}
    assert {"scr-new", "scr-window", "egfr-new"} <= read
    assert not read & {"scr-beyond", "egfr-day-before"}
    status = renal.assess(snapshot.observations, snapshot.patient, observation_codes(), newest, 365)
    assert status.rise is not None and status.rise.baseline == 0.9


def test_a_weight_without_a_date_does_not_hide_a_dated_one() -> None:
    undated = {**lab("wt-undated", WEIGHT, 70, "2026-10-01"), "effectiveDateTime": None}
    weights = [
        undated,
        lab("wt-dated", WEIGHT, 61, "2026-09-01", valueQuantity={"value": 61, "unit": "kg"}),
    ]
    snapshot = assemble_snapshot(request_with(full_prefetch(weight=searchset(weights))), NO_SERVER)
    assert "wt-dated" in {o.id for o in snapshot.observations}


def test_a_lab_without_a_plain_date_is_read_as_it_may_be_the_newest() -> None:
    undated = {**lab("egfr-undated", "33914-3", 20, "2026-10-01"), "effectiveDateTime": None}
    labs = [lab("egfr-dated", "33914-3", 37, "2026-10-01"), undated]
    snapshot = assemble_snapshot(request_with(full_prefetch(renalLabs=searchset(labs))), NO_SERVER)
    assert {"egfr-dated", "egfr-undated"} <= {o.id for o in snapshot.observations}


def test_a_malformed_irrelevant_medication_does_not_fail_the_request() -> None:
    broken = {
        **METFORMIN,
        "dosageInstruction": 7,
        "extension": [{"url": 5}],
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": ["860975"], "display": "metformin"}],
            "text": "Metformin 500 MG",
        },
    }
    lorazepam = {**LORAZEPAM, "requester": "Dr Nobody", "dispenseRequest": [5]}
    prefetch = full_prefetch(activeMedications=searchset([broken, lorazepam]))
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    (order,) = snapshot.medications
    assert order.reference == "MedicationRequest/lzp"
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197901",)
    assert order.problems == ()


def test_a_previous_baclofen_order_is_read_whole_a_co_medication_by_its_drug() -> None:
    bad_timing = [{"timing": {"repeat": {"frequency": "thrice"}}, "text": "three times a day"}]
    baclofen = med("bac", "197391", "Baclofen 10 MG Oral Tablet", dosageInstruction=bad_timing)
    lorazepam = {**LORAZEPAM, "dosageInstruction": bad_timing}
    prefetch = full_prefetch(activeMedications=searchset([baclofen, lorazepam]))
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    orders = {m.reference: m for m in snapshot.medications}
    assert any("not valid FHIR" in p for p in orders["MedicationRequest/bac"].problems)
    assert not any("not valid FHIR" in p for p in orders["MedicationRequest/lzp"].problems)
    assert orders["MedicationRequest/bac"].dosages
    assert orders["MedicationRequest/lzp"].dosages == ()  # the engine reads its drug alone


def test_only_conditions_that_could_raise_a_flag_are_read() -> None:
    def condition(rid: str, text: Any) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": rid,
            "subject": {"reference": "Patient/p1"},
            "code": text if not isinstance(text, str) else {"text": text},
        }

    conditions = [
        condition("htn", "Essential hypertension"),
        condition("junk", {"coding": "broken"}),
        condition("dialysis", "Dependence on renal dialysis"),
    ]
    prefetch = full_prefetch(conditions=searchset(conditions))
    snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    assert [c.id for c in snapshot.conditions] == ["dialysis"]
    assert DataKind.CONDITIONS not in snapshot.unavailable


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
RESOURCE_TYPES = st.sampled_from(
    [
        "Patient",
        "Observation",
        "MedicationRequest",
        "MedicationOrder",
        "Condition",
        "Medication",
        "Bundle",
        "OperationOutcome",
    ]
)
FIELDS = st.sampled_from(
    [
        "id",
        "status",
        "code",
        "subject",
        "entry",
        "resource",
        "birthDate",
        "valueQuantity",
        "medicationCodeableConcept",
        "medicationReference",
        "issue",
        "link",
        "response",
    ]
)
RESOURCE = st.builds(
    lambda rtype, fields: {"resourceType": rtype, **fields},
    RESOURCE_TYPES,
    st.dictionaries(FIELDS, JSON, max_size=5),
)
VALUE = st.one_of(
    st.none(),
    JSON,
    RESOURCE,
    st.builds(lambda rs: searchset(rs), st.lists(RESOURCE, max_size=4)),
    st.builds(lambda r: {"resource": r, "response": {"status": "200 OK"}}, RESOURCE),
)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*(k.value for k in DataKind), "egfr", "activeMeds"]), VALUE, max_size=6
    )
)
def test_any_prefetch_gives_a_snapshot_or_412(prefetch: dict[str, Any]) -> None:
    try:
        snapshot = assemble_snapshot(request_with(prefetch), NO_SERVER)
    except PreconditionFailed:
        return
    assert snapshot.patient.id == "p1"
