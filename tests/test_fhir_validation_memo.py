"""Memoised and pre-validated FHIR validation gives exactly the outcome of validating afresh.

Datatype elements (CodeableConcept, Quantity, Dosage) are validated once per distinct
JSON and reused; a resource projection is validated around those models. Neither may
change what is valid, what is read, or how a failure is reported.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cds_hooks.fhir import ORDER_TYPES, medication_order
from cds_hooks.fhir import versions as fhir_versions
from cds_hooks.fhir.quirks import repair_for_validation
from cds_hooks.fhir.versions import (
    READ_ELEMENTS,
    _locations,
    model_class,
    model_validate,
    validate,
    validate_element,
)
from cds_hooks.knowledge.drugs import triage_medication
from cds_hooks.model import RXNORM, Concept, FhirVersion

DATA = Path(__file__).parent / "data"
VERSIONS = ((FhirVersion.R4,), (FhirVersion.STU3,), (FhirVersion.R4, FhirVersion.STU3))


def _resources(node: Any, types: Container[str] = READ_ELEMENTS) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("resourceType") in types:
            yield node
        for value in node.values():
            yield from _resources(value, types)
    elif isinstance(node, list):
        for value in node:
            yield from _resources(value, types)


def _test_resources(types: Container[str] = READ_ELEMENTS) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(DATA.rglob("*.json")):
        try:
            found.extend(_resources(json.loads(path.read_text()), types))
        except (ValueError, UnicodeDecodeError):
            continue
    return found


def _afresh(resource: dict[str, Any], versions: tuple[FhirVersion, ...]) -> Any:
    """The projection validated by the fhir.resources model in one go, first success wins."""
    projection = {k: resource[k] for k in READ_ELEMENTS[resource["resourceType"]] & resource.keys()}
    for version in versions:
        cls = model_class(version, resource["resourceType"])
        assert cls is not None
        try:
            return version, cls.model_validate(repair_for_validation(projection, cls)).model_dump()
        except (ValidationError, ValueError, TypeError):
            continue
    return None, None


def test_every_captured_resource_validates_as_it_would_afresh() -> None:
    resources = _test_resources()
    assert len(resources) > 50
    invalid = 0
    for resource in resources:
        for versions in VERSIONS:
            for _ in range(2):  # the second call is served from the memo
                outcome = validate(resource, versions)
                dumped = outcome.model.model_dump() if outcome.model is not None else None
                assert (outcome.version, dumped) == _afresh(resource, versions)
            invalid += outcome.model is None
    assert invalid > 0, "the data should include resources that fail validation"


def _outcome(validating: Any, cls: Any, data: Any) -> Any:
    try:
        return validating(cls, data).model_dump()
    except ValidationError as exc:
        return [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_input=False)]


_NULL_IN_LIST = {"resourceType": "Observation", "status": "final", "code": {"text": "eGFR"}}


def test_validating_once_gives_exactly_pydantics_outcome() -> None:
    """Models, failures and their element paths alike, wrong resourceType included."""
    resources = _test_resources()
    cases = [(r, r["resourceType"]) for r in resources] + [
        ({"resourceType": "Patient", "id": "p1"}, "Observation"),
        ({"resource_type": "Observation", "status": "final"}, "Observation"),
        ({**_NULL_IN_LIST, "category": [None]}, "Observation"),
        ({**_NULL_IN_LIST, "category": [{"text": "lab"}, None]}, "Observation"),
        ({**_NULL_IN_LIST, "identifier": [None]}, "Observation"),
        ({"resourceType": "Patient", "name": [None], "gender": "female"}, "Patient"),
    ]
    for resource, type_name in cases:
        for (version,) in VERSIONS[:2]:
            cls = model_class(version, type_name)
            assert cls is not None
            data = repair_for_validation(dict(resource), cls)
            ours = _outcome(model_validate, cls, data)
            assert ours == _outcome(lambda c, d: c.model_validate(d), cls, data)
            if resource is cases[-1][0]:
                assert isinstance(ours, list), "a null inside a list of complex elements"


@pytest.mark.parametrize(
    ("concept", "where"),
    [
        ({"coding": [{"system": RXNORM, "code": 123}]}, "coding.0.code"),
        ({"coding": [{"code": "x", "userSelected": "maybe"}]}, "coding.0.userSelected"),
        ({"coding": [{"code": "x"}], "text": 5}, "text"),
    ],
)
def test_a_memoised_drug_validation_still_refuses_an_invalid_concept(
    concept: dict[str, Any], where: str
) -> None:
    for _ in range(3):
        outcome = validate_element(concept, "CodeableConcept", "drug", (FhirVersion.R4,))
        assert outcome.model is None
        assert outcome.failure == f"drug is not valid FHIR R4 ({where})"


def test_memoised_inputs_are_told_apart_by_type_and_value() -> None:
    valid = {"coding": [{"system": RXNORM, "code": "123"}]}
    invalid = {"coding": [{"system": RXNORM, "code": 123}]}
    for _ in range(2):
        assert validate_element(valid, "CodeableConcept", "drug", (FhirVersion.R4,)).model
        assert validate_element(invalid, "CodeableConcept", "drug", (FhirVersion.R4,)).failure
    nan = {"value": float("nan"), "unit": "mg"}
    null = {"value": None, "unit": "mg"}
    assert validate_element(null, "Quantity", "dose", (FhirVersion.R4,)).model is not None
    assert validate_element(nan, "Quantity", "dose", (FhirVersion.R4,)).model is None


def test_a_co_medication_with_an_invalid_drug_is_read_leniently_every_time() -> None:
    resource = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "197591", "userSelected": "maybe"}],
            "text": "Diazepam 5 MG Oral Tablet",
        },
        "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}],
    }
    for _ in range(2):
        order = medication_order(resource, drug_only=True)
        assert (
            order.medication is not None
            and order.medication.text == resource["medicationCodeableConcept"]["text"]
        )
        assert any("medicationCodeableConcept is not valid" in p for p in order.problems)


def test_the_same_drug_is_triaged_the_same_way_however_often_it_is_seen() -> None:
    baclofen = Concept(text="Lioresal 10 mg tablet")
    unrelated = Concept(text="Acetaminophen 500 MG Oral Tablet")
    for _ in range(2):
        assert triage_medication(baclofen).could_be_baclofen
        assert not triage_medication(unrelated).of_interest


def test_a_co_medications_drug_reads_the_same_from_the_memo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A drug-only reading, whose drug is validated and read once per distinct JSON, is
    the reading without that memo, for every captured order and some odd drugs."""
    resources = _test_resources(ORDER_TYPES)
    drugs: list[Any] = [
        {"coding": [{"system": RXNORM, "code": "197591", "userSelected": "maybe"}]},
        {"coding": [{"system": RXNORM, "code": 197591}], "text": "Diazepam"},
        {"coding": [{"system": RXNORM, "code": "197591", "display": None}]},
        {"coding": [], "text": ""},
        {"text": float("nan")},
        {},
        "Diazepam",
    ]
    resources += [
        {"resourceType": "MedicationRequest", "id": "odd", "medicationCodeableConcept": drug}
        for drug in drugs
    ]
    memoised = [medication_order(r, drug_only=True) for r in resources]
    assert [medication_order(r, drug_only=True) for r in resources] == memoised
    monkeypatch.setattr(fhir_versions, "memo_key", lambda concept: None)
    assert [medication_order(r, drug_only=True) for r in resources] == memoised


