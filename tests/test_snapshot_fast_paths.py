"""The snapshot's shortcuts agree with the careful readers they stand in for.

Sorting the pool, ordering labs by day and triaging conditions run over every resource
of a request, so the usual shapes take a shorter way: a subject naming this very patient
is not parsed, a plain ``effectiveDateTime`` is read without the general instant parser,
and a condition code's triage is memoised on its JSON. These properties pin each
shortcut to the careful way, on ordinary and odd input alike.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds_hooks import fhir
from cds_hooks.fhir.values import Reader
from cds_hooks.knowledge.conditions import condition_index
from cds_hooks.prefetch import Entry
from cds_hooks.snapshot import _day, _may_raise_flag, _referenced_patient, _sort_pool

_IDS = st.sampled_from(["p1", "p2", "", "a/b", "Patient/p1", "p1/_history/2", "x y"])
_REFERENCES = st.one_of(
    st.builds(lambda i: f"Patient/{i}", _IDS),
    st.builds(lambda i: f"https://ehr.example.org/fhir/Patient/{i}", _IDS),
    st.builds(lambda i: f"Patient/{i}/_history/3", _IDS),
    st.sampled_from(["", "Patient/", "Group/p1", "#p1"]),
    st.none(),
    st.integers(),
)
_LINKS = st.one_of(
    st.none(),
    st.builds(lambda r: {"reference": r}, _REFERENCES),
    st.just({}),
    st.lists(st.builds(lambda r: {"reference": r}, _REFERENCES), max_size=1),
)


@given(_IDS, _LINKS, _LINKS)
def test_only_resources_the_careful_reference_check_keeps_are_pooled(
    patient_id: str, subject: Any, patient: Any
) -> None:
    resource: dict[str, Any] = {"resourceType": "Condition", "id": "c1"}
    if subject is not None:
        resource["subject"] = subject
    if patient is not None:
        resource["patient"] = patient
    other = _referenced_patient(resource)
    kept = bool(_sort_pool([Entry(resource)], patient_id).conditions)
    assert kept == (other is None or other == patient_id)


_DAY_TEXTS = st.one_of(
    st.sampled_from(
        [
            "2026-10-01",
            "2026-10",
            "2026",
            "2026-10-01T23:30:00+00:00",
            "2026-10-01T23:30:00-05:00",
            "2026-10-01T23:30:00Z",
            "2026-10-01T23:30:00.123+14:00",
            " 2026-10-01T08:00:00 ",
            "2026-10-01T08",
            "2026-02-30T08:00:00Z",
            "2026-10-01T25:00:00Z",
            "T",
            "",
        ]
    ),
    st.text(alphabet="0123456789-T:+Z. ", max_size=26),
    st.integers(),
    st.none(),
)


@given(_DAY_TEXTS, st.sampled_from([None, "2025-01-02T03:04:05Z", "2025", "junk"]))
def test_the_day_of_a_lab_is_that_of_its_effective_instant(text: Any, issued: Any) -> None:
    resource: dict[str, Any] = {"resourceType": "Observation"}
    if text is not None:
        resource["effectiveDateTime"] = text
    if issued is not None:
        resource["issued"] = issued
    effective = fhir.observation_effective(resource)
    assert _day(Entry(resource)) == (effective.date() if effective else date.min)


_CODE_TEXTS = st.none() | st.sampled_from(
    [
        "",
        "Dependence on renal dialysis",
        "Appendicitis",
        "N18.6",
        "238318009",
        "http://snomed.info/sct",
    ]
)
_CODE_FIELDS = _CODE_TEXTS | st.integers() | st.floats() | st.booleans()
_CODINGS = st.fixed_dictionaries(
    {},
    optional={
        "system": _CODE_FIELDS
        | st.sampled_from(["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"]),
        "code": _CODE_FIELDS,
        "display": _CODE_FIELDS,
    },
)
_CODES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "coding": st.lists(_CODINGS | _CODE_FIELDS, max_size=2) | _CODINGS | _CODE_FIELDS,
            "text": _CODE_FIELDS,
        },
    ),
    _CODE_FIELDS,
    st.lists(st.fixed_dictionaries({"text": _CODE_TEXTS}), max_size=2),
)


@given(_CODES)
def test_the_memoised_condition_triage_is_the_careful_one(code: Any) -> None:
    resource = {"resourceType": "Condition", "code": code}
    concept = Reader().concept(resource, "code", "")
    careful = concept is not None and condition_index().may_flag(concept)
    assert _may_raise_flag(resource) == careful
    assert _may_raise_flag(resource) == careful  # and again, from the memo
