"""The one-pass dosage reader agrees with the careful, path-tracking one.

The draft's dosage is read on every hook call, so a well-formed one skips the element
path bookkeeping of ``_careful_dosage``. These properties pin that shortcut to the
careful reader, on raw JSON and on validated models of both FHIR versions: it either
declines (the careful reader then runs) or returns exactly what the careful reader
returns, with nothing the careful reader would have reported as a problem.
"""

from __future__ import annotations

import importlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks.fhir.medication import _careful_dosage, _regular_dosage
from cds_hooks.fhir.values import Reader
from cds_hooks.fhir.versions import validate_element
from cds_hooks.model import FhirVersion

_odd = st.none() | st.booleans() | st.sampled_from(["", "x", 1.5]) | st.just([]) | st.just({})
_texts = st.sampled_from(["mg", "tablet", "http://unitsofmeasure.org", "ordered", "<", "d"])
_numbers = st.integers(-3, 1000) | st.floats(-1000, 1e6)
_whole = st.integers(1, 12) | st.sampled_from([3.0, 2.5])
_dates = st.sampled_from(["2026-11-22", "2026-11-22T08:00:00Z", "2026-11", "2026"])


def _dosages(odd: bool) -> tuple[st.SearchStrategy[Any], ...]:
    """R4 and STU3 dosages: well formed, or (``odd``) with values of the wrong shape."""

    def element(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, strategy, strategy, _odd) if odd else strategy

    def node(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries({}, optional={k: element(v) for k, v in fields.items()})

    coding = node(system=_texts, code=_texts | st.just("ordered"), display=_texts)
    concept = node(coding=st.lists(element(coding), max_size=2), text=_texts)
    quantity = st.fixed_dictionaries(
        {"value": element(_numbers)},
        optional={k: element(_texts) for k in ("unit", "code", "system", "comparator")},
    )
    ratio = node(numerator=quantity, denominator=quantity)
    bounds = node(low=quantity, high=quantity)
    dose_and_rate = node(
        type=concept | st.just({"coding": [{"code": "ordered"}]}),
        doseQuantity=quantity,
        doseRange=bounds,
        rateQuantity=quantity,
        rateRatio=ratio,
        rateRange=bounds,
    )
    repeat = node(
        frequency=_whole,
        frequencyMax=_whole,
        period=_numbers,
        periodMax=_numbers,
        periodUnit=_texts,
        periodUnits=_texts,
        when=st.lists(_texts, max_size=2) | _texts,
        count=_whole,
        boundsPeriod=node(start=_dates, end=_dates),
    )
    common = {
        "text": _texts,
        "sequence": _whole,
        "timing": node(code=concept, repeat=repeat),
        "asNeededBoolean": st.booleans(),
        "asNeededCodeableConcept": concept,
        "maxDosePerPeriod": ratio,
        "maxDosePerAdministration": quantity,
        "route": concept,
    }
    entries = st.lists(element(dose_and_rate), min_size=1, max_size=3)
    r4 = node(**common, doseAndRate=entries | dose_and_rate if odd else entries)
    stu3 = node(
        **common,
        doseQuantity=quantity,
        doseRange=bounds,
        rateQuantity=quantity,
        rateRatio=ratio,
        rateRange=bounds,
    )
    # Any one element shows up seldom in a whole dosage: also dosages of one or two.
    return (
        r4 | node(timing=common["timing"]) | node(doseAndRate=entries),
        stu3 | node(rateRange=bounds, rateRatio=ratio) | node(doseRange=bounds),
        node(asNeededBoolean=st.booleans(), asNeededCodeableConcept=concept),
        node(maxDosePerPeriod=ratio, maxDosePerAdministration=quantity, route=concept),
    )


_odd_dosages = st.one_of(_dosages(odd=True))
_dosages_well_formed = st.one_of(_dosages(odd=False))
_versions = st.sampled_from([FhirVersion.R4, FhirVersion.STU3])


def _careful(node: Any) -> tuple[Any, list[str]]:
    reader = Reader()
    return _careful_dosage(node, "dosageInstruction[0].", reader), reader.problems


def _agrees(node: Any) -> None:
    fast = _regular_dosage(node)
    if fast is None:
        return
    dosage, problems = _careful(node)
    assert fast == dosage
    assert problems == []


@settings(max_examples=300)
@given(_odd_dosages | _dosages_well_formed | _odd)
def test_one_pass_dosage_reading_agrees_on_json(value: Any) -> None:
    _agrees(value)


@settings(max_examples=300)
@given(_dosages_well_formed | _odd_dosages, _versions)
def test_one_pass_dosage_reading_agrees_on_validated_models(
    value: Any, version: FhirVersion
) -> None:
    model = validate_element(value, "Dosage", "dosageInstruction", (version,)).model
    if model is not None:
        _agrees(model)


_READ = {
    ("dosage", "Dosage"): (
        *("text", "sequence", "timing", "asNeededBoolean", "asNeededCodeableConcept"),
        *("maxDosePerPeriod", "maxDosePerAdministration", "route", "doseAndRate"),
        *("doseQuantity", "doseRange", "rateQuantity", "rateRatio", "rateRange"),
    ),
    ("dosage", "DosageDoseAndRate"): (
        *("type", "doseQuantity", "doseRange", "rateQuantity", "rateRatio", "rateRange"),
    ),
    ("timing", "Timing"): ("code", "repeat"),
    ("timing", "TimingRepeat"): (
        *("frequency", "frequencyMax", "period", "periodMax", "periodUnit", "periodUnits"),
        *("when", "count", "boundsPeriod"),
    ),
    ("codeableconcept", "CodeableConcept"): ("coding",),
    ("coding", "Coding"): ("code",),
    ("quantity", "Quantity"): ("value", "unit", "code", "system", "comparator"),
    ("ratio", "Ratio"): ("numerator", "denominator"),
    ("range", "Range"): ("low", "high"),
    ("period", "Period"): ("start", "end"),
}
"""Per ``fhir.resources`` module and class, the elements the one-pass reader reads."""


_MODEL_CLASSES = [
    (cls, keys)
    for package in ("fhir.resources.R4B", "fhir.resources.STU3")
    for (module, name), keys in _READ.items()
    # STU3 has no DosageDoseAndRate: it keeps doses on the Dosage.
    if (cls := getattr(importlib.import_module(f"{package}.{module}"), name, None)) is not None
]


@pytest.mark.parametrize(("cls", "keys"), _MODEL_CLASSES)
def test_model_elements_are_read_as_getattr_reads_them(cls: Any, keys: tuple[str, ...]) -> None:
    """A validated model's field values by name are what ``getattr`` finds, and a name
    that is no field is no attribute either (``get`` would find None)."""
    for key in keys:
        assert key in cls.model_fields or not hasattr(cls, key)


def test_well_formed_dosages_take_the_one_pass_reader() -> None:
    dosage = {
        "text": "1 tablet by mouth three times a day",
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
        "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
        "doseAndRate": [
            {"doseQuantity": {"value": 2, "unit": "tablet"}},
            {
                "type": {"coding": [{"code": "ordered"}]},
                "doseQuantity": {"value": 1, "unit": "tablet"},
                "rateRatio": {
                    "numerator": {"value": 400, "code": "ug"},
                    "denominator": {"value": 24, "code": "h"},
                },
            },
        ],
    }
    model = validate_element(dosage, "Dosage", "dosageInstruction", (FhirVersion.R4,)).model
    for node in (dosage, model):
        fast = _regular_dosage(node)
        assert fast is not None
        assert fast == _careful(node)[0]
        assert fast.dose is not None and fast.dose.value == 1
    assert _regular_dosage({**dosage, "sequence": 1.5}) is None
    assert _careful({**dosage, "sequence": 1.5})[1] == [
        "dosageInstruction[0].sequence is not a whole number"
    ]


@pytest.mark.parametrize("amount", [Decimal("sNaN"), Decimal("NaN"), float("inf")])
def test_a_non_finite_amount_is_left_to_the_careful_reader(amount: Any) -> None:
    dosage = {"timing": {"repeat": {"frequency": 3, "period": amount, "periodUnit": "d"}}}
    assert _regular_dosage(dosage) is None
    reader = Reader()
    read = _careful_dosage(dosage, "dosageInstruction[0].", reader)
    assert read.timing is not None and read.timing.period is None
    assert "dosageInstruction[0].timing.repeat.period is not a number" in reader.problems
