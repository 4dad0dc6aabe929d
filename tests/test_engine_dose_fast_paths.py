"""The engine's shorter dose readings give what the longer way gives.

``dose.daily_dose`` reads a lone instruction without grouping, and ``dose._written_unit``
picks the unit without candidate lists: each is pinned here to a straightforward reading.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.engine import dose
from cds_hooks.model import DosageInstruction, FhirVersion, MedicationOrder, Quantity, Timing


def _slow_written_unit(quantity: Quantity) -> str:
    known = dose._vocabulary().known_units
    candidates = [c.strip() for c in (quantity.code, quantity.unit) if c and c.strip()]
    return next((c for c in candidates if c.lower() in known), candidates[0] if candidates else "")


_UNIT = st.none() | st.sampled_from(["", " ", "mg", " MG ", "tablet", "TAB", "mL", "x", " ug"])


@given(_UNIT, _UNIT)
def test_written_unit_matches_the_candidate_list(code: str | None, unit: str | None) -> None:
    quantity = Quantity(1.0, unit=unit, code=code)
    assert dose._written_unit(quantity) == _slow_written_unit(quantity)


def _dosage(value: float, unit: str, frequency: int, sequence: int | None) -> DosageInstruction:
    return DosageInstruction(
        text=None,
        sequence=sequence,
        dose=Quantity(value, unit=unit, code=unit),
        timing=Timing(frequency=frequency, period=1.0, period_unit="d"),
    )


@given(
    st.sampled_from([0.0, 5.0, 7.5, 10.0]),
    st.sampled_from(["mg", "tablet", "mL", "", "g"]),
    st.integers(0, 4),
    st.none() | st.integers(1, 3),
)
def test_a_lone_instruction_reads_as_its_group_total(
    value: float, unit: str, frequency: int, sequence: int | None
) -> None:
    instruction = _dosage(value, unit, frequency, sequence)
    order = MedicationOrder(
        reference="MedicationRequest/d1",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        status="draft",
        dosages=(instruction,),
    )
    expected = dose.total_daily_dose([dose._instruction(instruction, "mg", None)])
    assert dose.daily_dose(order, None) == expected
