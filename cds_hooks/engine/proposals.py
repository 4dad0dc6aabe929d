"""Adjusted regimens of the same product that stay at or under a daily ceiling.

Falconnier 2001 (peers note §5): a specific dose beside the alert is what gets renal
adjustments done. The proposal keeps the prescriber's product and, where possible, the
way the dose was written (tablets, mg or mL), never exceeds the ceiling, and prefers the
current number of doses a day, then more divided doses.
"""

from __future__ import annotations

import math

from cds_hooks.engine.findings import ProposedRegimen
from cds_hooks.engine.situation import BaclofenOrder

SOLID_FORMS = frozenset({"tablet", "odt", "granules"})
LIQUID_FORMS = frozenset({"solution", "suspension"})
MASS_UNITS = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001}
VOLUME_UNITS = frozenset({"ml", "milliliter", "millilitre"})
FREQUENCIES = (4, 3, 2, 1)
LIQUID_STEP_ML = 0.5
UNKNOWN_STRENGTH_STEP_MG = 5.0  # the smallest tablet strength
FREQUENCY_WORDS = {1: "once a day", 2: "twice a day", 3: "three times a day", 4: "four times a day"}
UNIT_WORDS = {"tablet": "tablet", "odt": "orally disintegrating tablet", "granules": "packet"}


def _fmt(value: float) -> str:
    return f"{value:g}"


def _written(order: BaclofenOrder) -> tuple[str, str | None, str | None]:
    """('mass'|'volume'|'count', unit, code) of the first dose as the prescriber wrote it."""
    for dosage in order.order.dosages:
        quantity = dosage.dose or dosage.dose_range_high
        if quantity is None:
            continue
        unit = (quantity.units or "").strip().lower()
        if unit in MASS_UNITS:
            return "mass", quantity.unit, quantity.code
        if unit in VOLUME_UNITS:
            return "volume", quantity.unit, quantity.code
        return "count", quantity.unit, quantity.code
    return "count", None, None


def _frequencies(order: BaclofenOrder) -> list[int]:
    current = order.dose.administrations_per_day
    preferred = (
        [int(current)] if current and float(current).is_integer() and 1 <= current <= 4 else []
    )
    return preferred + [f for f in FREQUENCIES if f not in preferred]


def _best(per_dose_options: dict[int, float], max_single: float | None) -> tuple[int, float] | None:
    """Largest daily dose; ties go to the earlier (preferred) frequency."""
    best: tuple[int, float] | None = None
    for frequency, per_dose in per_dose_options.items():
        if per_dose <= 0 or (max_single is not None and per_dose > max_single):
            continue
        if best is None or per_dose * frequency > best[1] * best[0] + 1e-9:
            best = (frequency, per_dose)
    return best


def propose(
    order: BaclofenOrder, ceiling_mg_day: float, max_single_mg: float | None = None
) -> ProposedRegimen | None:
    """The largest regimen of ``order``'s product at or under ``ceiling_mg_day`` (and with no
    single dose above ``max_single_mg``), or None when no whole-unit regimen fits."""
    if not order.oral or ceiling_mg_day <= 0:
        return None
    product = order.product
    form = product.dose_form if product else "unknown"
    strength = product.strength if product else None
    kind, unit, code = _written(order)
    frequencies = _frequencies(order)

    if strength and form in SOLID_FORMS and (product and product.strength_unit == "mg"):
        # Whole units only: splitting is a pharmacist's call, not a one-click change.
        options = {f: math.floor(ceiling_mg_day / f / strength) * strength for f in frequencies}
        chosen = _best(options, max_single_mg)
        if chosen is None:
            return None
        frequency, mg = chosen
        units = mg / strength
        noun = UNIT_WORDS.get(form, "tablet") + ("" if units == 1 else "s")
        if kind == "mass":
            value, dose_unit, dose_code, shown = mg, "mg", "mg", f"{_fmt(mg)} mg"
        else:
            value, dose_unit = units, unit or noun
            dose_code = code or "{tbl}"
            shown = f"{_fmt(units)} {noun} ({_fmt(mg)} mg)"
    elif strength and form in LIQUID_FORMS and (product and product.strength_unit == "mg/mL"):
        options = {
            f: math.floor(ceiling_mg_day / f / strength / LIQUID_STEP_ML)
            * LIQUID_STEP_ML
            * strength
            for f in frequencies
        }
        chosen = _best(options, max_single_mg)
        if chosen is None:
            return None
        frequency, mg = chosen
        ml = mg / strength
        if kind == "mass":
            value, dose_unit, dose_code, shown = mg, "mg", "mg", f"{_fmt(mg)} mg ({_fmt(ml)} mL)"
        else:
            value, dose_unit, dose_code = ml, "mL", "mL"
            shown = f"{_fmt(ml)} mL ({_fmt(mg)} mg)"
    elif kind == "mass":
        step = UNKNOWN_STRENGTH_STEP_MG
        options = {f: math.floor(ceiling_mg_day / f / step) * step for f in frequencies}
        chosen = _best(options, max_single_mg)
        if chosen is None:
            return None
        frequency, mg = chosen
        value, dose_unit, dose_code, shown = mg, "mg", "mg", f"{_fmt(mg)} mg"
    else:
        return None
    daily = mg * frequency
    return ProposedRegimen(
        dose_value=value,
        dose_unit=dose_unit,
        dose_code=dose_code,
        frequency=frequency,
        period=1,
        period_unit="d",
        daily_dose=daily,
        daily_unit="mg",
        text=f"{shown} {FREQUENCY_WORDS[frequency]} = {_fmt(daily)} mg/day",
    )
