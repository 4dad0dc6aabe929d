"""Kidney function: equations against published values, look-back, bounds and odd units."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from cds_hooks.engine import renal
from cds_hooks.engine.renal import Bound, RenalKind
from cds_hooks.knowledge import observation_codes
from cds_hooks.model import LOINC, Coding, Concept, Observation, Patient, Quantity

TODAY = date(2026, 11, 22)
CODES = observation_codes()


def obs(
    code: str,
    value: float,
    unit: str,
    days_ago: int | None,
    comparator: str | None = None,
    hours_ago: float = 0,
) -> Observation:
    """A result ``days_ago`` days (at midnight) and ``hours_ago`` hours before ``TODAY``."""
    when = (
        datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time(), UTC)
        - timedelta(hours=hours_ago)
        if days_ago is not None
        else None
    )
    return Observation(
        id=None,
        code=Concept((Coding(LOINC, code),)),
        value=Quantity(value, code=unit, comparator=comparator),
        effective=when,
        status="final",
    )


def patient(age: int, gender: str | None = "female") -> Patient:
    return Patient(id="p", birth_date=date(TODAY.year - age, 1, 1), gender=gender)


def assess(
    *observations: Observation, age: int = 50, gender: str | None = "female", lookback: int = 365
) -> renal.RenalStatus:
    return renal.assess(tuple(observations), patient(age, gender), CODES, TODAY, lookback)


@pytest.mark.parametrize(
    ("scr", "age", "female", "expected"),
    [
        (1.0, 50, True, 69),  # NKF CKD-EPI 2021 calculator
        (1.0, 50, False, 92),
        (2.0, 70, False, 35),
        (0.6, 30, True, 124),  # below kappa: the alpha branch
    ],
)
def test_ckd_epi_2021_matches_published_calculator(scr, age, female, expected):
    assert round(renal.ckd_epi_2021(scr, age, female)) == expected


def test_cockcroft_gault_uses_the_female_factor():
    assert renal.cockcroft_gault(1.0, 60, 72, female=False) == pytest.approx(80)
    assert renal.cockcroft_gault(1.0, 60, 72, female=True) == pytest.approx(68)


def test_units_are_converted_or_refused():
    assert renal.creatinine_mg_dl(Quantity(88.4, code="umol/L")) == pytest.approx(1.0)
    assert renal.creatinine_mg_dl(Quantity(88.4, unit="µmol/L")) == pytest.approx(1.0)
    assert renal.creatinine_mg_dl(Quantity(1.2, code="mg/dL")) == 1.2
    assert renal.creatinine_mg_dl(Quantity(1.2, code="furlong")) is None
    assert renal.weight_kg(Quantity(154, code="[lb_av]")) == pytest.approx(69.85, abs=0.01)
    assert renal.weight_kg(Quantity(70000, code="g")) == 70
    assert renal.clearance_ml_min(Quantity(0.5, code="mL/s/{1.73_m2}")) == 30
    assert renal.clearance_ml_min(Quantity(40, code="mL/min")) == 40
    assert renal.clearance_ml_min(Quantity(40, code="%")) is None


def test_newest_day_wins_and_of_its_egfrs_the_stricter():
    status = assess(
        obs("62238-1", 50, "mL/min/{1.73_m2}", 10),
        obs("98979-8", 55, "mL/min/{1.73_m2}", 10),
        obs("98979-8", 20, "mL/min/{1.73_m2}", 100),
    )
    egfr = status.egfr()
    assert egfr is not None
    assert (egfr.value, egfr.code) == (50, "62238-1")
    (set_aside,) = status.set_aside
    assert (set_aside.value.value, set_aside.for_cystatin_c) == (55, False)


def test_equal_egfrs_of_a_day_go_to_the_race_free_code_and_a_bound_is_not_stricter():
    equal = assess(
        obs("62238-1", 55, "mL/min/{1.73_m2}", 10), obs("98979-8", 55, "mL/min/{1.73_m2}", 10)
    ).egfr()
    assert equal is not None and equal.code == "98979-8"
    bounded = assess(
        obs("98979-8", 60, "mL/min/{1.73_m2}", 10, comparator=">"),
        obs("62238-1", 75, "mL/min/{1.73_m2}", 10),
    ).egfr()
    assert bounded is not None and bounded.value == 75  # ">60" proves no ceiling


@pytest.mark.parametrize("cystatin", ["98980-6", "94677-2", "50210-4"])
def test_a_cystatin_c_egfr_of_the_day_is_preferred_even_when_higher(cystatin: str) -> None:
    status = assess(
        obs("98979-8", 55, "mL/min/{1.73_m2}", 10),
        obs(cystatin, 75, "mL/min/{1.73_m2}", 10),
    )
    (egfr,) = status.values
    assert (egfr.value, egfr.cystatin_c) == (75, True)
    assert "cystatin C-based" in egfr.label
    (set_aside,) = status.set_aside
    assert (set_aside.value.value, set_aside.for_cystatin_c) == (55, True)


def test_an_older_cystatin_c_egfr_does_not_outrank_a_newer_egfr():
    status = assess(
        obs("98979-8", 55, "mL/min/{1.73_m2}", 5), obs("98980-6", 75, "mL/min/{1.73_m2}", 10)
    )
    assert [v.value for v in status.values] == [55]


def test_a_creatinine_newer_than_the_egfr_is_calculated_beside_it():
    status = assess(
        obs("98979-8", 92, "mL/min/{1.73_m2}", 30),
        obs("2160-0", 2.6, "mg/dL", 1),
        age=58,
        gender="male",
    )
    values = {v.kind: v for v in status.values}
    assert values[RenalKind.EGFR].value == 92
    calculated = values[RenalKind.EGFR_CALCULATED]
    assert round(calculated.value) == 28
    assert "newer than the reported eGFR 92" in (calculated.inputs or "")


def test_a_creatinine_older_than_or_as_old_as_the_egfr_is_not_calculated():
    for days in (30, 40):
        status = assess(
            obs("98979-8", 92, "mL/min/{1.73_m2}", 30), obs("2160-0", 2.6, "mg/dL", days)
        )
        assert [v.kind for v in status.values] == [RenalKind.EGFR]


def test_a_creatinine_later_the_same_day_is_newer():
    status = assess(
        obs("98979-8", 92, "mL/min/{1.73_m2}", 1, hours_ago=16),
        obs("2160-0", 2.6, "mg/dL", 1, hours_ago=4),
    )
    assert RenalKind.EGFR_CALCULATED in [v.kind for v in status.values]


def test_a_stale_egfr_does_not_stop_the_recent_creatinine_being_calculated():
    status = assess(obs("98979-8", 92, "mL/min/{1.73_m2}", 400), obs("2160-0", 2.6, "mg/dL", 1))
    assert [v.kind for v in status.values] == [RenalKind.EGFR_CALCULATED]
    assert status.stale[0].value == 92


# --- acute kidney injury (KDIGO serum creatinine criteria) -----------------------------------


def creatinines(*points: tuple[float, float], unit: str = "mg/dL") -> list[Observation]:
    """Creatinine results as (value, hours before TODAY's midnight)."""
    return [obs("2160-0", value, unit, 0, hours_ago=hours) for value, hours in points]


@pytest.mark.parametrize(
    ("points", "unit", "by_ratio"),
    [
        (((0.9, 40), (1.3, 4)), "mg/dL", False),  # +0.4 in 36 h
        (((0.8, 48), (1.1, 0)), "mg/dL", False),  # +0.3 in exactly 48 h
        (((70.7, 46), (97.2, 2)), "umol/L", False),  # +26.5 umol/L is KDIGO's 0.3 mg/dL
        (((0.8, 144), (1.0, 96), (1.2, 24)), "mg/dL", True),  # 1.5x the lowest of 7 days
        (((1.0, 150), (2.0, 60), (1.6, 0)), "mg/dL", True),  # falling from a peak, still 1.6x
    ],
)
def test_a_creatinine_rising_by_the_kdigo_criteria_is_unstable(
    points: tuple[tuple[float, float], ...], unit: str, by_ratio: bool
) -> None:
    rise = assess(*creatinines(*points, unit=unit)).rise
    assert rise is not None and rise.by_ratio is by_ratio
    assert rise.latest_at > rise.baseline_at and rise.latest > rise.baseline


@pytest.mark.parametrize(
    "points",
    [
        ((0.8, 52), (1.1, 2)),  # +0.3 but over 50 h, and only 1.4x
        ((0.7, 100), (1.0, 2)),  # +0.3 over 98 h, 1.43x
        ((0.8, 200), (1.3, 2)),  # 1.6x, but the low value is older than 7 days
        ((0.9, 120), (0.95, 48), (1.0, 2)),  # stable
        ((1.3, 40), (0.9, 4)),  # falling
        ((1.0, 4),),  # one value: nothing to compare
    ],
)
def test_a_creatinine_not_rising_by_the_criteria_is_not_unstable(
    points: tuple[tuple[float, float], ...],
) -> None:
    assert assess(*creatinines(*points)).rise is None


def test_a_rise_is_not_current_once_a_newer_egfr_is_reported():
    rising = creatinines((0.9, 40), (1.3, 30))
    assert assess(*rising, obs("98979-8", 95, "mL/min/{1.73_m2}", 0, hours_ago=30)).rise
    assert not assess(*rising, obs("98979-8", 95, "mL/min/{1.73_m2}", 0, hours_ago=2)).rise


def test_a_creatinine_bound_proves_no_rise_and_old_rises_do_not_count():
    bounded = [obs("2160-0", 0.8, "mg/dL", 0, hours_ago=30, comparator="<")]
    assert assess(*bounded, *creatinines((1.3, 2))).rise is None
    assert assess(*creatinines((0.9, 40 * 24), (1.3, 40 * 24 - 20)), lookback=30).rise is None


def test_value_outside_look_back_is_stale_not_used():
    status = assess(obs("33914-3", 37.7, "mL/min/{1.73_m2}", 400), age=80, lookback=90)
    assert not status.known
    assert status.stale[0].value == 37.7
    assert "37.7" in status.stale[0].label


def test_undated_or_voided_results_are_not_used():
    undated = assess(obs("98979-8", 80, "mL/min/{1.73_m2}", None))
    assert not undated.known
    voided = Observation(
        id=None,
        code=Concept((Coding(LOINC, "98979-8"),)),
        value=Quantity(80, code="mL/min/{1.73_m2}"),
        effective=datetime(2026, 11, 1, tzinfo=UTC),
        status="entered-in-error",
    )
    assert not assess(voided).known


def test_comparators_are_bounds_not_numbers():
    above = assess(obs("98979-8", 60, "mL/min/{1.73_m2}", 5, comparator=">")).values[0]
    assert above.bound is Bound.ABOVE
    assert not above.certainly_below(60)
    assert not above.certainly_below(90)  # ">60" may still be 70: not provably mild
    below = assess(obs("98979-8", 15, "mL/min/{1.73_m2}", 5, comparator="<")).values[0]
    assert below.certainly_below(15)
    assert below.certainly_below(30)
    assert below.display == "<15"


def test_creatinine_gives_calculated_egfr_and_crcl_when_no_egfr_reported():
    status = assess(
        obs("2160-0", 2.0, "mg/dL", 20),
        obs("29463-7", 70, "kg", 30),
        age=70,
        gender="male",
    )
    kinds = {v.kind: v for v in status.values}
    assert round(kinds[RenalKind.EGFR_CALCULATED].value) == 35
    assert kinds[RenalKind.CRCL_CALCULATED].value == pytest.approx((140 - 70) * 70 / (72 * 2.0))
    assert "Cockcroft-Gault" in (kinds[RenalKind.CRCL_CALCULATED].inputs or "")


def test_reported_egfr_suppresses_the_calculated_one_but_crcl_is_still_computed():
    status = assess(
        obs("98979-8", 70, "mL/min/{1.73_m2}", 20),
        obs("14682-9", 176.8, "umol/L", 20),
        obs("29463-7", 50, "kg", 30),
        age=80,
    )
    kinds = [v.kind for v in status.values]
    assert RenalKind.EGFR_CALCULATED not in kinds
    crcl = next(v for v in status.values if v.kind is RenalKind.CRCL_CALCULATED)
    assert crcl.value == pytest.approx((140 - 80) * 50 / (72 * 2.0) * 0.85)


def test_unknown_sex_takes_the_more_cautious_estimate():
    unknown = assess(obs("2160-0", 1.0, "mg/dL", 5), gender="unknown").egfr()
    female = assess(obs("2160-0", 1.0, "mg/dL", 5), gender="female").egfr()
    male = assess(obs("2160-0", 1.0, "mg/dL", 5), gender="male").egfr()
    assert unknown is not None and female is not None and male is not None
    assert unknown.value == min(female.value, male.value)


def test_creatinine_upper_bound_makes_clearance_a_lower_bound():
    value = assess(obs("2160-0", 0.5, "mg/dL", 5, comparator="<")).egfr()
    assert value is not None
    assert value.bound is Bound.ABOVE
    assert not value.certainly_below(200)


def test_children_get_no_adult_equation():
    assert not assess(obs("2160-0", 0.5, "mg/dL", 5), age=10).known


def without_birth_date(*observations: Observation, gender: str | None) -> renal.RenalStatus:
    return renal.assess(
        tuple(observations), Patient(id="p", birth_date=None, gender=gender), CODES, TODAY, 90
    )


def test_without_birth_date_creatinine_bounds_kidney_function_but_never_counts_as_known():
    status = without_birth_date(
        obs("2160-0", 3.5, "mg/dL", 10), obs("29463-7", 70, "kg", 10), gender="female"
    )
    assert not status.known and status.values == ()
    kinds = {v.kind: v for v in status.without_age}
    egfr, crcl = kinds[RenalKind.EGFR_CALCULATED], kinds[RenalKind.CRCL_CALCULATED]
    # The youngest adult's values: every older adult has less.
    assert egfr.value == pytest.approx(renal.ckd_epi_2021(3.5, 18, female=True))
    assert egfr.value > renal.ckd_epi_2021(3.5, 19, female=True)
    assert crcl.value == pytest.approx(renal.cockcroft_gault(3.5, 18, 70, female=True))
    assert egfr.bound is Bound.AT_MOST and crcl.bound is Bound.AT_MOST
    assert egfr.certainly_below(30)  # severe impairment at any adult age
    assert "no birth date" in (egfr.inputs or "")


def test_without_birth_date_or_sex_the_bound_is_the_higher_estimate():
    (egfr,) = without_birth_date(obs("2160-0", 1.0, "mg/dL", 10), gender=None).without_age
    assert egfr.value == max(
        renal.ckd_epi_2021(1.0, 18, female=True), renal.ckd_epi_2021(1.0, 18, female=False)
    )


@pytest.mark.parametrize(("comparator", "bound"), [(">", Bound.BELOW), ("<", None)])
def test_without_birth_date_a_creatinine_bound_keeps_or_loses_its_direction(
    comparator: str, bound: Bound | None
) -> None:
    status = without_birth_date(obs("2160-0", 2.0, "mg/dL", 10, comparator), gender="male")
    assert [v.bound for v in status.without_age] == ([bound] if bound else [])


def test_without_birth_date_a_newer_creatinine_beside_a_reported_egfr_is_an_upper_bound():
    status = without_birth_date(
        obs("98979-8", 90, "mL/min/{1.73_m2}", 60), obs("2160-0", 4.0, "mg/dL", 1), gender="male"
    )
    calculated = next(v for v in status.values if v.kind is RenalKind.EGFR_CALCULATED)
    assert calculated.bound is Bound.AT_MOST and calculated.certainly_below(30)
    assert status.without_age == ()


def test_without_birth_date_a_reported_egfr_is_used_as_usual():
    status = without_birth_date(
        obs("98979-8", 40, "mL/min/{1.73_m2}", 10), obs("2160-0", 2.0, "mg/dL", 10), gender="male"
    )
    assert status.known and status.without_age == ()


def test_unknown_unit_is_skipped_not_misread():
    assert not assess(obs("98979-8", 1.2, "mg/dL", 5)).known


def test_values_beyond_a_float_are_never_read_as_kidney_function() -> None:
    """1e308 mL/s is infinity in mL/min; a 1e308 kg weight pushes Cockcroft-Gault to
    infinity: an infinite clearance would read as normal kidneys, so neither counts."""
    status = assess(
        obs("33914-3", 1e308, "mL/s/{1.73_m2}", 10),
        obs("2160-0", 1.0, "mg/dL", 20),
        obs("29463-7", 1e308, "kg", 30),
        age=70,
    )
    kinds = {v.kind for v in status.values}
    assert RenalKind.EGFR not in kinds and RenalKind.CRCL_CALCULATED not in kinds
    assert RenalKind.EGFR_CALCULATED in kinds, "the creatinine still gives an eGFR"
    huge_creatinine = assess(obs("2160-0", 1e308, "mmol/L", 20), age=70)
    assert huge_creatinine.values == ()
