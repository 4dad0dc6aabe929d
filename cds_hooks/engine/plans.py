"""The regimen planner's input for one draft, read from the situation and the rule table.

Every limit that applies to the patient is gathered here once (kidney failure and dialysis,
the kidney band of the strictest current, stale or age-bounded result, the label maximum,
a child's ceiling), with this patient's start dose (label, kidney band, older adult), the
titration step and interval, and the taper steps; ``planner.plan`` does the arithmetic.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from operator import itemgetter

from cds_hooks.engine.dose import Route
from cds_hooks.engine.planner import (
    DRAFT_STATUS,
    LIQUID_FORMS,
    Limit,
    OrderKind,
    Plan,
    PlanInput,
    Product,
    plan,
)
from cds_hooks.engine.rules import (
    KIDNEY_FAILURE_FLAGS,
    Band,
    _last_written,
    _older_start,
    _worst_band,
    band_start,
)
from cds_hooks.engine.situation import BaclofenOrder, Situation
from cds_hooks.knowledge import Knowledge
from cds_hooks.knowledge.drugs import drug_index
from cds_hooks.knowledge.regimens import regimen_rules

MASS_UNITS = frozenset({"mg", "g", "ug", "mcg", "milligram", "milligrams"})
VOLUME_UNITS = frozenset({"ml", "milliliter", "millilitre", "milliliters", "millilitres"})


def plan_for(s: Situation, k: Knowledge, reference: str) -> Plan | None:
    """The one proposal for the oral baclofen draft ``reference`` (None for any other)."""
    given = plan_input(s, k, reference)
    return None if given is None else plan(given, regimen_rules())


def plan_input(s: Situation, k: Knowledge, reference: str) -> PlanInput | None:
    draft, template, stops = _draft(s, reference)
    if draft is None or template is None:
        return None
    after = s.route_total(Route.ORAL)
    drafted = 0.0 if after is None else after.amount
    previous = s.previous_total(Route.ORAL)
    before = None if previous is None else previous.amount
    if drafted is None or (previous is not None and before is None):
        return None
    own = 0.0 if stops else draft.dose.amount
    if own is None:
        return None
    sharp = k.thresholds["R7a", "sharp_cut"]
    band = _kidney_band(s, k)
    if before is None:
        kind = OrderKind.NEW_START
    elif stops:
        kind = OrderKind.STOP
    elif before > 0 and (before - drafted) / before * 100 > sharp:
        kind = OrderKind.CUT
    else:
        kind = OrderKind.CONTINUATION
    return PlanInput(
        kind=kind,
        product=_product(template),
        drafted=drafted,
        others=drafted - own,
        before=before,
        ceilings=_ceilings(s, k, band),
        start=_start(s, k, band) if kind is OrderKind.NEW_START else None,
        step_increase=k.thresholds["R3d", "step_increase"],
        step_allowed=_step_allowed(s, k),
        sharp_cut=sharp,
        taper_step=k.thresholds["R7a", "taper_step"],
        taper_days=k.thresholds["R7a", "taper_step_days"],
        max_single=k.thresholds["R3c", "max_single_dose"] if k.rules["R3c"].enabled else None,
        alternatives=_alternatives(_product(template)),
        stop_status=_stop_status(draft, template),
    )


def _stop_status(draft: BaclofenOrder, stopped: BaclofenOrder) -> str:
    """An order the EHR sent back stopped under its own id goes on as it was (active, as a
    dose change sent that way is); a stop order of its own becomes a draft order again."""
    if draft.order.reference == stopped.order.reference and stopped.order.status:
        return stopped.order.status
    return DRAFT_STATUS


def _alternatives(ordered: Product) -> tuple[tuple[str, str, Product], ...]:
    """The other generic strengths of the same kind (tablets for tablets, liquids for
    liquids) the knowledge lists, smallest first, written the way the order was."""
    if ordered.strength is None:
        return ()
    return tuple(
        (code, name, replace(ordered, form=form, strength=strength))
        for code, name, form, strength in _strengths(ordered.form in LIQUID_FORMS, ordered.strength)
    )


@lru_cache(maxsize=64)
def _strengths(liquid: bool, ordered: float) -> tuple[tuple[str, str, str, float], ...]:
    """(code, name, dose form, strength) of the generic oral strengths of one kind other
    than ``ordered``, smallest first: read from the knowledge once per kind and strength (a
    bounded memo, as a strength may come from an order's free text)."""
    found = [
        (code, other.name, other.dose_form, other.strength)
        for code, other in drug_index().products.items()
        if other.route == "oral"
        and other.brand is None
        and other.strength
        and other.strength != ordered
        and (other.dose_form in LIQUID_FORMS if liquid else other.dose_form == "tablet")
        and other.strength_unit == ("mg/mL" if liquid else "mg")
    ]
    return tuple(sorted(found, key=itemgetter(3)))


def _draft(s: Situation, reference: str) -> tuple[BaclofenOrder | None, BaclofenOrder | None, bool]:
    """(the draft, the order whose product and dose writing the proposal follows, whether the
    draft stops oral baclofen). A stop has no dose of its own: the order it stops has."""
    for order in s.oral_reviewed:
        if order.order.reference == reference:
            return order, order, False
    for change in s.changes:
        if change.draft.order.reference == reference and change.stops and change.active.oral:
            return change.draft, change.active, True
    return None, None, False


def _product(order: BaclofenOrder) -> Product:
    product = order.product
    written, unit, code = "count", None, None
    for dosage in order.order.dosages:
        quantity = dosage.dose or dosage.dose_range_high
        if quantity is None:
            continue
        units = (quantity.units or "").strip().lower()
        written = "mass" if units in MASS_UNITS else "volume" if units in VOLUME_UNITS else "count"
        unit, code = quantity.unit, quantity.code
        break
    per_day = order.dose.administrations_per_day
    frequency = int(per_day) if per_day and float(per_day).is_integer() else None
    strength = product.strength if product else None
    unit_ok = product is not None and product.strength_unit in ("mg", "mg/mL")
    return Product(
        form=product.dose_form if product else "unknown",
        strength=strength if unit_ok else None,
        written=written,
        written_unit=unit,
        written_code=code,
        frequency=frequency,
    )


def _kidney_band(s: Situation, k: Knowledge) -> Band | None:
    """The strictest kidney band of the current, the stale and (without a birth date) the
    youngest adult's results: kidney function rarely recovers, and a band the youngest
    adult's estimate falls under holds at any age."""
    renal = s.renal
    return _worst_band((*renal.values, *renal.stale, *renal.without_age), k)


def _ceilings(s: Situation, k: Knowledge, band: Band | None) -> tuple[Limit, ...]:
    limits = []
    if k.rules["R3a"].enabled:
        limits.append(Limit("R3a", k.thresholds["R3a", "max_daily"]))
    on_record = any(s.conditions.get(flag) for flag in KIDNEY_FAILURE_FLAGS)
    if on_record and k.rules["R4a"].enabled:
        limits.append(Limit("R4a", k.thresholds["R4a", "dialysis_ceiling"]))
    if band is not None:
        limits.append(Limit(band.rule_id, band.ceiling))
    if s.age is not None and s.age < k.thresholds["R5a", "min_age"]:
        young = s.age < k.thresholds["R5a", "young_child_age"]
        ceiling = k.thresholds["R5a", "young_child_ceiling" if young else "child_ceiling"]
        limits.append(Limit("R5a", ceiling))
    return tuple(limits)


def _start(s: Situation, k: Knowledge, band: Band | None) -> Limit | None:
    """This patient's start: the lowest of the label start, the kidney band's start and the
    older adult's (the reduced one when the age is unknown: the patient may be old). None
    for a child: no source read gives a paediatric start (rule table, R5a)."""
    if s.age is not None and s.age < k.thresholds["R5a", "min_age"]:
        return None
    starts = [Limit("R3d", k.thresholds["R3d", "start_daily"])]
    older = _older_start(s, k)
    if older is not None:
        starts.append(Limit("R5c", older.limit))
    elif s.age is None:
        starts.append(Limit("R5d", k.thresholds["R5c", "reduced_start_daily"]))
    if any(s.conditions.get(flag) for flag in KIDNEY_FAILURE_FLAGS):
        starts.append(Limit("R4a", k.thresholds["R4a", "dialysis_ceiling"]))
    kidney = band_start(band, k)
    if kidney is not None:
        starts.append(kidney)
    return min(starts, key=lambda limit: limit.daily)


def _step_allowed(s: Situation, k: Knowledge) -> bool:
    """Whether the titration interval has passed since the newest active oral order was
    written (unknown: only the step's size is limited, as the titration rule checks)."""
    last = _last_written(s.previous, Route.ORAL)
    if last is None:
        return True
    since = (s.today - last[1]).days
    return not 0 <= since < k.thresholds["R3d", "step_days"]
