"""The one-pass readers of well-formed elements agree with the careful, path-tracking ones.

Concepts are read for every drug, lab and condition of a request, so well-formed ones
skip ``Reader``'s element-path bookkeeping. These properties pin that shortcut to the
careful reader: on any JSON value it either declines (the careful reader then runs) or
returns exactly what the careful reader returns, with nothing the careful reader would
have reported as a problem.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cds_hooks.fhir.values import IRREGULAR, Reader, regular_concept, regular_quantity
from cds_hooks.fhir.versions import validate_element
from cds_hooks.model import FhirVersion

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["", " ", "x"])
_texts = st.none() | st.sampled_from(["", "Baclofen 10 MG Oral Tablet", "http://loinc.org", "1292"])
_fields = st.one_of(_texts, _texts, _scalars)
_codings = st.fixed_dictionaries(
    {}, optional={"system": _fields, "code": _fields, "display": _fields, "id": _fields}
)
_concepts = st.fixed_dictionaries(
    {},
    optional={
        "coding": st.none() | st.lists(_codings | _scalars, max_size=3) | _codings | _scalars,
        "text": _fields,
    },
)
_values = _concepts | _scalars | st.lists(_concepts, max_size=2)


def _careful(value: Any) -> tuple[Any, list[str]]:
    reader = Reader()
    return reader.irregular_concept(value, "code"), reader.problems


@given(_values)
def test_one_pass_concept_reading_agrees_with_the_careful_reader(value: Any) -> None:
    fast = regular_concept(value)
    if fast is IRREGULAR:
        return
    concept, problems = _careful(value)
    assert fast == concept
    assert problems == []


@given(_concepts)
def test_validated_concepts_read_the_same_as_their_json(value: dict[str, Any]) -> None:
    validated = validate_element(value, "CodeableConcept", "code", (FhirVersion.R4,)).model
    if validated is None:
        return
    assert Reader().concept({"code": validated}, "code", "") == _careful(value)[0]


def test_well_formed_concepts_take_the_one_pass_reader() -> None:
    drug = {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197446"}],
        "text": "Baclofen 10 MG Oral Tablet",
    }
    assert regular_concept(drug) == _careful(drug)[0]
    assert regular_concept({"coding": [{"code": 197446}]}) is IRREGULAR
    reader = Reader()
    assert reader.concept({"code": {"coding": [{"code": 197446}]}}, "code", "") is not None
    assert reader.problems == ["code.coding[0].code is a number, not a string"]


_amounts = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.decimals() | st.text(max_size=3)
)
_quantities = st.fixed_dictionaries(
    {},
    optional={
        "value": _amounts,
        "unit": _fields,
        "code": _fields,
        "system": _fields,
        "comparator": _fields | st.sampled_from(["<", ">=", "≤"]),
    },
)


@given(_quantities | _scalars)
def test_one_pass_quantity_reading_agrees_with_the_careful_reader(value: Any) -> None:
    fast = regular_quantity(value)
    if fast is None:
        return
    reader = Reader()
    assert fast == reader.irregular_quantity(value, "valueQuantity")
    assert reader.problems == []


@given(_quantities)
def test_validated_quantities_read_the_same_as_their_json(value: dict[str, Any]) -> None:
    # fhir.resources validates JSON leniently: a number written as text becomes a decimal
    # (next test), where the reader of raw JSON refuses text. Every other input must agree.
    assume(not isinstance(value.get("value"), str))
    validated = validate_element(value, "Quantity", "dose", (FhirVersion.R4,)).model
    if validated is None:
        return
    reader = Reader()
    assert reader.quantity({"dose": validated}, "dose", "") == reader.irregular_quantity(
        value, "dose"
    )


def test_a_number_written_as_text_reads_as_its_validated_decimal() -> None:
    """A client's ``"value": "0"`` is not FHIR JSON, but fhir.resources accepts it as the
    decimal 0; the dose is then the validated value, not a dose missing."""
    validated = validate_element(
        {"value": "0", "unit": "mg"}, "Quantity", "dose", (FhirVersion.R4,)
    )
    assert validated.model is not None
    quantity = Reader().quantity({"dose": validated.model}, "dose", "")
    assert quantity is not None and quantity.value == 0.0 and quantity.unit == "mg"


@pytest.mark.parametrize("amount", [Decimal("sNaN"), Decimal("NaN"), Decimal("-Infinity")])
def test_a_non_finite_decimal_is_no_quantity_not_an_error(amount: Decimal) -> None:
    reader = Reader()
    assert reader.quantity({"dose": {"value": amount, "unit": "mg"}}, "dose", "") is None
    assert "dose.value is not a number" in reader.problems
