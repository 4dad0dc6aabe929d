"""The snapshot's quicker ways with labs agree with the plain definitions.

A lab's known codes come from prebuilt sets, and the kinds and code ranks of a lab are
memoised on its codes and found in one pass. These properties pin each to the plain way
it replaced, on ordinary and odd input alike.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cds_hooks import fhir
from cds_hooks.knowledge import observation_codes
from cds_hooks.model import LOINC
from cds_hooks.prefetch import Entry
from cds_hooks.snapshot import (
    _UNDATED,
    VOID_STATUSES,
    _day,
    _kind_ranks,
    _known_lab_codes,
    _lab_code_sets,
    _lab_codes,
    _lab_kinds,
    _observations,
    _sort_pool,
)

_CODES = observation_codes()
_KIND_CODES = (
    _CODES.egfr,
    _CODES.creatinine_clearance,
    _CODES.serum_creatinine,
    _CODES.body_weight,
)
_SOME_CODES = st.sampled_from(
    ["33914-3", "62238-1", "2164-2", "38483-4", "2160-0", "29463-7", "3141-9", "1234-5"]
)

_CODINGS = st.lists(
    st.one_of(
        st.builds(
            lambda system, code: {"system": system, "code": code},
            st.sampled_from([LOINC, "http://snomed.info/sct", None]),
            _SOME_CODES | st.integers(),
        ),
        st.just("junk"),
    ),
    max_size=3,
)


@given(st.sampled_from([None, "final", "cancelled", "entered-in-error", 7]), _CODINGS)
@example("final", [{"system": LOINC, "code": "33914-3"}, {"system": LOINC, "code": "2160-0"}])
def test_the_known_codes_of_a_lab_are_its_loinc_codes_the_engine_reads(
    status: Any, codings: list[Any]
) -> None:
    resource = {"resourceType": "Observation", "status": status, "code": {"coding": codings}}
    renal, weight = _lab_code_sets()
    expected = (
        frozenset()
        if status in VOID_STATUSES
        else frozenset(
            c["code"]
            for c in codings
            if isinstance(c, dict)
            and c.get("system") == LOINC
            and isinstance(c.get("code"), str)
            and c["code"] in renal | weight
        )
    )
    assert _lab_codes(resource, _known_lab_codes()) == expected


@given(st.frozensets(_SOME_CODES.filter(lambda c: c in _known_lab_codes()), min_size=1))
def test_kind_ranks_are_each_kind_of_the_codes_with_its_best_rank(
    codes: frozenset[str],
) -> None:
    expected = tuple(
        (kind, min(kind_codes.index(code) for code in codes if code in kind_codes))
        for kind, kind_codes in enumerate(_KIND_CODES)
        if not codes.isdisjoint(kind_codes)
    )
    assert _kind_ranks(codes) == expected


def _chosen_plainly(labs: list[tuple[Entry, frozenset[str]]]) -> list[str]:
    """The labs ``_observations`` reads, by the plain per-kind scan it replaced."""
    read: dict[int, Any] = {}
    for kind_codes, (_, decides) in zip(_KIND_CODES, _lab_kinds(), strict=True):
        candidates = sorted(
            (
                -_day(entry).toordinal(),
                min(kind_codes.index(c) for c in codes if c in kind_codes),
                index,
            )
            for index, (entry, codes) in enumerate(labs)
            if not codes.isdisjoint(kind_codes)
        )
        decided = None
        for day, _rank, index in candidates:
            if decided is not None and day not in (decided, _UNDATED):
                continue
            if index not in read:
                try:
                    read[index] = fhir.observation(labs[index][0].resource, None)
                except Exception:
                    read[index] = None
            found = read[index]
            if decided is None and found is not None and decides(found):
                decided = day
    return [found.id for _, found in sorted(read.items()) if found is not None]


_LABS = st.builds(
    lambda i, code, day, status, value: {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": day,
        "valueQuantity": {"value": value, "unit": "mg/dL" if code == "2160-0" else "mL/min"},
    },
    st.integers(0, 99),
    _SOME_CODES,
    st.sampled_from(["2026-10-01T08:00:00Z", "2026-10-02T08:00:00Z", "2026-10-02", "junk"]),
    st.sampled_from(["final", "preliminary", "cancelled", "unknown"]),
    st.sampled_from([1.2, 45, -1, "x"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_LABS, max_size=6))
def test_the_labs_read_are_those_the_plain_scan_reads(resources: list[dict[str, Any]]) -> None:
    labs = _sort_pool([Entry(r) for r in resources], "p1").labs
    assert [o.id for o in _observations(labs, None)] == _chosen_plainly(labs)
