"""Daily baclofen dose from FHIR dosage instructions: pure arithmetic, no I/O.

Oral doses are in mg/day and intrathecal doses in mcg/day. Every reading that could
understate the dose takes the higher value: the high end of a dose range, frequencyMax,
the shorter of period/periodMax, and the maximum of an as-needed order's maxDosePerPeriod.
Instructions sharing a sequence number (or all without one) run concurrently and are summed;
different sequence numbers are consecutive steps (a titration) and the highest step counts.
When a figure cannot be read, ``amount`` is None and ``problem`` says why in plain words.
A pump or infusion rate (``DosageInstruction.rate``) is read only when the instruction has no
dose: a dose with a rate is a dose infused at that speed, so the dose and timing count.
The vocabulary (timing codes, units, routes) is data: ``knowledge/data/dosing.toml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache
from typing import Any

from cds_hooks.knowledge import read_data
from cds_hooks.knowledge.drugs import BaclofenProduct
from cds_hooks.model import SNOMED, Concept, DosageInstruction, MedicationOrder, Quantity, Timing

V2_ROUTE_SYSTEMS = frozenset(
    {"http://terminology.hl7.org/CodeSystem/v2-0162", "http://hl7.org/fhir/v2/0162"}
)


class Route(StrEnum):
    ORAL = "oral"
    INTRATHECAL = "intrathecal"
    INTRAVENOUS = "intravenous"
    INTRAMUSCULAR = "intramuscular"
    SUBCUTANEOUS = "subcutaneous"
    EPIDURAL = "epidural"
    OTHER_PARENTERAL = "other-parenteral"
    UNKNOWN = "unknown"


_DANGER_ORDER = (
    Route.INTRAVENOUS,
    Route.EPIDURAL,
    Route.INTRAMUSCULAR,
    Route.SUBCUTANEOUS,
    Route.OTHER_PARENTERAL,
    Route.INTRATHECAL,
    Route.ORAL,
)


@dataclass(frozen=True, slots=True)
class DailyDose:
    amount: float | None
    unit: str
    per_administration: float | None
    administrations_per_day: float | None
    explanation: str
    problem: str | None
    written_unit: str | None
    from_rate: bool = False
    """Read from a pump or infusion rate (a continuous dose), not from single doses."""


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    period_days: Mapping[str, float]
    timing_codes: Mapping[str, tuple[float, float]]
    when_per_day: Mapping[str, float]
    mass_mg: Mapping[str, float]
    volume_ml: Mapping[str, float]
    count_units: frozenset[str]
    known_units: frozenset[str]
    """Every unit above, lower case: what ``_written_unit`` recognises."""
    rate_times: Mapping[str, tuple[str, float]]
    """Time units of a rate (any spelling): the UCUM unit and how many of it fit in a day."""
    snomed_routes: Mapping[str, Route]
    v2_routes: Mapping[str, Route]
    text_routes: tuple[tuple[Route, re.Pattern[str]], ...]


@cache
def _vocabulary() -> _Vocabulary:
    data: dict[str, Any] = read_data("dosing.toml")
    units = data["units"]
    routes = data["routes"]
    text_routes = []
    for route, words in routes["text"].items():
        body = "|".join(
            re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True)
        )
        text_routes.append(
            (Route(route), re.compile(r"(?<![a-z0-9])(?:" + body + r")(?![a-z0-9])"))
        )
    mass_mg = {k: float(v) for k, v in units["mass_mg"].items()}
    volume_ml = {k: float(v) for k, v in units["volume_ml"].items()}
    count_units = frozenset(u.lower() for u in units["count"])
    rate_times = {k: (k, float(v)) for k, v in data["rates"]["per_day"].items()}
    rate_times |= {k: rate_times[v] for k, v in data["rates"]["aliases"].items()}
    return _Vocabulary(
        period_days={k: float(v) for k, v in data["period_days"].items()},
        timing_codes={
            k.upper(): (float(v["frequency"]), float(v["period"]))
            for k, v in data["timing_codes"].items()
        },
        when_per_day={k: float(v) for k, v in data["when_per_day"].items()},
        mass_mg=mass_mg,
        volume_ml=volume_ml,
        count_units=count_units,
        known_units=frozenset(mass_mg.keys() | volume_ml.keys() | count_units),
        rate_times=rate_times,
        snomed_routes={k: Route(v) for k, v in routes["snomed"].items()},
        v2_routes={k.upper(): Route(v) for k, v in routes["v2"].items()},
        text_routes=tuple(text_routes),
    )


def _concept_route(concept: Concept) -> Route:
    vocab = _vocabulary()
    for coding in concept.codings:
        code = (coding.code or "").strip()
        if coding.system == SNOMED and code in vocab.snomed_routes:
            return vocab.snomed_routes[code]
        if coding.system in V2_ROUTE_SYSTEMS and code.upper() in vocab.v2_routes:
            return vocab.v2_routes[code.upper()]
    texts = [concept.text or "", *(c.display or "" for c in concept.codings)]
    texts += [c.code or "" for c in concept.codings if c.system not in (SNOMED, *V2_ROUTE_SYSTEMS)]
    joined = " ".join(" ".join(texts).lower().split())
    found = {route for route, regex in vocab.text_routes if regex.search(joined)}
    return next((r for r in _DANGER_ORDER if r in found), Route.UNKNOWN)


def route_of(order: MedicationOrder, product: BaclofenProduct | None) -> Route:
    """The route written on the order; else the product's (an injection is intrathecal);
    else, for a baclofen product whose name says no route on an order that says none
    either, oral: nearly every such order is tablets or an oral liquid, an intrathecal one
    names its route or its product, and leaving the route unknown would leave the dose
    unchecked in silence.

    With conflicting routes on several instructions, the most dangerous one is returned,
    so an intravenous line is never hidden behind an intrathecal one.
    """
    written = [_concept_route(d.route) for d in order.dosages if d.route is not None]
    for route in _DANGER_ORDER:  # a list, not a set: hashing an enum member runs Python code
        if route in written:
            return route
    if product is not None and product.route in (Route.ORAL, Route.INTRATHECAL):
        return Route(product.route)
    return Route.ORAL if product is not None else Route.UNKNOWN


TOO_LARGE = "the figures are too large to compute a daily dose"
"""Why a dose is not computable when its arithmetic leaves the range of a float (a value
of 1e308 times a frequency): infinity is no dose, and a wrong number is worse than none."""


def _num(value: float) -> str:
    return str(int(value)) if abs(value) < 1e15 and value == int(value) else f"{value:.4g}"


# Built for every dose read, so slotted but not frozen: a frozen dataclass pays an
# object.__setattr__ call per field when built. Nothing mutates it after construction.
@dataclass(slots=True)
class _Amount:
    """One administration in the target unit, with how it was read."""

    value: float
    text: str


def _written_unit(quantity: Quantity) -> str:
    """The unit to read: the UCUM-ish code, or the human unit when the code is not one we know
    (some EHRs put a SNOMED CT or local code in ``code`` and "tablet" in ``unit``)."""
    known = _vocabulary().known_units
    first = ""
    for written in (quantity.code, quantity.unit):
        if written and (written := written.strip()):
            if written.lower() in known:
                return written
            first = first or written
    return first


def _convert(
    quantity: Quantity, written: str, unit: str, product: BaclofenProduct | None
) -> _Amount | str:
    """``quantity`` (its unit read as ``written``, see ``_written_unit``) in ``unit`` ("mg" or
    "mcg"), or the reason it cannot be converted."""
    if not math.isfinite(quantity.value) or quantity.value < 0:
        return f"the dose {quantity.value!r} is not a usable amount"
    vocab = _vocabulary()
    key = written.lower()
    per_mg = 1.0 if unit == "mg" else 1000.0
    if key in vocab.mass_mg:
        value = quantity.value * vocab.mass_mg[key] * per_mg
        return _finite(_Amount(value, f"{_num(quantity.value)} {written}"))
    if product is None or product.strength is None or product.strength_unit is None:
        what = f"{_num(quantity.value)} {written}".strip()
        return f"the dose is written as {what} and the product strength is unknown"
    strength_mg = product.strength * (0.001 if product.strength_unit.startswith("mcg") else 1.0)
    liquid = product.strength_unit.endswith("/mL")
    if key in vocab.count_units and not liquid:
        value = quantity.value * strength_mg * per_mg
        strength = f"{_num(product.strength)} {product.strength_unit} {product.dose_form}"
        return _finite(_Amount(value, f"{_num(quantity.value)} × {strength}"))
    if key in vocab.volume_ml and liquid:
        value = quantity.value * vocab.volume_ml[key] * strength_mg * per_mg
        return _finite(
            _Amount(
                value,
                f"{_num(quantity.value)} {written} of {_num(product.strength)} "
                f"{product.strength_unit}",
            )
        )
    if not written:
        return "the dose has no unit"
    return f"the dose unit {written!r} does not fit the product ({product.strength_unit})"


def _finite(amount: _Amount) -> _Amount | str:
    return amount if math.isfinite(amount.value) else TOO_LARGE


def _per_day(timing: Timing | None) -> tuple[float, str] | str:
    """Administrations per day and how that was read, or why it cannot be."""
    if timing is None:
        return "no frequency is given"
    vocab = _vocabulary()
    if timing.frequency is not None or timing.period is not None:
        frequency = float(max(timing.frequency or 1, timing.frequency_max or 0))
        if frequency < 0:
            return "the frequency is negative"
        periods = [
            p
            for p in (timing.period, timing.period_max)
            if p is not None and math.isfinite(p) and p > 0
        ]
        unit = timing.period_unit or ""
        if not periods or unit not in vocab.period_days:
            return "the frequency has no valid period"
        period = min(periods)
        days = period * vocab.period_days[unit]
        plain = period == 1 and unit == "d"
        if plain:
            return frequency, ""
        # A period so short that it rounds to no time at all is no frequency either.
        per_day = frequency / days if days > 0 else math.inf
        if not math.isfinite(per_day):
            return TOO_LARGE
        every = f"every {_num(period)} {unit}"
        return per_day, every if frequency == 1 else f"{_num(frequency)} {every}"
    if timing.code is not None:
        candidates = [c.code for c in timing.code.codings if c.code]
        candidates += [c.display for c in timing.code.codings if c.display]
        candidates += [timing.code.text] if timing.code.text else []
        for candidate in candidates:
            key = " ".join(candidate.upper().split())
            if key in vocab.timing_codes:
                frequency, period = vocab.timing_codes[key]
                return frequency / period, candidate
    whens = sorted(set(timing.when))
    if whens and all(w in vocab.when_per_day for w in whens):
        return sum(vocab.when_per_day[w] for w in whens), " and ".join(whens)
    if timing.count is not None and timing.count > 0:
        return float(timing.count), f"{timing.count} dose{'s' if timing.count > 1 else ''} in all"
    return "the timing cannot be read as a frequency"


_RATE_TIME = re.compile(r"\(?\s*(?:(\d+(?:\.\d+)?)\s*\.?\s*)?([^\s().\d]+)\s*\)?")
"""The time of a rate unit: "h", "(24.h)" (UCUM), "24 h", "hour"."""


def _rate_unit(rate: Quantity) -> tuple[str, str, float, float] | None:
    """(amount unit, UCUM time unit, that unit per day, time count) of "ug/h", "mg/(24.h)"..."""
    vocab = _vocabulary()
    for written in (rate.code, rate.unit):
        amount, slash, time = (written or "").strip().partition("/")
        match = _RATE_TIME.fullmatch(time.strip().lower())
        if not slash or match is None or match.group(2) not in vocab.rate_times:
            continue
        count = float(match.group(1) or 1)
        if 0 < count < math.inf and amount.strip().lower() in vocab.known_units:
            return amount.strip(), *vocab.rate_times[match.group(2)], count
    return None


def _rate_dose(rate: Quantity, unit: str, product: BaclofenProduct | None) -> DailyDose:
    """A pump rate per hour × 24, per minute × 1440, per day × 1."""
    written = (rate.code or rate.unit or "").strip()
    if not math.isfinite(rate.value) or rate.value < 0:
        problem = f"the rate {rate.value!r} is not a usable amount"
        return replace(_not_computable(unit, problem, written or None), from_rate=True)
    parts = _rate_unit(rate)
    if parts is None:
        problem = (
            f"the rate unit {written!r} is not an amount per time"
            if written
            else "the rate has no unit"
        )
        return replace(_not_computable(unit, problem, written or None), from_rate=True)
    amount_unit, time, per_day, count = parts
    quantity = Quantity(rate.value, code=amount_unit)
    amount = _convert(quantity, _written_unit(quantity), unit, product)
    if isinstance(amount, str):
        return replace(_not_computable(unit, amount, written), from_rate=True)
    daily = amount.value * per_day / count
    if not math.isfinite(daily):
        return replace(_not_computable(unit, TOO_LARGE, written), from_rate=True)
    per = f"/{time}" if count == 1 else f" per {_num(count)} {time}"
    per_time = f"{_num(amount.value)} {unit}{per}"
    same = amount.value == rate.value and amount_unit.lower() in _vocabulary().mass_mg
    lead = per_time if same else f"{amount.text}{per.replace('/', ' per ')} = {per_time}"
    times = f" × {_num(per_day)} {time}" if count == 1 and per_day != 1 else ""
    return DailyDose(
        amount=daily,
        unit=unit,
        per_administration=None,
        administrations_per_day=None,
        explanation=f"{lead}{times} = {_num(daily)} {unit}/day",
        problem=None,
        written_unit=written,
        from_rate=True,
    )


_TIMES_IN_WORDS = {1.0: "once a day", 2.0: "twice a day"}


def _times(per_day: float) -> str:
    words = _TIMES_IN_WORDS.get(per_day)
    return words if words is not None else f"{_num(per_day)} times a day"


def _instruction(
    dosage: DosageInstruction, unit: str, product: BaclofenProduct | None
) -> DailyDose:
    quantity = dosage.dose or dosage.dose_range_high or dosage.dose_range_low
    if quantity is None and dosage.rate is not None:
        return _rate_dose(dosage.rate, unit, product)
    written = _written_unit(quantity) if quantity is not None else ""
    written_unit = written or None
    amount: _Amount | str = "no dose is given"
    if quantity is not None:
        amount = _convert(quantity, written, unit, product)
    prn_note = ""
    if dosage.as_needed and dosage.max_dose_per_period is not None:
        cap = dosage.max_dose_per_period
        capped = _convert(cap.numerator, _written_unit(cap.numerator), unit, product)
        cap_days = (cap.denominator.units or "d").strip()
        days = _vocabulary().period_days.get(cap_days)
        if isinstance(capped, _Amount) and days and cap.denominator.value > 0:
            daily = capped.value / (cap.denominator.value * days)
            if not math.isfinite(daily):
                return _not_computable(unit, TOO_LARGE, written_unit)
            per = amount.value if isinstance(amount, _Amount) else None
            times = daily / per if per else None
            return DailyDose(
                amount=daily,
                unit=unit,
                per_administration=per,
                administrations_per_day=times if times is None or math.isfinite(times) else None,
                explanation=f"as needed, at most {capped.text} per {_num(cap.denominator.value)} "
                f"{cap_days} = {_num(daily)} {unit}/day (counted at the maximum)",
                problem=None,
                written_unit=written_unit or _written_unit(cap.numerator) or None,
            )
    if dosage.as_needed:
        prn_note = " (as needed with no maximum: counted at the scheduled frequency)"
    if isinstance(amount, str):
        return _not_computable(unit, amount, written_unit)
    per_day = _per_day(dosage.timing)
    if isinstance(per_day, str):
        return DailyDose(
            None, unit, amount.value, None, f"{amount.text}: {per_day}", per_day, written_unit
        )
    rate, how = per_day
    daily = amount.value * rate
    if not math.isfinite(daily):
        return DailyDose(
            None, unit, amount.value, rate, f"{amount.text}: {TOO_LARGE}", TOO_LARGE, written_unit
        )
    range_note = (
        " (high end of the dose range)" if dosage.dose is None and dosage.dose_range_high else ""
    )
    return DailyDose(
        amount=daily,
        unit=unit,
        per_administration=amount.value,
        administrations_per_day=rate,
        explanation=f"{amount.text}{range_note}, {_times(rate)}{f' ({how})' if how else ''} = "
        f"{_num(daily)} {unit}/day{prn_note}",
        problem=None,
        written_unit=written_unit,
    )


def _not_computable(unit: str, problem: str, written_unit: str | None = None) -> DailyDose:
    return DailyDose(
        None, unit, None, None, f"daily dose not computable: {problem}", problem, written_unit
    )


def _unit_for(order: MedicationOrder, product: BaclofenProduct | None) -> str:
    if product is not None and product.route in (Route.ORAL, Route.INTRATHECAL):
        return "mcg" if product.route == Route.INTRATHECAL else "mg"
    return "mcg" if route_of(order, product) is Route.INTRATHECAL else "mg"


def daily_dose(order: MedicationOrder, product: BaclofenProduct | None) -> DailyDose:
    unit = _unit_for(order, product)
    dosages = order.dosages
    if len(dosages) == 1:  # the usual order: one instruction is its own total
        return _instruction(dosages[0], unit, product)
    if not dosages:
        return _not_computable(unit, "the order has no dosage instructions")
    groups: dict[int | None, list[DailyDose]] = {}
    for dosage in dosages:
        groups.setdefault(dosage.sequence, []).append(_instruction(dosage, unit, product))
    totals = [total_daily_dose(doses) for doses in groups.values()]
    if len(totals) == 1:
        return totals[0]
    broken = next((t for t in totals if t.amount is None), None)
    if broken is not None:
        return broken
    highest = max(totals, key=lambda t: t.amount or 0.0)
    return DailyDose(
        amount=highest.amount,
        unit=unit,
        per_administration=max(t.per_administration or 0.0 for t in totals) or None,
        administrations_per_day=highest.administrations_per_day,
        explanation="consecutive steps, highest counted: "
        + "; then ".join(t.explanation for t in totals),
        problem=None,
        written_unit=totals[0].written_unit,
        from_rate=any(t.from_rate for t in totals),
    )


def total_daily_dose(doses: Iterable[DailyDose]) -> DailyDose:
    """The sum of concurrent daily doses; not computable if any part is not.

    Order does not matter: amounts are summed exactly (``math.fsum``) and parts sorted.
    """
    parts = list(doses)
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return DailyDose(0.0, "mg", None, 0.0, "no baclofen", None, None)
    parts.sort(key=repr)
    units = sorted({d.unit for d in parts})
    if len(units) > 1:
        return _not_computable(units[0], "oral (mg) and intrathecal (mcg) doses cannot be added")
    unit = units[0]
    written = next((d.written_unit for d in parts if d.written_unit), None)
    broken = [d for d in parts if d.amount is None]
    if broken:
        return DailyDose(
            None,
            unit,
            None,
            None,
            "; ".join(d.explanation for d in parts),
            broken[0].problem or "part of the dose cannot be read",
            written,
            any(d.from_rate for d in parts),
        )
    try:
        amount = math.fsum(d.amount for d in parts if d.amount is not None)
    except OverflowError:  # fsum raises where a plain sum would give infinity
        return _not_computable(unit, TOO_LARGE, written)
    singles = [d.per_administration for d in parts if d.per_administration is not None]
    rates = [d.administrations_per_day for d in parts]
    return DailyDose(
        amount=amount,
        unit=unit,
        per_administration=max(singles) if singles else None,
        administrations_per_day=_rate_sum(rates),
        explanation=" + ".join(d.explanation for d in parts) + f" = {_num(amount)} {unit}/day",
        problem=None,
        written_unit=written,
        from_rate=any(d.from_rate for d in parts),
    )


def _rate_sum(rates: list[float | None]) -> float | None:
    """Administrations a day of concurrent instructions; None when any is unknown (or the
    sum leaves the range of a float)."""
    if any(r is None for r in rates):
        return None
    try:
        return math.fsum(r for r in rates if r is not None)
    except OverflowError:
        return None
