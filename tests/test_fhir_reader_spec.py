"""The one FHIR reader, specified against ``fhir.resources``: a draft order either reads to
what the library's model of it says, or is named as a problem.

Every order is read from its JSON by one ``Reader``; validation with the library's R4B model
is the gate. These properties generate orders whose elements are sometimes of the wrong type
and check both sides of the gate: an order the library accepts reads to the same drug and
dose as its model holds unless the reader names a problem; an order the library refuses is
never read in silence.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.fhir import medication_order
from cds_hooks.fhir.versions import validate
from cds_hooks.model import RXNORM, SNOMED, FhirVersion, MedicationOrder

_WRONG = st.one_of(st.just([]), st.just({}), st.booleans(), st.just("x"), st.just(3), st.just(None))


def _or_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-formed value (a wrong one in about one draw of 16), so that whole
    orders are valid often enough to compare, and invalid in every element by turns."""
    # Not ``one_of``: Hypothesis draws its branches far from evenly, and a draw of 7 (not
    # 0 or 15, the boundaries it favours) is about as rare as it looks.
    return st.integers(0, 15).flatmap(lambda draw: _WRONG if draw == 7 else strategy)


_codings = st.lists(
    st.fixed_dictionaries(
        {"code": _or_wrong(st.sampled_from(["197391", "430902", "26643006"]))},
        optional={
            "system": _or_wrong(st.sampled_from([RXNORM, SNOMED])),
            "display": _or_wrong(st.sampled_from(["Baclofen 10 MG Oral Tablet", "Oral"])),
        },
    ),
    min_size=1,
    max_size=2,
)
_concept = st.fixed_dictionaries(
    {"text": _or_wrong(st.just("Baclofen 10 mg"))}, optional={"coding": _or_wrong(_codings)}
)
_quantity = st.fixed_dictionaries(
    {"value": _or_wrong(st.sampled_from([5, 10, 2.5, 0.5]))},
    optional={
        "unit": _or_wrong(st.sampled_from(["mg", "tablet"])),
        "system": _or_wrong(st.just("http://unitsofmeasure.org")),
        "code": _or_wrong(st.sampled_from(["mg", "{tbl}"])),
    },
)
_repeat = st.fixed_dictionaries(
    {"frequency": _or_wrong(st.sampled_from([1, 2, 3]))},
    optional={
        "period": _or_wrong(st.sampled_from([1, 12, 0.5])),
        "periodUnit": _or_wrong(st.sampled_from(["d", "h"])),
    },
)
_dosage = st.fixed_dictionaries(
    {
        "timing": _or_wrong(st.fixed_dictionaries({"repeat": _or_wrong(_repeat)})),
        "doseAndRate": _or_wrong(
            st.lists(
                st.fixed_dictionaries({"doseQuantity": _or_wrong(_quantity)}),
                min_size=1,
                max_size=1,
            )
        ),
    },
    optional={
        "text": _or_wrong(st.just("one tablet three times a day")),
        "route": _or_wrong(_concept),
    },
)
_order = st.fixed_dictionaries(
    {
        "resourceType": st.just("MedicationRequest"),
        "id": st.just("d1"),
        "status": st.just("draft"),
        "intent": st.just("order"),
        "subject": st.just({"reference": "Patient/p1"}),
        "medicationCodeableConcept": _or_wrong(_concept),
        "dosageInstruction": _or_wrong(st.lists(_dosage, min_size=1, max_size=2)),
    }
)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _concept_of(model: Any) -> tuple[Any, ...] | None:
    if model is None:
        return None
    codings = tuple(
        (c.system, c.code, c.display) for c in model.coding or () if c.system or c.code or c.display
    )
    return (codings, model.text or None) if codings or model.text else None


def _from_model(model: Any) -> tuple[Any, ...]:
    """What the library's model says of the drug and each dosage, in our reading's terms."""
    dosages = []
    for dosage in model.dosageInstruction or ():
        dose = None
        for entry in dosage.doseAndRate or ():
            if entry.doseQuantity is not None:
                quantity = entry.doseQuantity
                dose = (_number(quantity.value), quantity.unit, quantity.code, quantity.system)
                break
        repeat = dosage.timing.repeat if dosage.timing else None
        dosages.append(
            (
                dosage.text,
                dose,
                _number(repeat.frequency) if repeat else None,
                _number(repeat.period) if repeat else None,
                repeat.periodUnit if repeat else None,
                _concept_of(dosage.route),
            )
        )
    return _concept_of(model.medicationCodeableConcept), tuple(dosages)


def _from_order(order: MedicationOrder) -> tuple[Any, ...]:
    def concept(value: Any) -> tuple[Any, ...] | None:
        if value is None:
            return None
        return tuple((c.system, c.code, c.display) for c in value.codings), value.text

    dosages = []
    for dosage in order.dosages:
        dose = dosage.dose
        repeat = dosage.timing
        dosages.append(
            (
                dosage.text,
                (dose.value, dose.unit, dose.code, dose.system) if dose else None,
                _number(repeat.frequency) if repeat else None,
                repeat.period if repeat else None,
                repeat.period_unit if repeat else None,
                concept(dosage.route),
            )
        )
    return concept(order.medication), tuple(dosages)


@given(_order)
def test_an_order_reads_to_what_the_library_validates_or_is_named_a_problem(
    resource: dict[str, Any],
) -> None:
    order = medication_order(resource)
    outcome = validate(resource, (FhirVersion.R4,))
    if outcome.model is None:
        assert order.problems, "an order the library refuses was read in silence"
    elif not order.problems:
        assert _from_order(order) == _from_model(outcome.model)
    # The library accepts some orders the reader names a problem in, such as a dose with no
    # value, which FHIR allows but nobody can compute a daily dose from: named, not silent.


def test_a_dose_written_as_text_is_named_not_coerced() -> None:
    """The library's lax mode would take "10" for 10; the reader names it (the EHR sent text
    where FHIR has a number) and the dose is not computed from it."""
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Baclofen 10 mg tablet"},
        "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": "10", "unit": "mg"}}]}],
    }
    order = medication_order(resource)
    assert order.dosages[0].dose is None
    assert any("doseQuantity" in problem for problem in order.problems)
