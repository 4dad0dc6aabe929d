"""FHIR resources of every version and dialect read into the internal model."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks import fhir
from cds_hooks.model import (
    LOINC,
    RXNORM,
    Condition,
    FhirVersion,
    MedicationOrder,
    Observation,
    Patient,
    Quantity,
    Ratio,
)

DATA = Path(__file__).parent / "data"
HL7_MEDICATION_REQUESTS = sorted((DATA / "fhir").glob("medicationrequest*.json"))


def load_json(relative: str) -> Any:
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


def hl7(name: str) -> dict[str, Any]:
    resource = load_json(f"fhir/{name}.json")
    assert isinstance(resource, dict)
    return resource


def sandbox_r4_draft() -> dict[str, Any]:
    body = load_json("requests/sandbox-order-select-baclofen10-2tab-tid-spasticity.json")["body"]
    return copy.deepcopy(body["context"]["draftOrders"]["entry"][0]["resource"])


def sandbox_prefetch(key: str) -> dict[str, Any]:
    body = load_json("requests/sandbox-order-select-baclofen10-2tab-tid-spasticity.json")["body"]
    return copy.deepcopy(body["prefetch"][key])


def legacy_stu3_draft() -> dict[str, Any]:
    body = load_json("requests/legacy-medication-prescribe-baclofen10odt.json")["body"]
    return copy.deepcopy(body["context"]["medications"][0])


BACLOFEN_10 = {
    "text": "Baclofen 10 MG Oral Tablet",
    "coding": [
        {"display": "Baclofen 10 MG Oral Tablet", "system": RXNORM, "code": "197391"},
    ],
}

# The current sandbox's draft against its default DSTU2 server (protocol note §4.1).
SANDBOX_DSTU2_ORDER = {
    "resourceType": "MedicationOrder",
    "id": "order-123",
    "status": "draft",
    "patient": {"reference": "Patient/smart-1288992"},
    "dateWritten": "2026-11-22",
    "dosageInstruction": [
        {
            "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnits": "d"}},
            "doseQuantity": {"value": 2, "system": "http://unitsofmeasure.org", "code": "{pill}"},
        }
    ],
    "dispenseRequest": {
        "expectedSupplyDuration": {
            "value": 30,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    },
    "intent": "order",
    "category": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                "code": "community",
            }
        ]
    },
    "medicationCodeableConcept": BACLOFEN_10,
}


def dose_summary(order: MedicationOrder) -> tuple[Any, ...]:
    (dosage,) = order.dosages
    assert dosage.dose is not None and dosage.timing is not None
    t = dosage.timing
    return dosage.dose.value, dosage.dose.units, t.frequency, t.period, t.period_unit


def test_dstu2_sandbox_medication_order() -> None:
    order = fhir.medication_order(SANDBOX_DSTU2_ORDER)
    assert order.reference == "MedicationOrder/order-123"
    assert order.resource_type == "MedicationOrder"
    assert order.fhir_version is FhirVersion.DSTU2
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197391",)
    assert dose_summary(order) == (2.0, "{pill}", 3, 1.0, "d")
    assert order.authored_on == "2026-11-22"
    assert order.status == "draft"
    assert order.problems == ()


def test_dstu2_range_prn_max_route_and_single_when() -> None:
    resource = {
        "resourceType": "MedicationOrder",
        "id": "o1",
        "dateWritten": "2016-05-01",
        "priorPrescription": {"reference": "MedicationOrder/old"},
        "reasonCodeableConcept": {"text": "Spasticity"},
        "medicationCodeableConcept": BACLOFEN_10,
        "dosageInstruction": [
            {
                "doseRange": {
                    "low": {"value": 5, "unit": "mg", "code": "mg"},
                    "high": {"value": 10, "unit": "mg", "code": "mg"},
                },
                "timing": {
                    "code": {"coding": [{"code": "TID"}]},
                    "repeat": {"frequency": 1, "period": 8, "periodUnits": "h", "when": "HS"},
                },
                "asNeededBoolean": True,
                "maxDosePerPeriod": {
                    "numerator": {"value": 80, "code": "mg"},
                    "denominator": {"value": 1, "code": "d"},
                },
                "route": {"text": "oral"},
            }
        ],
    }
    order = fhir.medication_order(resource)
    (dosage,) = order.dosages
    assert dosage.dose is None
    assert dosage.dose_range_low == Quantity(value=5.0, unit="mg", code="mg")
    assert dosage.dose_range_high is not None and dosage.dose_range_high.value == 10.0
    assert dosage.as_needed is True
    assert dosage.max_dose_per_period == Ratio(
        Quantity(value=80.0, code="mg"), Quantity(value=1.0, code="d")
    )
    assert dosage.route is not None and dosage.route.label == "oral"
    assert dosage.timing is not None
    assert (dosage.timing.period, dosage.timing.period_unit) == (8.0, "h")
    assert dosage.timing.when == ("HS",)
    assert dosage.timing.code is not None and dosage.timing.code.codings[0].code == "TID"
    assert order.prior_prescription == "MedicationOrder/old"
    assert order.problems == ()


def test_stu3_legacy_request_without_intent_validates() -> None:
    order = fhir.medication_order(legacy_stu3_draft())
    assert order.fhir_version is FhirVersion.STU3
    assert order.intent is None
    assert order.medication is not None and order.medication.codes(RXNORM) == ("617299",)
    assert dose_summary(order) == (1.0, "{pill}", 1, 1.0, "d")
    assert order.problems == ()


def test_stu3_prn_concept_and_max_per_administration() -> None:
    resource = legacy_stu3_draft()
    resource["intent"] = "order"
    dosage = resource["dosageInstruction"][0]
    dosage["asNeededCodeableConcept"] = {"text": "spasm"}
    dosage["maxDosePerAdministration"] = {"value": 20, "unit": "mg"}
    dosage["timing"]["repeat"].update({"frequencyMax": 4, "periodMax": 2, "count": 30})
    order = fhir.medication_order(resource)
    (read,) = order.dosages
    assert order.fhir_version is FhirVersion.STU3
    assert read.as_needed is True
    assert read.max_dose_per_administration == Quantity(value=20.0, unit="mg")
    assert read.timing is not None
    assert (read.timing.frequency_max, read.timing.period_max, read.timing.count) == (4, 2.0, 30)
    assert order.intent == "order"


def test_r4_sandbox_quirks_do_not_cost_validation() -> None:
    resource = sandbox_r4_draft()
    assert isinstance(resource["category"], dict) and isinstance(resource["reasonCode"], dict)
    order = fhir.medication_order(resource)
    assert order.fhir_version is FhirVersion.R4
    assert order.problems == ()
    assert dose_summary(order) == (2.0, "{pill}", 3, 1.0, "d")
    assert order.raw is resource
    assert isinstance(resource["category"], dict)


def test_invalid_r4_is_read_leniently_with_a_problem_free_of_values() -> None:
    resource = sandbox_r4_draft()
    resource["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = "thrice"
    resource["status"] = {"unexpected": "Edna Testperson"}
    order = fhir.medication_order(resource)
    assert order.fhir_version is FhirVersion.R4
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197391",)
    (dosage,) = order.dosages
    assert dosage.dose is not None and dosage.dose.value == 2.0
    assert dosage.timing is not None and dosage.timing.frequency is None
    assert any("not valid FHIR R4" in p for p in order.problems)
    assert any("frequency" in p for p in order.problems)
    assert not any("thrice" in p or "Edna" in p for p in order.problems)


def test_elements_never_read_are_not_validated() -> None:
    """Only the projection the normalisers read is validated: junk elsewhere costs nothing."""
    resource = sandbox_r4_draft()
    resource["requester"] = "Dr Nobody"
    resource["note"] = {"text": 5}
    resource["extension"] = [{"url": 7}]
    order = fhir.medication_order(resource)
    assert order.problems == ()
    (dosage,) = order.dosages
    assert dosage.dose is not None and dosage.dose.value == 2.0


def test_a_drug_only_reading_validates_the_drug_and_leaves_the_dosage_unread() -> None:
    resource = sandbox_r4_draft()
    resource["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = "thrice"
    whole = fhir.medication_order(resource)
    drug_only = fhir.medication_order(resource, drug_only=True)
    assert any("not valid FHIR R4" in p for p in whole.problems)
    assert not any("not valid FHIR" in p for p in drug_only.problems)
    assert drug_only.medication == whole.medication
    assert (drug_only.reference, drug_only.status) == (whole.reference, whole.status)
    assert whole.dosages and drug_only.dosages == ()
    resource["medicationCodeableConcept"]["coding"][0]["code"] = ["197391"]
    broken_drug = fhir.medication_order(resource, drug_only=True)
    assert any("medicationCodeableConcept is not valid FHIR R4" in p for p in broken_drug.problems)


def test_unreadable_resource_still_yields_an_order() -> None:
    order = fhir.medication_order("not a resource", fallback_reference="MedicationRequest/#3")  # type: ignore[arg-type]
    assert order.reference == "MedicationRequest/#3"
    assert order.medication is None
    assert order.problems


def test_medication_as_plain_text_is_kept_for_name_matching() -> None:
    resource = sandbox_r4_draft()
    resource["medicationCodeableConcept"] = "baclofen 10 mg"
    order = fhir.medication_order(resource)
    assert order.medication is not None and order.medication.text == "baclofen 10 mg"
    assert order.problems


def test_ordered_dose_preferred_over_calculated() -> None:
    resource = sandbox_r4_draft()
    resource["dosageInstruction"][0]["doseAndRate"] = [
        {"type": {"coding": [{"code": "calculated"}]}, "doseQuantity": {"value": 7, "code": "mg"}},
        {"type": {"coding": [{"code": "ordered"}]}, "doseQuantity": {"value": 5, "code": "mg"}},
    ]
    (dosage,) = fhir.medication_order(resource).dosages
    assert dosage.dose is not None and dosage.dose.value == 5.0


UG_PER_H = {"value": 20, "unit": "ug/h", "system": "http://unitsofmeasure.org", "code": "ug/h"}
UG_PER_DAY_RATIO = {
    "numerator": {"value": 400, "unit": "ug", "code": "ug"},
    "denominator": {"value": 1, "unit": "d", "code": "d"},
}


def r4_pump(dose_and_rate: list[dict[str, Any]]) -> dict[str, Any]:
    resource = sandbox_r4_draft()
    resource["dosageInstruction"] = [{"doseAndRate": dose_and_rate}]
    return resource


@pytest.mark.parametrize(
    ("resource", "version", "expected"),
    [
        (
            r4_pump([{"rateQuantity": UG_PER_H}]),
            FhirVersion.R4,
            Quantity(20.0, "ug/h", "ug/h", "http://unitsofmeasure.org"),
        ),
        (
            r4_pump([{"rateRatio": UG_PER_DAY_RATIO}]),
            FhirVersion.R4,
            Quantity(400.0, "ug/d", "ug/d"),
        ),
        (
            r4_pump(
                [
                    {"type": {"coding": [{"code": "calculated"}]}, "rateQuantity": UG_PER_H},
                    {
                        "type": {"coding": [{"code": "ordered"}]},
                        "rateRange": {"high": {"value": 30, "code": "ug/h"}},
                    },
                ]
            ),
            FhirVersion.R4,
            Quantity(30.0, code="ug/h"),
        ),
        (
            legacy_stu3_draft()
            | {"dosageInstruction": [{"rateQuantity": {"value": 0.4, "unit": "mL/h"}}]},
            FhirVersion.STU3,
            Quantity(0.4, unit="mL/h"),
        ),
        (
            legacy_stu3_draft()
            | {
                "dosageInstruction": [
                    {
                        "rateRatio": {
                            "numerator": {"value": 0.4, "code": "mg"},
                            "denominator": {"value": 24, "code": "h"},
                        }
                    }
                ]
            },
            FhirVersion.STU3,
            Quantity(0.4, code="mg/(24.h)"),
        ),
        (
            SANDBOX_DSTU2_ORDER | {"dosageInstruction": [{"rateRatio": UG_PER_DAY_RATIO}]},
            FhirVersion.DSTU2,
            Quantity(400.0, "ug/d", "ug/d"),
        ),
        (
            SANDBOX_DSTU2_ORDER
            | {
                "dosageInstruction": [
                    {
                        "rateRange": {
                            "low": {"value": 10, "unit": "ug/h"},
                            "high": {"value": 25, "unit": "ug/h"},
                        }
                    }
                ]
            },
            FhirVersion.DSTU2,
            Quantity(25.0, unit="ug/h"),
        ),
    ],
    ids=[
        "R4-quantity",
        "R4-ratio",
        "R4-ordered-range",
        "STU3-quantity",
        "STU3-ratio-24h",
        "DSTU2-ratio",
        "DSTU2-range-high",
    ],
)
def test_pump_rate_is_read_as_amount_per_time(
    resource: dict[str, Any], version: FhirVersion, expected: Quantity
) -> None:
    order = fhir.medication_order(resource)
    assert order.fhir_version is version
    (dosage,) = order.dosages
    assert dosage.rate == expected
    assert dosage.dose is None
    assert order.problems == ()


def test_dose_and_rate_are_both_kept() -> None:
    order = fhir.medication_order(
        r4_pump([{"doseQuantity": {"value": 50, "code": "ug"}, "rateQuantity": UG_PER_H}])
    )
    (dosage,) = order.dosages
    assert dosage.dose == Quantity(50.0, code="ug")
    assert dosage.rate is not None and dosage.rate.value == 20


def test_malformed_rate_is_named_not_raised() -> None:
    order = fhir.medication_order(r4_pump([{"rateRange": "fast"}]))
    (dosage,) = order.dosages
    assert dosage.rate is None
    assert any("rateRange" in p for p in order.problems)


def test_version_unknown_from_dosage_falls_back_to_r4_then_stu3() -> None:
    r4 = {
        "resourceType": "MedicationRequest",
        "id": "a",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "medicationCodeableConcept": BACLOFEN_10,
    }
    assert fhir.medication_order(r4).fhir_version is FhirVersion.R4
    stu3 = dict(r4, requester={"agent": {"reference": "Practitioner/x"}})
    order = fhir.medication_order(stu3)
    assert order.fhir_version is FhirVersion.STU3
    assert order.problems == ()


def test_contained_medication_reference_gives_name_form_and_strength() -> None:
    order = fhir.medication_order(hl7("medicationrequest0315"))
    assert order.medication_label == "Lorazepam 2mg/ml injection solution 1ml vial (product)"
    assert order.product is not None and order.product.form is not None
    assert order.product.strength == Ratio(
        Quantity(value=2.0, code="mg", system="http://unitsofmeasure.org"),
        Quantity(value=1.0, code="mL", system="http://unitsofmeasure.org"),
    )


def test_bundled_medication_reference_is_resolved() -> None:
    resource = sandbox_r4_draft()
    del resource["medicationCodeableConcept"]
    resource["medicationReference"] = {"reference": "Medication/bac"}
    medication = {
        "resourceType": "Medication",
        "id": "bac",
        "code": BACLOFEN_10,
        "form": {"text": "tablet"},
        "ingredient": [
            {
                "itemCodeableConcept": {"text": "baclofen"},
                "strength": {
                    "numerator": {"value": 10, "code": "mg"},
                    "denominator": {"value": 1, "code": "{tbl}"},
                },
            }
        ],
    }
    index = fhir.medication_index({"resourceType": "Bundle", "entry": [{"resource": medication}]})
    order = fhir.medication_order(resource, contained_or_bundled=index)
    assert order.medication is not None and order.medication.codes(RXNORM) == ("197391",)
    assert order.product is not None and order.product.strength is not None
    assert order.product.strength.numerator.value == 10.0
    assert order.problems == ()


def test_unresolvable_medication_reference_falls_back_to_display() -> None:
    order = fhir.medication_order(hl7("medicationrequestexample2"))
    assert order.medication is not None and order.medication.text == "prescribed medication"
    assert order.product is None
    assert any("could not be resolved" in p for p in order.problems)


def test_compounded_medication_without_code_is_named_by_ingredients() -> None:
    order = fhir.medication_order(hl7("medicationrequest0329"))
    assert order.medication is not None and order.medication.label is not None
    assert "White Petrolatum" in order.medication.label
    assert order.problems == ("the referenced Medication has no code",)


@pytest.mark.parametrize("path", HL7_MEDICATION_REQUESTS, ids=lambda p: p.stem)
def test_every_hl7_r4_example_normalises(path: Path) -> None:
    order = fhir.medication_order(json.loads(path.read_text(encoding="utf-8")))
    assert order.fhir_version is FhirVersion.R4
    assert order.reference.startswith("MedicationRequest/medrx")
    assert order.medication_label
    assert not any("not valid FHIR" in p for p in order.problems)


def test_hl7_examples_concrete_doses() -> None:
    oxycodone = fhir.medication_order(hl7("medicationrequest0301")).dosages[0]
    assert oxycodone.dose_range_low is not None and oxycodone.dose_range_low.value == 1.0
    assert oxycodone.dose_range_high is not None and oxycodone.dose_range_high.value == 2.0
    assert oxycodone.as_needed is True
    assert oxycodone.timing is not None
    assert (oxycodone.timing.period, oxycodone.timing.period_max) == (4.0, 6.0)

    paracetamol = fhir.medication_order(hl7("medicationrequest0324")).dosages[0]
    assert paracetamol.max_dose_per_period is not None
    assert paracetamol.max_dose_per_period.numerator.value == 720.0
    assert paracetamol.max_dose_per_period.denominator.units == "d"

    adcetris = fhir.medication_order(hl7("medicationrequest0316")).dosages[0]
    assert adcetris.dose == Quantity(
        value=1.8, unit="mg/kg", code="mg/kg", system="http://unitsofmeasure.org"
    )
    assert adcetris.timing is not None
    assert (adcetris.timing.period, adcetris.timing.period_unit, adcetris.timing.count) == (
        3.0,
        "wk",
        16,
    )

    novolog = fhir.medication_order(hl7("medicationrequest0321")).dosages[0]
    assert novolog.timing is not None and novolog.timing.when == ("ACM",)

    chlorthalidone = fhir.medication_order(hl7("medicationrequestexample1")).dosages[0]
    assert chlorthalidone.timing is not None and chlorthalidone.timing.code is not None
    assert chlorthalidone.timing.code.codings[0].code == "QD"

    prednisone = fhir.medication_order(hl7("medicationrequest0303"))
    assert prednisone.dosages[0].timing is not None
    assert prednisone.dosages[0].timing.bounds_end == "2015-01-20"
    assert prednisone.authored_on == "2015-01-15"


@pytest.mark.parametrize(
    ("birth_date", "expected"),
    [
        ("1941-03-02", date(1941, 3, 2)),
        ("1941-03", date(1941, 3, 1)),
        ("1941", date(1941, 1, 1)),
        ("not a date", None),
    ],
)
def test_patient_birth_date_partial_dates_take_the_earliest_day(
    birth_date: str, expected: date | None
) -> None:
    read = fhir.patient(
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": birth_date}
    )
    assert read is not None
    assert (read.id, read.gender, read.birth_date) == ("p1", "female", expected)


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ({}, False),
        ({"deceasedBoolean": False}, False),
        ({"deceasedBoolean": True}, True),
        ({"deceasedDateTime": "1985-01-28T22:39:41+00:00"}, date(1985, 1, 28)),
        ({"deceasedDateTime": "1985"}, date(1985, 1, 1)),
        # Unreadable, but the record still says the patient died.
        ({"deceasedDateTime": "late January"}, True),
    ],
)
def test_patient_deceased_in_every_version(element: dict[str, Any], expected: date | bool) -> None:
    """DSTU2, STU3 and R4 spell ``deceased[x]`` alike."""
    read = fhir.patient({"resourceType": "Patient", "id": "p1", **element})
    assert read is not None and read.deceased == expected
    assert type(read.deceased) is type(expected)


def test_patient_from_sandbox_prefetch_and_junk() -> None:
    read = fhir.patient(sandbox_prefetch("patient"))
    assert read is not None and read.birth_date == date(1941, 3, 2)
    assert fhir.patient(None) is None
    assert fhir.patient({"resourceType": "Observation"}) is None


def test_observation_egfr_from_sandbox_prefetch() -> None:
    (resource,) = fhir.bundle_resources(sandbox_prefetch("egfr"))
    read = fhir.observation(resource)
    assert read is not None
    assert read.code.codes(LOINC) == ("33914-3",)
    assert read.value is not None and read.value.value == 28.0
    assert read.value.units == "mL/min/{1.73_m2}"
    assert read.effective == datetime(2025, 1, 15, 8, tzinfo=UTC)
    assert read.status == "final"


def observation_with(**value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "33914-3"}]},
        **value,
    }


@pytest.mark.parametrize(
    ("value", "expected_value", "comparator", "text"),
    [
        ({"valueQuantity": {"value": 60, "comparator": ">", "unit": "mL/min"}}, 60.0, ">", None),
        ({"valueString": ">60"}, 60.0, ">", ">60"),
        ({"valueString": "≥ 90 mL/min/1.73m2"}, 90.0, ">=", "≥ 90 mL/min/1.73m2"),
        ({"valueString": "45"}, 45.0, None, "45"),
        ({"valueString": "see comment"}, None, None, "see comment"),
        ({"valueInteger": 52}, 52.0, None, None),
        ({"dataAbsentReason": {"text": "not performed"}}, None, None, None),
    ],
)
def test_observation_values(
    value: dict[str, Any], expected_value: float | None, comparator: str | None, text: str | None
) -> None:
    read = fhir.observation(observation_with(**value))
    assert read is not None
    assert (read.value.value if read.value else None) == expected_value
    assert (read.value.comparator if read.value else None) == comparator
    assert read.value_text == text


@pytest.mark.parametrize(
    ("effective", "expected"),
    [
        ({"effectiveDateTime": "2025-01-15"}, datetime(2025, 1, 15, tzinfo=UTC)),
        ({"effectiveDateTime": "2025-01"}, datetime(2025, 1, 1, tzinfo=UTC)),
        (
            {"effectiveDateTime": "2025-01-15T08:00:00+02:00"},
            datetime(2025, 1, 15, 8, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            {"effectivePeriod": {"start": "2024-12-31T23:00:00Z"}},
            datetime(2024, 12, 31, 23, tzinfo=UTC),
        ),
        (
            {"issued": "2024-06-01T10:00:00.123Z"},
            datetime(2024, 6, 1, 10, 0, 0, 123000, tzinfo=UTC),
        ),
        ({}, None),
    ],
)
def test_observation_effective_time_is_timezone_aware(
    effective: dict[str, Any], expected: datetime | None
) -> None:
    read = fhir.observation(observation_with(valueQuantity={"value": 1}, **effective))
    assert read is not None
    assert read.effective == expected
    assert read.effective is None or read.effective.tzinfo is not None


_DAY = "2025-01-15T08:00:00Z"
_ISSUED = "2025-01-16T09:00:00Z"


@pytest.mark.parametrize(
    ("effective", "expected"),
    [
        (
            {
                "effectiveDateTime": "2025-01-14",
                "effectiveInstant": _DAY,
                "effectivePeriod": {"start": _DAY},
                "issued": _ISSUED,
            },
            datetime(2025, 1, 14, tzinfo=UTC),
        ),
        (
            {"effectiveDateTime": "soon", "effectiveInstant": _DAY},
            datetime(2025, 1, 15, 8, tzinfo=UTC),
        ),
        (
            {"effectivePeriod": {"start": "x"}, "issued": _ISSUED},
            datetime(2025, 1, 16, 9, tzinfo=UTC),
        ),
        ({"effectivePeriod": [{"start": _DAY}], "issued": 5}, None),
        ({"effectivePeriod": _DAY}, None),
    ],
)
def test_observation_effective_takes_the_first_readable_time(
    effective: dict[str, Any], expected: datetime | None
) -> None:
    """effective[x] before issued, in element order; an unreadable one is passed over."""
    assert fhir.observation_effective(effective) == expected


def test_hl7_observations() -> None:
    creatinine = fhir.observation(hl7("observation-example-f204-creatinine"))
    assert creatinine is not None and creatinine.value is not None
    assert (creatinine.value.value, creatinine.value.unit) == (122.0, "umol/L")
    egfr = fhir.observation(hl7("observation-example-f205-egfr"))
    assert egfr is not None
    assert egfr.code.codes(LOINC) == ("33914-3",)
    assert egfr.value is None
    assert egfr.effective is not None


def test_observation_without_code_or_wrong_type_is_skipped() -> None:
    assert fhir.observation({"resourceType": "Observation", "status": "final"}) is None
    assert fhir.observation(["Observation"]) is None


@pytest.mark.parametrize(
    ("resource", "clinical", "verification"),
    [
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "90688005"}]},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "verificationStatus": {"coding": [{"code": "confirmed"}]},
            },
            "active",
            "confirmed",
        ),
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "Patient/p"},
                "code": {"text": "Chronic kidney disease"},
                "clinicalStatus": "active",
                "verificationStatus": "provisional",
            },
            "active",
            "provisional",
        ),
        (
            {
                "resourceType": "Condition",
                "patient": {"reference": "Patient/p"},
                "code": {"text": "Chronic kidney disease"},
                "clinicalStatus": "resolved",
                "verificationStatus": "confirmed",
            },
            "resolved",
            "confirmed",
        ),
    ],
    ids=["R4", "STU3", "DSTU2"],
)
def test_condition_statuses_across_versions(
    resource: dict[str, Any], clinical: str, verification: str
) -> None:
    read = fhir.condition(resource)
    assert read is not None
    assert (read.clinical_status, read.verification_status) == (clinical, verification)
    assert read.code.label or read.code.codings


def test_condition_junk_is_skipped() -> None:
    assert fhir.condition({"resourceType": "Condition", "clinicalStatus": 3}) is None
    assert fhir.condition("Condition") is None


def test_bundle_resources_tolerates_every_container() -> None:
    patient = {"resourceType": "Patient", "id": "p"}
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": patient}, {"fullUrl": "x"}, 7, {"resource": "junk"}],
    }
    assert fhir.bundle_resources(bundle) == [patient]
    assert fhir.bundle_resources(patient) == [patient]
    assert fhir.bundle_resources([patient, None]) == [patient]
    assert fhir.bundle_resources({"resource": patient, "response": {"status": "200 OK"}}) == [
        patient
    ]
    junks: tuple[Any, ...] = (None, "Bundle", {"resourceType": "Bundle", "entry": 5}, {"entry": []})
    for junk in junks:
        assert fhir.bundle_resources(junk) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
DRAFT_KEYS = [
    "medicationCodeableConcept",
    "medicationReference",
    "dosageInstruction",
    "id",
    "status",
    "contained",
    "category",
]


@settings(max_examples=150, deadline=None)
@given(
    resource_type=st.sampled_from(["MedicationRequest", "MedicationOrder", None]),
    changes=st.dictionaries(st.sampled_from(DRAFT_KEYS), JSON, max_size=4),
    dosage_changes=st.dictionaries(
        st.sampled_from(
            [
                "timing",
                "doseAndRate",
                "doseQuantity",
                "doseRange",
                "maxDosePerPeriod",
                "asNeededBoolean",
            ]
        ),
        JSON,
        max_size=3,
    ),
)
def test_medication_order_never_raises(
    resource_type: str | None, changes: dict[str, Any], dosage_changes: dict[str, Any]
) -> None:
    resource = sandbox_r4_draft()
    resource["resourceType"] = resource_type
    resource["dosageInstruction"][0].update(dosage_changes)
    resource.update(changes)
    order = fhir.medication_order(resource)
    assert isinstance(order, MedicationOrder)
    assert order.reference


NORMALISERS: dict[str, tuple[Any, type]] = {
    "Patient": (fhir.patient, Patient),
    "Observation": (fhir.observation, Observation),
    "Condition": (fhir.condition, Condition),
}


@settings(max_examples=100, deadline=None)
@given(
    resource_type=st.sampled_from(["Patient", "Observation", "Condition"]),
    body=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "code",
                "birthDate",
                "valueQuantity",
                "valueString",
                "effectiveDateTime",
                "clinicalStatus",
                "issued",
                "effectivePeriod",
            ]
        ),
        JSON,
        max_size=5,
    ),
)
def test_other_normalisers_never_raise(resource_type: str, body: dict[str, Any]) -> None:
    resource = {"resourceType": resource_type, **body}
    for kind, (normalise, result_type) in NORMALISERS.items():
        result = normalise(resource)
        if kind == resource_type:
            assert result is None or isinstance(result, result_type)
        else:
            assert result is None
