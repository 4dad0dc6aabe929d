"""The engine's shortcuts give what the longer way gives.

``rules.num`` skips rounding for whole numbers, ``dose.route_of`` picks the most dangerous
route without a set, and ``rules.other_interactions`` skips a rule no co-medication or no
policy calls for: each is pinned here to the careful answer.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pytest

from cds_hooks.engine import rules
from cds_hooks.engine.dose import Route, route_of
from cds_hooks.engine.renal import RenalStatus
from cds_hooks.engine.situation import CoMedication, Situation
from cds_hooks.knowledge import Knowledge, load_knowledge
from cds_hooks.model import SNOMED, Coding, Concept, DosageInstruction, FhirVersion, MedicationOrder


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        -0.0,
        1.0,
        15.0,
        30.0,
        7.5,
        29.96,
        0.04,
        0.05,
        -3.0,
        999_999.0,
        999_999.96,
        1e6,
        1e7,
        2.5e15,
        math.inf,
        -math.inf,
        math.nan,
        12,
    ],
)
def test_num_matches_rounding_to_one_decimal(value: float) -> None:
    assert rules.num(value) == f"{round(value, 1):g}"


def test_num_matches_rounding_over_a_sweep() -> None:
    for tenths in range(0, 200_001, 7):
        value = tenths / 10
        assert rules.num(value) == f"{round(value, 1):g}", value


def _order(*routes: str) -> MedicationOrder:
    return MedicationOrder(
        reference="MedicationRequest/d1",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        dosages=tuple(DosageInstruction(route=Concept(text=text)) for text in routes),
    )


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (("oral",), Route.ORAL),
        (("oral", "intravenous"), Route.INTRAVENOUS),
        (("intrathecal", "epidural", "oral"), Route.EPIDURAL),
        (("no such route",), Route.UNKNOWN),
        (("no such route", "intrathecal"), Route.INTRATHECAL),
        ((), Route.UNKNOWN),
    ],
)
def test_route_of_gives_the_most_dangerous_written_route(
    routes: tuple[str, ...], expected: Route
) -> None:
    assert route_of(_order(*routes), None) is expected


def test_route_of_reads_a_coded_route() -> None:
    oral = Concept(codings=(Coding(SNOMED, "26643006", "Oral"),))
    order = MedicationOrder(
        reference="MedicationRequest/d1",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        dosages=(DosageInstruction(route=oral),),
    )
    assert route_of(order, None) is Route.ORAL


def _situation(*comedications: CoMedication) -> Situation:
    return Situation(
        today=date(2026, 11, 22),
        age=70,
        reviewed=(),
        oral_reviewed=(),
        intrathecal_reviewed=(),
        changes=(),
        current=(),
        previous=(),
        comedications=comedications,
        comedication_classes=frozenset().union(*(m.classes for m in comedications)),
        conditions={},
        renal=RenalStatus(values=(), stale=(), lookback_days=90, labs_unavailable=False),
        medications_unavailable=False,
        unidentified_medications=0,
        conditions_unavailable=False,
        totals={},
        previous_totals={},
    )


MEDS = (
    CoMedication("Amlodipine 5 MG", frozenset({"antihypertensive"}), draft=False),
    CoMedication("Quetiapine 25 MG", frozenset({"antipsychotic"}), draft=True),
    CoMedication("Sinemet", frozenset({"levodopa"}), draft=False),
)


def _long_way(s: Situation, k: Knowledge) -> list[tuple[str, dict[str, object], tuple[str, ...]]]:
    """R6e-g worked out for every rule, switched off or not, then filtered like the engine."""
    hits = []
    for rule_id, classes in (
        ("R6e", rules.LEVODOPA),
        ("R6f", rules.OTHER_SEDATING),
        ("R6g", rules.ANTIHYPERTENSIVES),
    ):
        named = rules._named(k, s.comedications, classes)
        if not named or not k.rules[rule_id].enabled:
            continue
        facts: dict[str, object] = {"drugs": "; ".join(named)}
        if rule_id == "R6f":
            facts["classes"] = k.class_labels(s.comedication_classes & classes)
        hits.append((rule_id, facts, tuple(f"Co-prescribed: {d}" for d in named)))
    return hits


@pytest.mark.parametrize("policy", [None, "[rules.R6g]\nenabled = true\n"])
@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_other_interactions_skips_only_what_the_engine_would_drop(
    tmp_path: Path, policy: str | None, count: int
) -> None:
    path = None
    if policy is not None:
        path = tmp_path / "policy.toml"
        path.write_text(policy, encoding="utf-8")
    k = load_knowledge(str(path) if path else None)
    for meds in (MEDS[:count], MEDS[count:]):
        s = _situation(*meds)
        got = [
            (h.rule_id, h.facts, h.inputs)
            for h in rules.other_interactions(s, k)
            if k.rules[h.rule_id].enabled
        ]
        assert got == _long_way(s, k)
