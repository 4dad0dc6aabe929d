"""Daily dose arithmetic: examples a prescriber would check by hand, and properties."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.engine.dose import DailyDose, Route, daily_dose, route_of, total_daily_dose
from cds_hooks.knowledge import load_knowledge
from cds_hooks.knowledge.drugs import BaclofenProduct
from cds_hooks.model import (
    RXNORM,
    SNOMED,
    Coding,
    Concept,
    DosageInstruction,
    FhirVersion,
    MedicationOrder,
    Quantity,
    Ratio,
    Timing,
)

KNOWLEDGE = load_knowledge()
TABLET_10 = KNOWLEDGE.baclofen_product(Concept(codings=(Coding(RXNORM, "197391"),)))
OZOBAX = KNOWLEDGE.baclofen_product(Concept(text="Ozobax 5 mg/5 mL oral solution"))
GABLOFEN = KNOWLEDGE.baclofen_product(Concept(text="Gablofen 500 mcg/mL intrathecal"))
V2 = "http://terminology.hl7.org/CodeSystem/v2-0162"


def order(*dosages: DosageInstruction) -> MedicationOrder:
    return MedicationOrder(
        reference="MedicationRequest/1",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        dosages=dosages,
    )


def per_day(n: float, period: float = 1, unit: str = "d") -> Timing:
    return Timing(frequency=int(n), period=period, period_unit=unit)


def dose(value: float, unit: str | None, timing: Timing | None = None, **kw) -> DosageInstruction:
    return DosageInstruction(dose=Quantity(value, code=unit), timing=timing, **kw)


def amount(
    *dosages: DosageInstruction, product: BaclofenProduct | None = TABLET_10
) -> float | None:
    return daily_dose(order(*dosages), product).amount


# --- examples -----------------------------------------------------------------------------


def test_tablets_times_strength() -> None:
    result = daily_dose(order(dose(2, "{pill}", per_day(3))), TABLET_10)
    assert (
        result.amount,
        result.unit,
        result.per_administration,
        result.administrations_per_day,
    ) == (
        60,
        "mg",
        20,
        3,
    )
    assert "60 mg/day" in result.explanation and result.problem is None


@pytest.mark.parametrize("unit", ["{tbl}", "{tablet}", "TAB", "tablet", "tablets", "{pill}"])
def test_tablet_unit_spellings(unit: str) -> None:
    assert amount(dose(1, unit, per_day(2))) == 20


def test_millilitres_times_concentration() -> None:
    assert amount(dose(10, "mL", per_day(3)), product=OZOBAX) == 30


def test_milligram_dose_needs_no_strength() -> None:
    assert amount(dose(10, "mg", per_day(4)), product=None) == 40
    assert amount(dose(0.01, "g", per_day(1)), product=None) == pytest.approx(10)


def test_intrathecal_doses_are_in_micrograms() -> None:
    result = daily_dose(order(dose(0.2, "mg", per_day(1))), GABLOFEN)
    assert (result.amount, result.unit, result.written_unit) == (pytest.approx(200), "mcg", "mg")
    pump = daily_dose(order(dose(1, "mL", per_day(1))), GABLOFEN)
    assert (pump.amount, pump.unit) == (500, "mcg")
    for unit in ("ug", "mcg", "µg"):
        assert amount(dose(50, unit, per_day(1)), product=GABLOFEN) == 50


def test_high_end_of_a_dose_range() -> None:
    ranged = DosageInstruction(
        dose_range_low=Quantity(5, code="mg"),
        dose_range_high=Quantity(10, code="mg"),
        timing=per_day(3),
    )
    result = daily_dose(order(ranged), TABLET_10)
    assert result.amount == 30 and "high end" in result.explanation


def test_frequency_max_and_period_max_take_the_higher_rate() -> None:
    timing = Timing(frequency=2, frequency_max=3, period=1, period_unit="d")
    assert amount(dose(10, "mg", timing)) == 30
    every_4_to_6_hours = Timing(frequency=1, period=4, period_max=6, period_unit="h")
    assert amount(dose(5, "mg", every_4_to_6_hours)) == pytest.approx(30)


@pytest.mark.parametrize(
    ("unit", "period", "expected"),
    [
        ("h", 8, 30),
        ("d", 1, 10),
        ("wk", 1, 10 / 7),
        ("min", 1440, 10),
        ("s", 86400, 10),
        ("mo", 1, 10 / 30),
    ],
)
def test_period_units(unit: str, period: float, expected: float) -> None:
    assert amount(dose(10, "mg", per_day(1, period, unit))) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("code", "times"),
    [
        ("QD", 1),
        ("BID", 2),
        ("TID", 3),
        ("QID", 4),
        ("Q6H", 4),
        ("Q8H", 3),
        ("Q12H", 2),
        ("QHS", 1),
        ("qam", 1),
    ],
)
def test_timing_codes(code: str, times: int) -> None:
    timing = Timing(
        code=Concept(
            codings=(Coding("http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", code),)
        )
    )
    assert amount(dose(10, "mg", timing)) == 10 * times


def test_when_codes_count_one_administration_each() -> None:
    assert amount(dose(10, "mg", Timing(when=("MORN", "NIGHT")))) == 20
    assert amount(dose(5, "mg", Timing(when=("AC",)))) == 15


def test_as_needed_is_counted_at_its_maximum() -> None:
    prn = DosageInstruction(
        dose=Quantity(10, code="mg"),
        timing=per_day(1, 6, "h"),
        as_needed=True,
        max_dose_per_period=Ratio(Quantity(4, code="{pill}"), Quantity(1, code="d")),
    )
    result = daily_dose(order(prn), TABLET_10)
    assert result.amount == 40 and "maximum" in result.explanation


def test_as_needed_without_maximum_counts_the_schedule_and_says_so() -> None:
    result = daily_dose(order(dose(10, "mg", per_day(3), as_needed=True)), TABLET_10)
    assert result.amount == 30 and "as needed" in result.explanation


@pytest.mark.parametrize(
    ("dosage", "product", "words"),
    [
        (DosageInstruction(text="take as directed"), TABLET_10, "no dose"),
        (dose(10, "mg", None), TABLET_10, "no frequency"),
        (dose(10, "mg", Timing(code=Concept(text="with flare-ups"))), TABLET_10, "timing"),
        (dose(2, "{pill}", per_day(3)), None, "strength is unknown"),
        (dose(10, None, per_day(3)), TABLET_10, "no unit"),
        (dose(5, "mL", per_day(3)), TABLET_10, "does not fit"),
    ],
)
def test_not_computable_says_why(
    dosage: DosageInstruction, product: BaclofenProduct | None, words: str
) -> None:
    result = daily_dose(order(dosage), product)
    assert result.amount is None and result.problem is not None and words in result.problem


def test_no_dosage_instructions() -> None:
    result = daily_dose(order(), TABLET_10)
    assert result.amount is None and result.problem


def test_concurrent_instructions_are_summed() -> None:
    morning = dose(10, "mg", Timing(when=("MORN",)))
    night = dose(20, "mg", Timing(when=("HS",)))
    result = daily_dose(order(morning, night), TABLET_10)
    assert result.amount == 30 and result.per_administration == 20


def test_sequential_instructions_count_the_highest_step() -> None:
    step1 = dose(5, "mg", per_day(3), sequence=1)
    step2 = dose(10, "mg", per_day(3), sequence=2)
    result = daily_dose(order(step1, step2), TABLET_10)
    assert result.amount == 30


def test_one_unreadable_part_makes_the_total_unknown() -> None:
    result = daily_dose(
        order(dose(10, "mg", per_day(3)), DosageInstruction(text="extra")), TABLET_10
    )
    assert result.amount is None and result.problem


def test_total_of_oral_and_intrathecal_is_refused() -> None:
    oral = daily_dose(order(dose(10, "mg", per_day(3))), TABLET_10)
    it = daily_dose(order(dose(100, "ug", per_day(1))), GABLOFEN)
    assert total_daily_dose([oral, it]).amount is None


# --- routes -------------------------------------------------------------------------------


def routed(route: Concept) -> MedicationOrder:
    return order(DosageInstruction(dose=Quantity(50, code="ug"), route=route))


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (Concept(codings=(Coding(SNOMED, "47625008", "Intravenous route"),)), Route.INTRAVENOUS),
        (Concept(codings=(Coding(SNOMED, "72607000"),)), Route.INTRATHECAL),
        (Concept(codings=(Coding(V2, "IM"),)), Route.INTRAMUSCULAR),
        (Concept(codings=(Coding(V2, "IT"),)), Route.INTRATHECAL),
        (Concept(text="Subcutaneous"), Route.SUBCUTANEOUS),
        (Concept(text="epidural catheter"), Route.EPIDURAL),
        (Concept(text="by mouth"), Route.ORAL),
        (Concept(codings=(Coding(SNOMED, "127490009", "Gastrostomy route"),)), Route.ORAL),
        (Concept(codings=(Coding("urn:local", "IV"),)), Route.INTRAVENOUS),
    ],
)
def test_route_codes_and_text(route: Concept, expected: Route) -> None:
    assert route_of(routed(route), GABLOFEN) is expected


def test_route_falls_back_to_the_product() -> None:
    assert route_of(order(dose(50, "ug", per_day(1))), GABLOFEN) is Route.INTRATHECAL
    assert route_of(order(dose(10, "mg", per_day(3))), TABLET_10) is Route.ORAL
    assert route_of(order(dose(10, "mg", per_day(3))), None) is Route.UNKNOWN


def test_the_most_dangerous_written_route_wins() -> None:
    it = DosageInstruction(dose=Quantity(50, code="ug"), route=Concept(text="intrathecal"))
    iv = DosageInstruction(dose=Quantity(50, code="ug"), route=Concept(text="IV"))
    assert route_of(order(it, iv), GABLOFEN) is Route.INTRAVENOUS


# --- properties ---------------------------------------------------------------------------

values = st.floats(min_value=0.001, max_value=500, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=0.01, max_value=100, allow_nan=False, allow_infinity=False)
frequencies = st.integers(min_value=1, max_value=24)
periods = st.sampled_from([(1, "d"), (8, "h"), (12, "h"), (1, "wk"), (2, "d"), (30, "min")])


@given(values, factors, frequencies, periods)
def test_scaling_the_dose_scales_the_daily_dose(
    value: float, k: float, n: int, period: tuple
) -> None:
    timing = per_day(n, *period)
    base = amount(dose(value, "mg", timing))
    scaled = amount(dose(value * k, "mg", timing))
    assert base is not None and scaled is not None
    assert math.isclose(scaled, base * k, rel_tol=1e-9)


@given(values, frequencies, periods)
def test_mg_and_equivalent_mcg_agree(value: float, n: int, period: tuple) -> None:
    timing = per_day(n, *period)
    in_mg = amount(dose(value, "mg", timing))
    in_mcg = amount(dose(value * 1000, "mcg", timing))
    assert in_mg is not None and in_mcg is not None
    assert math.isclose(in_mg, in_mcg, rel_tol=1e-9)


@given(values, frequencies, periods)
def test_two_concurrent_halves_equal_the_whole(value: float, n: int, period: tuple) -> None:
    timing = per_day(n, *period)
    whole = amount(dose(value, "mg", timing))
    halves = amount(dose(value / 2, "mg", timing), dose(value / 2, "mg", timing))
    assert whole is not None and halves is not None
    assert math.isclose(whole, halves, rel_tol=1e-9)


@given(values)
def test_bid_code_equals_frequency_two_per_day(value: float) -> None:
    bid = Timing(code=Concept(codings=(Coding(None, "BID"),)))
    assert amount(dose(value, "mg", bid)) == amount(dose(value, "mg", per_day(2)))


@given(
    st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
    st.sampled_from(["mg", "mcg", "{pill}", "mL", "g"]),
    frequencies,
    periods,
    st.booleans(),
)
def test_daily_dose_is_never_negative(
    value: float, unit: str, n: int, period: tuple, prn: bool
) -> None:
    for product in (TABLET_10, OZOBAX, GABLOFEN, None):
        result = daily_dose(order(dose(value, unit, per_day(n, *period), as_needed=prn)), product)
        assert result.amount is None or result.amount >= 0
        assert result.amount is not None or result.problem


daily_doses = st.builds(
    DailyDose,
    amount=st.one_of(st.none(), st.floats(min_value=0, max_value=1e4, allow_nan=False)),
    unit=st.just("mg"),
    per_administration=st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False)),
    administrations_per_day=st.one_of(
        st.none(), st.floats(min_value=0, max_value=24, allow_nan=False)
    ),
    explanation=st.text(max_size=10),
    problem=st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    written_unit=st.sampled_from([None, "mg", "{pill}"]),
)


@given(st.lists(daily_doses, min_size=1, max_size=4))
def test_total_daily_dose_is_commutative(doses: list[DailyDose]) -> None:
    results = {total_daily_dose(list(p)) for p in permutations(doses)}
    assert len(results) == 1


def test_human_unit_is_used_when_the_code_is_not_a_dose_unit() -> None:
    snomed_coded = Quantity(2, unit="tablet", system=SNOMED, code="732936001")
    assert amount(DosageInstruction(dose=snomed_coded, timing=per_day(3))) == 60


@pytest.mark.parametrize("value", [-10.0, math.nan, math.inf])
def test_unusable_amounts_are_not_computable(value: float) -> None:
    result = daily_dose(order(dose(value, "mg", per_day(3))), TABLET_10)
    assert result.amount is None and result.problem


# --- pump and infusion rates --------------------------------------------------------------

PUMP = KNOWLEDGE.baclofen_product(Concept(codings=(Coding(RXNORM, "1047437"),)))


def rate(value: float, unit: str | None, **kw) -> DosageInstruction:
    return DosageInstruction(rate=Quantity(value, code=unit), **kw)


def test_hourly_pump_rate_gives_a_daily_dose_with_its_arithmetic() -> None:
    result = daily_dose(order(rate(20, "ug/h")), PUMP)
    assert (result.amount, result.unit, result.problem) == (480, "mcg", None)
    assert result.explanation == "20 mcg/h × 24 h = 480 mcg/day"
    assert result.from_rate and result.per_administration is None


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (400, "ug/d", 400),
        (0.4, "mg/d", 400),
        (0.5, "ug/min", 720),
        (400, "ug/(24.h)", 400),
        (200, "mcg/(12.h)", 400),
        (20, "mcg/hr", 480),
        (400, "micrograms/day", 400),
        (0.4, "mL/h", 480),  # 0.4 mL/h of 50 mcg/mL = 20 mcg/h
    ],
)
def test_rate_spellings(value: float, unit: str, expected: float) -> None:
    result = daily_dose(order(rate(value, unit)), PUMP)
    assert result.amount is not None and math.isclose(result.amount, expected, rel_tol=1e-12)


def test_rate_written_in_mg_is_converted_and_shown() -> None:
    result = daily_dose(order(rate(0.4, "mg/d")), PUMP)
    assert result.explanation == "0.4 mg per d = 400 mcg/d = 400 mcg/day"


def test_human_rate_unit_is_read_when_the_code_is_not_one() -> None:
    quantity = Quantity(20, unit="mcg/h", system=SNOMED, code="258997004")
    assert daily_dose(order(DosageInstruction(rate=quantity)), PUMP).amount == 480


@pytest.mark.parametrize(
    ("quantity", "problem"),
    [
        (Quantity(1, code="ug/kg/h"), "the rate unit 'ug/kg/h' is not an amount per time"),
        (Quantity(20, code="ug"), "the rate unit 'ug' is not an amount per time"),
        (Quantity(20, code="ug/wk"), "the rate unit 'ug/wk' is not an amount per time"),
        (Quantity(20, code="ug/(0.h)"), "the rate unit 'ug/(0.h)' is not an amount per time"),
        (Quantity(20), "the rate has no unit"),
        (Quantity(-5, code="ug/h"), "the rate -5 is not a usable amount"),
    ],
)
def test_unreadable_rates_are_not_computable_and_say_why(quantity: Quantity, problem: str) -> None:
    result = daily_dose(order(DosageInstruction(rate=quantity)), PUMP)
    assert (result.amount, result.problem, result.from_rate) == (None, problem, True)


def test_a_volume_rate_needs_the_concentration() -> None:
    result = daily_dose(order(rate(0.4, "mL/h")), None)
    assert result.amount is None and result.problem and "strength is unknown" in result.problem


def test_a_dose_with_a_rate_is_read_as_the_dose() -> None:
    """A bolus infused at a speed: the dose and its timing count, the rate does not."""
    scheduled = daily_dose(order(dose(50, "ug", per_day(1), rate=Quantity(20, code="ug/h"))), PUMP)
    assert (scheduled.amount, scheduled.from_rate) == (50, False)
    untimed = daily_dose(order(dose(50, "ug", rate=Quantity(20, code="ug/h"))), PUMP)
    assert untimed.amount is None and untimed.per_administration == 50
    assert not untimed.from_rate


def test_rate_and_scheduled_instruction_add_up() -> None:
    result = daily_dose(order(rate(20, "ug/h"), dose(50, "ug", per_day(1))), PUMP)
    assert result.amount == 530 and result.from_rate


@given(values)
def test_a_rate_per_hour_is_24_times_that_per_day(per_hour: float) -> None:
    hourly = daily_dose(order(rate(per_hour, "ug/h")), PUMP).amount
    assert hourly is not None and math.isclose(hourly, 24 * per_hour, rel_tol=1e-12)
    daily = daily_dose(order(rate(24 * per_hour, "ug/d")), PUMP).amount
    as_ratio = daily_dose(order(rate(24 * per_hour, "ug/(24.h)")), PUMP).amount
    in_mg = daily_dose(order(rate(per_hour / 1000, "mg/h")), PUMP).amount
    assert daily is not None and as_ratio is not None and in_mg is not None
    assert math.isclose(hourly, daily, rel_tol=1e-12)
    assert math.isclose(daily, as_ratio, rel_tol=1e-12)
    assert math.isclose(hourly, in_mg, rel_tol=1e-9)


# --- figures beyond the range of a float ---------------------------------------------


HUGE = 1e308


@pytest.mark.parametrize(
    "dosage",
    [
        dose(HUGE, "mg", per_day(3)),  # the dose times the frequency
        dose(HUGE, "g", per_day(1)),  # the unit conversion
        dose(HUGE, "{pill}", per_day(1)),  # times the tablet strength
        dose(10, "mg", Timing(frequency=1, period=1e-320, period_unit="min")),
        dose(10, "mg", per_day(10**18, 1e-300, "h")),
        DosageInstruction(
            dose=Quantity(10, code="mg"),
            as_needed=True,
            max_dose_per_period=Ratio(Quantity(4, code="mg"), Quantity(1e-320, code="d")),
        ),
        rate(HUGE, "ug/min"),
    ],
    ids=["dose-x-frequency", "grams", "tablets", "tiny-period", "huge-rate", "prn-cap", "pump"],
)
def test_figures_beyond_a_float_are_not_computable_never_infinite(
    dosage: DosageInstruction,
) -> None:
    result = daily_dose(order(dosage), GABLOFEN if dosage.rate else TABLET_10)
    assert result.amount is None
    assert result.problem is not None and "too large" in result.problem
    assert "inf" not in result.explanation


def test_concurrent_doses_whose_sum_overflows_are_not_computable() -> None:
    half = dose(1.5e308, "mg", per_day(1))
    result = daily_dose(order(half, half), TABLET_10)
    assert result.amount is None and result.problem and "too large" in result.problem