def _validated_afresh(
    resource: dict[str, Any], versions: tuple[FhirVersion, ...]
) -> tuple[Any, Any, str | None]:
    """Version, model and failure as from validating the repaired projection in one go."""
    resource_type = resource["resourceType"]
    projection = {k: resource[k] for k in READ_ELEMENTS[resource_type] & resource.keys()}
    failure = None
    for version in versions:
        cls = model_class(version, resource_type)
        assert cls is not None
        try:
            model = cls.model_validate(repair_for_validation(projection, cls))
        except ValidationError as exc:
            where = f" ({_locations(exc)})"
        except (ValueError, TypeError):
            where = ""
        else:
            return version, model.model_dump(), None
        failure = failure or f"{resource_type} is not valid FHIR {version}{where}"
    return None, None, failure


_DOSE = {"doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}], "text": "10 mg"}
_DRUG = {"coding": [{"system": RXNORM, "code": "197446"}], "text": "Baclofen 10 MG"}
_QUIRKY = [
    {"resourceType": "MedicationRequest", "medicationCodeableConcept": _DRUG},
    {"resourceType": "MedicationRequest", "medicationCodeableConcept": _DRUG, "intent": ""},
    {"resourceType": "MedicationRequest", "medicationCodeableConcept": _DRUG, "status": {}},
    {"resourceType": "MedicationRequest", "medicationCodeableConcept": _DRUG, "intent": "x"},
    {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": _DRUG,
        "dosageInstruction": _DOSE,
    },
    {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": _DRUG,
        "dosageInstruction": [None, _DOSE],
    },
    {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": _DRUG,
        "dosageInstruction": ["x"],
    },
    {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": _DRUG,
        "dosageInstruction": [{"text": None}],
    },
    {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"code": 5}]}},
    {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {**_DRUG, "text": Decimal("1")},
    },
    {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/m"}},
    {
        "resourceType": "MedicationRequest",
        "dosageInstruction": {"timing": {"repeat": {"frequency": 3}}},
    },
]


@pytest.mark.parametrize("resource", _QUIRKY)
def test_the_one_copy_validation_of_a_quirky_projection_is_as_afresh(
    resource: dict[str, Any],
) -> None:
    """Lone objects wrapped, placeholders set, nulls and non-JSON values sent the ordinary
    way: models, versions and failure messages alike."""
    for versions in VERSIONS:
        for _ in range(2):
            outcome = validate(resource, versions)
            dumped = outcome.model.model_dump() if outcome.model is not None else None
            assert (outcome.version, dumped, outcome.failure) == _validated_afresh(
                resource, versions
            )


def test_well_formed_projections_take_the_memoised_models() -> None:
    """The one-copy path is the one taken: its datatype elements are the shared models."""
    order = {"resourceType": "MedicationRequest", "medicationCodeableConcept": _DRUG}
    first = validate({**order, "dosageInstruction": _DOSE}, (FhirVersion.R4,)).model
    again = validate({**order, "dosageInstruction": [dict(_DOSE)]}, (FhirVersion.R4,)).model
    assert first is not None and again is not None
    assert first.dosageInstruction[0] is again.dosageInstruction[0]  # type: ignore[attr-defined]
    drug = first.medicationCodeableConcept  # type: ignore[attr-defined]
    assert drug is again.medicationCodeableConcept  # type: ignore[attr-defined]
