"""The one-pass readers of co-medications and validated labs agree with the careful ones.

A co-medication read ``drug_only`` and a validated Observation skip ``Reader``'s
bookkeeping when they are well formed. These properties pin each shortcut to the careful
reading: on any input it either declines (the careful reading then runs) or returns
exactly what the careful reading returns.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.fhir import medication, resources
from cds_hooks.fhir.versions import validate
from cds_hooks.model import RXNORM, FhirVersion

_texts = st.none() | st.sampled_from(["active", "order", "2024-05-01", "abc-1"])
_odd = (
    st.just("") | st.integers() | st.booleans() | st.lists(st.just("x"), max_size=1) | st.just({})
)
_fields = st.one_of(*[_texts] * 9, _odd)
_codings = st.fixed_dictionaries(
    {},
    optional={
        "system": st.just(RXNORM),
        "code": st.sampled_from(["197381", "563026"]),
        "display": st.sampled_from(["Baclofen 10 MG", "Diazepam"]),
    },
)
_drugs = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "coding": st.lists(_codings, min_size=1, max_size=2),
            "text": st.sampled_from(["Diazepam", "Tizanidine"]),
        },
    ),
    st.just({"text": "Diazepam"}),
    st.fixed_dictionaries({"coding": _odd | st.lists(_odd, max_size=1), "text": _fields}),
)
_orders = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["MedicationRequest", "MedicationRequest", "Other"])},
    optional={
        "id": _fields,
        "status": _fields,
        "intent": _fields,
        "authoredOn": _fields,
        "medicationCodeableConcept": st.one_of(*[_drugs] * 4, _odd),
        "medicationReference": st.just({"reference": "#m"}),
        "priorPrescription": st.one_of(
            *[st.fixed_dictionaries({}, optional={"reference": _fields})] * 4, _odd
        ),
        "dosageInstruction": st.sampled_from([[{"doseAndRate": []}], [{"doseQuantity": {}}]]),
        "requester": st.just({"agent": {}}),
        "note": st.just([{"text": "x"}]),
    },
)
_plain_orders = st.fixed_dictionaries(
    {
        "resourceType": st.just("MedicationRequest"),
        "medicationCodeableConcept": _drugs,
    },
    optional={
        "id": _texts,
        "status": _texts,
        "intent": _texts,
        "authoredOn": _texts,
        "priorPrescription": st.fixed_dictionaries({}, optional={"reference": _texts}),
        "dosageInstruction": st.sampled_from([[{"doseAndRate": []}], [{"doseQuantity": {}}]]),
        "requester": st.just({"agent": {}}),
    },
)
"""Orders the one-pass reading takes, mostly: it must be compared where it answers."""


def _careful_order(resource: dict[str, Any], fallback: str | None) -> Any:
    with mock.patch.object(medication, "_regular_drug_only", return_value=None):
        return medication.medication_order(resource, fallback_reference=fallback, drug_only=True)


@given(_orders | _plain_orders, st.none() | st.just("MedicationRequest/#3"))
def test_one_pass_co_medication_reading_agrees_with_the_careful_reading(
    resource: dict[str, Any], fallback: str | None
) -> None:
    fast = medication._regular_drug_only(resource, fallback)
    if fast is None:
        return
    careful = _careful_order(resource, fallback)
    assert fast == careful
    assert fast.raw is careful.raw
    assert fast.problems == ()


def test_a_plain_co_medication_takes_the_one_pass_reading() -> None:
    resource = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "authoredOn": "2024-05-01",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197381"}]},
        "priorPrescription": {"reference": "MedicationRequest/m0"},
    }
    fast = medication._regular_drug_only(resource, None)
    assert fast is not None
    assert fast == _careful_order(resource, None)
    assert medication.medication_order(resource, drug_only=True) == fast


_quantities = st.fixed_dictionaries(
    {},
    optional={
        "value": st.sampled_from([0, 1.5, -2, 60]),
        "unit": st.sampled_from(["mL/min", ""]),
        "code": st.sampled_from(["mL/min/{1.73_m2}", "mg/dL"]),
        "system": st.just("http://unitsofmeasure.org"),
        "comparator": st.sampled_from(["<", ">=", "<="]),
    },
)
_instants = st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01T10:00:00", "2024-05", "2024"])
_values = st.sampled_from(
    [
        {},
        {"valueInteger": 45},
        {"valueString": ">60"},
        {"valueCodeableConcept": {"text": "positive"}},
        {"dataAbsentReason": {"text": "error"}},
    ]
) | st.fixed_dictionaries({"valueQuantity": _quantities})
_lab_codings = st.fixed_dictionaries(
    {},
    optional={
        "system": st.just("http://loinc.org"),
        "code": st.sampled_from(["33914-3", "2160-0"]),
        "display": st.just("eGFR"),
    },
)
_observations = st.builds(
    lambda base, value: {**base, **value},
    st.fixed_dictionaries(
        {
            "resourceType": st.just("Observation"),
            "status": st.sampled_from(["final", "amended"]),
            "code": st.fixed_dictionaries(
                {},
                optional={
                    "coding": st.lists(_lab_codings, min_size=1, max_size=2),
                    "text": st.sampled_from(["eGFR", "Creatinine"]),
                },
            ),
        },
        optional={
            "id": st.sampled_from(["o1", "x-2"]),
            "effectiveDateTime": _instants,
            "issued": st.just("2024-05-02T08:00:00Z"),
        },
    ),
    _values,
)


@given(_observations)
def test_one_pass_validated_observation_reading_agrees_with_the_careful_reading(
    resource: dict[str, Any],
) -> None:
    model = validate(resource, (FhirVersion.R4,)).model
    if model is None:
        return
    fast = resources._validated_observation(model)
    if fast is None:
        return
    assert fast == resources._observation(model)


def test_a_plain_validated_lab_takes_the_one_pass_reading() -> None:
    resource = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
        "valueQuantity": {"value": 45, "unit": "mL/min", "comparator": "≥"},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
    }
    model = validate(resource, (FhirVersion.R4,)).model
    assert model is not None
    fast = resources._validated_observation(model)
    assert fast is not None
    assert fast == resources._observation(model)
    assert resources.observation(resource) == fast
