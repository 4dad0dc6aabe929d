"""The one-copy validation of a projection looks elements up by JSON name only and takes
its placeholders as validated models; neither may change what an input validates to."""

from __future__ import annotations

import pytest

from cds_hooks.fhir.quirks import placeholders
from cds_hooks.fhir.versions import READ_ELEMENTS, model_class, validate
from cds_hooks.model import FhirVersion


@pytest.mark.parametrize("resource_type", sorted(READ_ELEMENTS))
@pytest.mark.parametrize("version", [FhirVersion.R4, FhirVersion.STU3])
def test_no_validated_element_is_the_python_name_of_another(
    resource_type: str, version: FhirVersion
) -> None:
    """Looked up by JSON name or also by Python name, each key reaches the same field."""
    cls = model_class(version, resource_type)
    assert cls is not None
    renamed = {name for name, info in cls.model_fields.items() if info.alias not in (None, name)}
    keys = READ_ELEMENTS[resource_type] | placeholders(resource_type).keys()
    assert renamed, "the models do rename elements (status__ext is _status)"
    assert not keys & renamed


def test_an_element_given_by_python_name_is_refused_as_before() -> None:
    """Outside the projection a Python name is never validated, so it changes nothing."""
    order = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "x"}}
    plain = validate(order, (FhirVersion.R4,))
    odd = validate({**order, "authoredOn__ext": {"id": "x"}}, (FhirVersion.R4,))
    assert plain.model is not None and odd.model is not None
    assert odd.model.model_dump() == plain.model.model_dump()


def test_a_placeholder_is_one_validated_model_and_validates_as_its_json() -> None:
    """The one-copy path takes the placeholder models; the quirky projections of
    test_fhir_validation_memo pin them to validating the JSON placeholders afresh."""
    order = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "x"}}
    one, other = (validate(dict(order), (FhirVersion.R4,)).model for _ in range(2))
    assert one is not None and other is not None
    assert one.subject is other.subject  # type: ignore[attr-defined]
    assert one.subject.model_dump() == {"reference": "Patient/unknown"}  # type: ignore[attr-defined]
