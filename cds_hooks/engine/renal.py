"""Kidney function for one patient: reported eGFR/CrCl plus values calculated from creatinine.

Pure functions. A value a lab reports with a comparator is a bound, not a number: ``>60``
only proves "not below 60" and ``<15`` proves "below 15", so comparisons answer "certainly
below" rather than pretending the bound is exact. Nothing found in the look-back is
*unknown*, never normal.

The newest evidence is never dropped for an older one: of one day's eGFRs a cystatin
C-based one is preferred (creatinine overstates kidney function with low muscle mass) and
otherwise the lower one is used; a creatinine newer than that eGFR is turned into an eGFR
too, and the rules use the stricter of the two. A creatinine rising by the acute kidney
injury criteria marks kidney function as unstable (``RenalStatus.rise``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cache

from cds_hooks.knowledge import CreatinineRise, ObservationCodes
from cds_hooks.model import LOINC, Observation, Patient, Quantity

MG_DL_PER_UMOL_L = 1 / 88.4  # creatinine molar mass 113.12 g/mol
KG_PER_LB = 0.45359237
ADULT_AGE = 18  # CKD-EPI and Cockcroft-Gault are validated in adults only
UNUSABLE_STATUSES = frozenset({"entered-in-error", "cancelled", "registered"})


class RenalKind(StrEnum):
    EGFR = "eGFR"
    CRCL = "CrCl"
    EGFR_CALCULATED = "eGFR (CKD-EPI 2021, calculated)"
    CRCL_CALCULATED = "CrCl (Cockcroft-Gault, calculated)"

    @property
    def is_egfr(self) -> bool:
        return self in (RenalKind.EGFR, RenalKind.EGFR_CALCULATED)

    @property
    def unit(self) -> str:
        return "mL/min/1.73 m²" if self.is_egfr else "mL/min"


class Bound(StrEnum):
    """How the true value relates to ``RenalValue.value``."""

    EXACT = "="
    BELOW = "<"
    AT_MOST = "<="
    AT_LEAST = ">="
    ABOVE = ">"


_COMPARATORS = {"<": Bound.BELOW, "<=": Bound.AT_MOST, ">=": Bound.AT_LEAST, ">": Bound.ABOVE}
_INVERTED = {
    Bound.EXACT: Bound.EXACT,
    Bound.BELOW: Bound.ABOVE,
    Bound.AT_MOST: Bound.AT_LEAST,
    Bound.AT_LEAST: Bound.AT_MOST,
    Bound.ABOVE: Bound.BELOW,
}


# Records built on every call are slotted but not frozen: a frozen dataclass pays an
# object.__setattr__ call per field when built. Nothing mutates them after construction.
@dataclass(slots=True)
class RenalValue:
    kind: RenalKind
    value: float
    effective: date | None
    bound: Bound = Bound.EXACT
    code: str | None = None
    inputs: str | None = None  # how a calculated value was obtained
    cystatin_c: bool = False  # a reported eGFR with cystatin C

    def certainly_below(self, threshold: float) -> bool:
        """True only when the true value is known to be below ``threshold``."""
        if self.bound in (Bound.EXACT, Bound.AT_MOST):
            return self.value < threshold
        if self.bound is Bound.BELOW:
            return self.value <= threshold
        return False

    @property
    def display(self) -> str:
        prefix = "" if self.bound is Bound.EXACT else self.bound.value
        return f"{prefix}{_fmt(self.value)}"

    @property
    def label(self) -> str:
        """E.g. ``eGFR 24 mL/min/1.73 m² (2026-10-03)``; a cystatin C-based eGFR says so."""
        when = f" ({self.effective.isoformat()})" if self.effective else ""
        basis = " (cystatin C-based)" if self.cystatin_c else ""
        return f"{self.kind.value}{basis} {self.display} {self.kind.unit}{when}"

    @property
    def strictness(self) -> tuple[float, int]:
        """Sort key, stricter first: the lower proven ceiling on kidney function. A lower
        bound (``>60``) proves no ceiling at all, so any number is stricter."""
        if self.bound in (Bound.AT_LEAST, Bound.ABOVE):
            return math.inf, 1
        return self.value, 0 if self.bound is Bound.BELOW else 1


@dataclass(slots=True)
class Rise:
    """The newest serum creatinine meets the acute kidney injury criteria against ``baseline``
    (mg/dL): kidney function is unstable."""

    baseline: float
    baseline_at: datetime
    latest: float
    latest_at: datetime
    by_ratio: bool
    """True: to ``criteria.ratio`` times the lowest of the longer window; False: up by
    ``criteria.rise_mg_dl`` within the shorter one."""
    criteria: CreatinineRise


@dataclass(slots=True)
class SetAside:
    """A reported result of the same day as the one used, and why it was not used."""

    value: RenalValue
    for_cystatin_c: bool
    """True: a cystatin C-based eGFR was preferred to it; False: the stricter was used."""


@dataclass(slots=True)
class RenalStatus:
    """What is known about kidney function on ``today``.

    ``values`` are usable (inside the look-back); ``stale`` holds the newest value of each
    kind found only before the look-back, so a card can say what was seen and why it was
    not used.
    """

    values: tuple[RenalValue, ...]
    stale: tuple[RenalValue, ...]
    lookback_days: int
    labs_unavailable: bool
    without_age: tuple[RenalValue, ...] = ()
    """With no birth date, what a recent creatinine would give the youngest adult: upper
    bounds only (kidney function falls with age), so they never count as known."""
    set_aside: tuple[SetAside, ...] = ()
    """Results of the newest day that were not used (for the cards)."""
    rise: Rise | None = None

    @property
    def known(self) -> bool:
        return bool(self.values)

    def egfr(self) -> RenalValue | None:
        """The reported eGFR used, else the calculated one."""
        for kind in (RenalKind.EGFR, RenalKind.EGFR_CALCULATED):
            found = [v for v in self.values if v.kind is kind]
            if found:
                return found[0]
        return None


def _fmt(value: float) -> str:
    return f"{round(value, 1):g}"


def age_on(birth_date: date | None, today: date) -> int | None:
    if birth_date is None:
        return None
    years = today.year - birth_date.year
    if (today.month, today.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def ckd_epi_2021(creatinine_mg_dl: float, age: float, female: bool) -> float:
    """Race-free CKD-EPI 2021 creatinine equation (Inker et al., NEJM 2021)."""
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    egfr = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    return egfr * 1.012 if female else egfr


def cockcroft_gault(creatinine_mg_dl: float, age: float, weight_kg: float, female: bool) -> float:
    """Cockcroft-Gault creatinine clearance (mL/min) with actual body weight."""
    crcl = (140 - age) * weight_kg / (72 * creatinine_mg_dl)
    return crcl * 0.85 if female else crcl


def _unit(quantity: Quantity) -> str:
    return (quantity.code or quantity.unit or "").strip().lower().replace(" ", "").replace("µ", "u")


def creatinine_mg_dl(quantity: Quantity) -> float | None:
    unit = _unit(quantity)
    if unit in ("mg/dl", "mg/100ml"):
        return quantity.value
    if unit in ("umol/l", "micromol/l", "umol/liter"):
        return quantity.value * MG_DL_PER_UMOL_L
    if unit == "mmol/l":
        return quantity.value * 1000 * MG_DL_PER_UMOL_L
    if unit == "mg/l":
        return quantity.value / 10
    return None


def weight_kg(quantity: Quantity) -> float | None:
    unit = _unit(quantity)
    if unit in ("kg", "kilogram", "kilograms"):
        return quantity.value
    if unit in ("[lb_av]", "lb", "lbs", "pound", "pounds"):
        return quantity.value * KG_PER_LB
    if unit == "g":
        return quantity.value / 1000
    return None


def clearance_ml_min(quantity: Quantity) -> float | None:
    """eGFR or CrCl in mL/min(/1.73 m²); ``mL/s`` (Nordic labs) converted, others refused."""
    unit = _unit(quantity)
    if unit.startswith("ml/min") or unit == "":
        return quantity.value
    if unit.startswith("ml/s"):
        return quantity.value * 60
    return None


def _usable(observation: Observation) -> bool:
    return (
        observation.value is not None
        and observation.value.value >= 0
        and (observation.status or "final") not in UNUSABLE_STATUSES
    )


def _effective(observation: Observation) -> date | None:
    return observation.effective.date() if observation.effective else None


@dataclass(slots=True)
class _Lab:
    """A usable observation with its LOINC codes and date, read once for every code set."""

    observation: Observation
    loinc: tuple[str, ...]
    effective: date | None


def _labs(observations: Iterable[Observation]) -> tuple[_Lab, ...]:
    return tuple(
        _Lab(obs, obs.code.codes(LOINC), _effective(obs)) for obs in observations if _usable(obs)
    )


def _at(lab: _Lab) -> datetime:
    return lab.observation.effective or _UNDATED


_UNDATED = datetime.min.replace(tzinfo=UTC)


@cache
def code_ranks(codes: tuple[str, ...]) -> Mapping[str, int]:
    """Preference of each code of a knowledge code set (read-only; one per set); the
    snapshot ranks candidate labs by it too, so it reads the labs this module will pick."""
    return {code: i for i, code in enumerate(codes)}


@dataclass(frozen=True, slots=True)
class LabKind:
    """A kind of lab ``assess`` reads (eGFR, CrCl, serum creatinine, body weight)."""

    ranks: Mapping[str, int]
    """Each of its codes with its preference rank."""
    decides: Callable[[Observation], bool]
    """Whether ``assess`` would use an observation of it."""
    history_days: int
    """Days before the newest usable one whose results ``assess`` reads too."""


def lab_kinds(codes: ObservationCodes) -> tuple[LabKind, ...]:
    """What ``assess`` reads of each kind of lab: the newest usable one (with every result
    of its day, among which it chooses) and, for serum creatinine, each one of the acute
    kidney injury window before it. The snapshot reads labs in this order and no further,
    so the choice of lab is made here alone."""
    return (
        LabKind(code_ranks(codes.egfr), _reported_usable, 0),
        LabKind(code_ranks(codes.creatinine_clearance), _reported_usable, 0),
        LabKind(
            code_ranks(codes.serum_creatinine),
            _converted_usable(creatinine_mg_dl),
            codes.creatinine_rise.history_days,
        ),
        LabKind(code_ranks(codes.body_weight), _converted_usable(weight_kg), 0),
    )


def _reported_usable(observation: Observation) -> bool:
    """Would ``assess`` take this reported eGFR or CrCl (in or before the look-back)?"""
    value = observation.value
    return value is not None and _usable(observation) and clearance_ml_min(value) is not None


def _converted_usable(
    convert: Callable[[Quantity], float | None],
) -> Callable[[Observation], bool]:
    """Would ``assess`` take this creatinine or weight, were it recent enough?"""

    def decides(observation: Observation) -> bool:
        value = observation.value
        if value is None or observation.effective is None or not _usable(observation):
            return False
        converted = convert(value)
        return converted is not None and converted > 0

    return decides


def _newest(labs: tuple[_Lab, ...], codes: tuple[str, ...]) -> list[tuple[_Lab, str]]:
    """Matching observations, newest first; at equal times the preferred code first."""
    rank = code_ranks(codes)
    matches = []
    for lab in labs:
        preferred = None
        for code in lab.loinc:
            if code in rank and (preferred is None or rank[code] < rank[preferred]):
                preferred = code
        if preferred is not None:
            matches.append((lab, preferred))
    if len(matches) > 1:
        matches.sort(key=lambda m: rank[m[1]])
        matches.sort(key=lambda m: _at(m[0]), reverse=True)  # stable: rank breaks ties
    return matches


@dataclass(slots=True)
class _Reported:
    """The reported value used of the newest day with one, and when it was taken."""

    value: RenalValue
    at: datetime
    set_aside: tuple[SetAside, ...]


def _reported(
    labs: tuple[_Lab, ...],
    codes: tuple[str, ...],
    kind: RenalKind,
    cystatin_c: frozenset[str] = frozenset(),
) -> _Reported | None:
    """Of the newest day's results, a cystatin C-based one if there is one (creatinine
    overstates kidney function with low muscle mass), else the stricter; the others are
    named as set aside."""
    day: list[tuple[RenalValue, datetime]] = []
    for lab, code in _newest(labs, codes):
        obs = lab.observation
        assert obs.value is not None
        value = clearance_ml_min(obs.value)
        if value is None or not math.isfinite(value):
            continue
        if day and lab.effective != day[0][0].effective:
            break
        result = RenalValue(
            kind=kind,
            value=value,
            effective=lab.effective,
            bound=_COMPARATORS.get(obs.value.comparator or "", Bound.EXACT),
            code=code,
            cystatin_c=code in cystatin_c,
        )
        day.append((result, _at(lab)))
    if not day:
        return None
    preferred = [d for d in day if d[0].cystatin_c] or day
    used, at = min(preferred, key=lambda d: d[0].strictness)  # the newest of equals
    set_aside = tuple(
        SetAside(value, for_cystatin_c=used.cystatin_c and not value.cystatin_c)
        for value, _ in day
        if value is not used
    )
    return _Reported(used, at, set_aside)


@dataclass(slots=True)
class _Converted:
    value: float
    bound: Bound
    effective: date
    at: datetime


def _newest_converted(
    labs: tuple[_Lab, ...],
    codes: tuple[str, ...],
    convert: Callable[[Quantity], float | None],
    since: date,
) -> _Converted | None:
    for lab, _code in _newest(labs, codes):
        obs = lab.observation
        assert obs.value is not None
        when = lab.effective
        if when is None or when < since:
            continue
        value = convert(obs.value)
        if value is None or not 0 < value < math.inf:
            continue
        bound = _COMPARATORS.get(obs.value.comparator or "", Bound.EXACT)
        return _Converted(value, bound, when, _at(lab))
    return None


def _estimate(values: list[float], pick: Callable[[Iterable[float]], float]) -> float | None:
    """The estimate to use, or None when absurd inputs (a weight of 1e308 kg) pushed the
    equation out of the range of a float: an infinite clearance would read as normal."""
    return pick(values) if all(math.isfinite(v) for v in values) else None


def _calculated(
    labs: tuple[_Lab, ...],
    patient: Patient,
    codes: ObservationCodes,
    today: date,
    since: date,
    egfr: _Reported | None,
) -> list[RenalValue]:
    """eGFR and CrCl from the newest creatinine (and weight) in the look-back; the eGFR
    only when no reported eGFR in the look-back is as new as that creatinine.

    With no birth date, the youngest adult's values: both equations fall with age, so
    they are the most an adult can have, upper bounds only (``RenalStatus.without_age``).
    """
    age = age_on(patient.birth_date, today)
    if age is not None and age < ADULT_AGE:
        return []
    creatinine = _newest_converted(labs, codes.serum_creatinine, creatinine_mg_dl, since)
    if creatinine is None:
        return []
    scr, scr_date = creatinine.value, creatinine.effective
    # Clearance falls as creatinine rises, so a creatinine bound flips direction.
    bound = _INVERTED[creatinine.bound]
    sex = patient.gender if patient.gender in ("male", "female") else None
    sexes = (sex == "female",) if sex else (True, False)
    if age is None:
        if bound in (Bound.AT_LEAST, Bound.ABOVE):
            return []  # a floor on clearance says nothing about its ceiling
        bound = Bound.BELOW if bound is Bound.BELOW else Bound.AT_MOST
        used_age, pick = ADULT_AGE, max
        about = f"no birth date: the value at age {ADULT_AGE}, the most an adult can have, " + (
            sex or "sex not recorded: the higher of male and female"
        )
    else:
        used_age, pick = age, min
        about = f"age {age}, " + (
            sex or "sex not recorded as male/female: the lower (more cautious) estimate used"
        )
    shown = "" if creatinine.bound is Bound.EXACT else creatinine.bound.value
    scr_text = f"creatinine {shown}{scr:.2f} mg/dL ({scr_date.isoformat()})"
    results: list[RenalValue] = []
    egfr_value = (
        _estimate([ckd_epi_2021(scr, used_age, female) for female in sexes], pick)
        if egfr is None or creatinine.at > egfr.at
        else None
    )
    if egfr_value is not None:
        newer = (
            f"; this creatinine is newer than the reported {egfr.value.label}, "
            "so the stricter of the two is used"
            if egfr is not None
            else ""
        )
        results.append(
            RenalValue(
                kind=RenalKind.EGFR_CALCULATED,
                value=egfr_value,
                effective=scr_date,
                bound=bound,
                inputs=f"CKD-EPI 2021 (race-free) from {scr_text}, {about}{newer}",
            )
        )
    weight = _newest_converted(labs, codes.body_weight, weight_kg, since)
    if weight is None:
        return results
    kg = weight.value
    crcl = _estimate([cockcroft_gault(scr, used_age, kg, female) for female in sexes], pick)
    if crcl is not None:
        results.append(
            RenalValue(
                kind=RenalKind.CRCL_CALCULATED,
                value=crcl,
                effective=scr_date,
                bound=bound,
                inputs=(
                    f"Cockcroft-Gault from {scr_text}, actual weight {kg:.1f} kg "
                    f"({weight.effective.isoformat()}), {about}"
                ),
            )
        )
    return results


def _rise(
    labs: tuple[_Lab, ...], codes: ObservationCodes, since: date, egfr: _Reported | None
) -> Rise | None:
    """Does the newest creatinine of the look-back meet the acute kidney injury criteria
    against the creatinines before it? Only exact values count: a bound proves no rise, and
    a reported eGFR newer than that creatinine comes from a newer one not seen here."""
    criteria = codes.creatinine_rise
    series: list[tuple[datetime, float, Bound]] = []
    for lab, _code in _newest(labs, codes.serum_creatinine):
        obs = lab.observation
        assert obs.value is not None
        value = creatinine_mg_dl(obs.value)
        if obs.effective is None or value is None or value <= 0:
            continue
        series.append(
            (obs.effective, value, _COMPARATORS.get(obs.value.comparator or "", Bound.EXACT))
        )
    if not series:
        return None
    latest_at, latest, latest_bound = series[0]
    if latest_bound is not Bound.EXACT or latest_at.date() < since:
        return None
    if egfr is not None and egfr.at > latest_at:
        return None
    before = [
        (at, value)
        for at, value, bound in series[1:]
        if bound is Bound.EXACT and at < latest_at and latest_at - at <= criteria.ratio_window
    ]
    recent = [(at, value) for at, value in before if latest_at - at <= criteria.rise_window]
    # Rounded as labs report creatinine, so 26.5 umol/L is the 0.3 mg/dL it stands for.
    if recent:
        at, lowest = min(recent, key=lambda d: d[1])
        if round(latest - lowest, 2) >= criteria.rise_mg_dl:
            return Rise(lowest, at, latest, latest_at, by_ratio=False, criteria=criteria)
    if before:
        at, lowest = min(before, key=lambda d: d[1])
        if round(latest / lowest, 2) >= criteria.ratio:
            return Rise(lowest, at, latest, latest_at, by_ratio=True, criteria=criteria)
    return None


def _split(reported: _Reported | None, since: date) -> tuple[RenalValue | None, RenalValue | None]:
    """(the value if inside the look-back, else the value as stale)."""
    if reported is None:
        return None, None
    value = reported.value
    if value.effective is not None and value.effective >= since:
        return value, None
    return None, value


def assess(
    observations: tuple[Observation, ...],
    patient: Patient,
    codes: ObservationCodes,
    today: date,
    lookback_days: int,
    labs_unavailable: bool = False,
) -> RenalStatus:
    """Collect every usable kidney-function value; the rules pick the most restrictive."""
    since = today - timedelta(days=lookback_days)
    labs = _labs(observations)
    reported_egfr = _reported(labs, codes.egfr, RenalKind.EGFR, codes.cystatin_c_egfr)
    reported_crcl = _reported(labs, codes.creatinine_clearance, RenalKind.CRCL)
    egfr, stale_egfr = _split(reported_egfr, since)
    crcl, stale_crcl = _split(reported_crcl, since)
    reported = [v for v in (egfr, crcl) if v is not None]
    calculated = _calculated(
        labs, patient, codes, today, since, reported_egfr if egfr is not None else None
    )
    # Without a birth date the calculated values are upper bounds: used beside a reported
    # value (a bound can still prove impairment), never alone as if function were known.
    bounds_only = patient.birth_date is None and not reported
    return RenalStatus(
        values=() if bounds_only else (*reported, *calculated),
        stale=tuple(v for v in (stale_egfr, stale_crcl) if v is not None),
        lookback_days=lookback_days,
        labs_unavailable=labs_unavailable,
        without_age=tuple(calculated) if bounds_only else (),
        set_aside=tuple(
            aside
            for used, found in ((egfr, reported_egfr), (crcl, reported_crcl))
            if used is not None and found is not None
            for aside in found.set_aside
        ),
        rise=_rise(labs, codes, since, reported_egfr if egfr is not None else None),
    )
