"""The FHIR version of a MedicationRequest is told with cheap type checks before the
general Mapping checks; this pins it to the original detection for any JSON-like order."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.fhir.versions import (
    _R4_ONLY_MEDICATION_REQUEST,
    _STU3_ONLY_MEDICATION_REQUEST,
    medication_request_version,
)
from cds_hooks.model import FhirVersion

_texts = st.sampled_from(
    ["", "Diazepam [Valium]", "Baclofen 10 MG Oral Tablet", "Tizanidine 4 MG", "563026", "197391"]
)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _texts
_codings = st.fixed_dictionaries(
    {},
    optional={
        "system": st.just("http://www.nlm.nih.gov/research/umls/rxnorm") | _scalars,
        "code": _texts | _scalars,
        "display": _texts | _scalars,
    },
)
_concepts = st.fixed_dictionaries(
    {},
    optional={
        "coding": st.lists(_codings, max_size=2) | _codings | _scalars,
        "text": _texts | _scalars | st.just(date(2020, 1, 1)),
    },
)
_dosages = st.fixed_dictionaries(
    {},
    optional={
        "doseAndRate": st.just([{"doseQuantity": {"value": 1}}]),
        "doseQuantity": st.just({"value": 1}),
        "doseRange": st.just({"low": {"value": 1}}),
        "text": _texts,
    },
)
_orders = st.fixed_dictionaries(
    {
        "resourceType": st.just("MedicationRequest"),
        "medicationCodeableConcept": _concepts | _scalars,
    },
    optional={
        "id": st.just("m1") | _scalars,
        "status": st.just("active") | _scalars,
        "intent": st.just("order") | _scalars,
        "authoredOn": st.just("2020-01-01") | _scalars,
        "encounter": st.just({"reference": "Encounter/1"}),
        "context": st.just({"reference": "Encounter/1"}),
        "requester": st.just({"agent": {"reference": "Practitioner/1"}})
        | st.just({"reference": "Practitioner/1"})
        | _scalars,
        "dosageInstruction": st.lists(_dosages | _scalars, max_size=2) | _dosages | _scalars,
        "medicationReference": st.just({"display": "Baclofen"}),
    },
)


def _version_the_long_way(resource: Mapping[str, Any]) -> FhirVersion | None:
    """``medication_request_version`` as it was before its shortcuts."""
    dosages = resource.get("dosageInstruction")
    for dosage in dosages if isinstance(dosages, list) else [dosages]:
        if isinstance(dosage, Mapping):
            if "doseAndRate" in dosage:
                return FhirVersion.R4
            if "doseQuantity" in dosage or "doseRange" in dosage:
                return FhirVersion.STU3
    keys = resource.keys()
    if keys & _R4_ONLY_MEDICATION_REQUEST:
        return FhirVersion.R4
    requester = resource.get("requester")
    if keys & _STU3_ONLY_MEDICATION_REQUEST or (
        isinstance(requester, Mapping) and "agent" in requester
    ):
        return FhirVersion.STU3
    return None


@given(_orders)
def test_version_detection_agrees_with_the_long_way(order: dict[str, Any]) -> None:
    assert medication_request_version(order) == _version_the_long_way(order)
