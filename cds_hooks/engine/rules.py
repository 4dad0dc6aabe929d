"""The rule families: one function each, reading every number from the knowledge rule table.

A family function returns ``Hit``s (rule id + facts); the engine drops disabled rules and
merges the hits of one topic into one finding at the highest tier. Facts are pre-formatted
strings so the card catalogue can put them in sentences without knowing units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from operator import itemgetter
from typing import Any

from cds_hooks.engine.dose import DailyDose, Route
from cds_hooks.engine.findings import Action
from cds_hooks.engine.planner import Limit
from cds_hooks.engine.renal import RenalKind, RenalValue, Rise, SetAside
from cds_hooks.engine.situation import BaclofenOrder, Change, CoMedication, Situation
from cds_hooks.knowledge import Knowledge, observation_codes
from cds_hooks.model import Indicator

PARENTERAL_ROUTES = frozenset(
    {
        Route.INTRAVENOUS,
        Route.INTRAMUSCULAR,
        Route.SUBCUTANEOUS,
        Route.EPIDURAL,
        Route.OTHER_PARENTERAL,
    }
)
RESPIRATORY_PARTNERS = frozenset(
    {"benzodiazepine", "z-drug", "barbiturate", "gabapentinoid", "oxybate"}
)
BEERS_OPIOID_PARTNERS = frozenset({"benzodiazepine", "gabapentinoid"})
"""Classes Beers 2023 Table 5 names as pairs to avoid with an opioid."""
GABAPENTINOIDS = frozenset({"gabapentinoid"})
OPIOIDS = frozenset({"opioid"})
DEPRESSANTS = frozenset({"muscle-relaxant"} | OPIOIDS | RESPIRATORY_PARTNERS)
OTHER_DEPRESSANTS = DEPRESSANTS - OPIOIDS
LEVODOPA = frozenset({"levodopa"})
ANTIHYPERTENSIVES = frozenset({"antihypertensive"})
OTHER_SEDATING = frozenset(
    {
        "sedating-antihistamine",
        "antipsychotic",
        "tricyclic",
        "maoi",
        "lithium",
        "sedating-antidepressant",
        "central-antihypertensive",
        "sedative-other",
    }
)
KIDNEY_FAILURE_FLAGS = ("dialysis", "esrd", "ckd-5")
CAUTION_FLAGS = ("epilepsy", "psychosis", "autonomic-dysreflexia", "stroke", "pregnancy")
RESPIRATORY = "respiratory-impairment"
PRECAUTION_RULES = (("R8c", RESPIRATORY), ("R8d", "hepatic-impairment"), ("R8e", "breastfeeding"))
"""Label precautions with a rule (tier, sources) of their own, for baclofen being taken on."""
PUMP_SITE_INFECTION = "intrathecal-site-infection"
ALCOHOL = "alcohol-use-disorder"
MASS_UNITS = frozenset({"mg", "g", "milligram", "milligrams", "gram", "grams"})
ORDERED_NOW = "ordered now"
"""Said of a co-medication drafted in this session: the prescriber is writing it now."""


# Records built on every call are slotted but not frozen: a frozen dataclass pays an
# object.__setattr__ call per field when built. Nothing mutates them after construction.
@dataclass(slots=True)
class Hit:
    rule_id: str
    facts: dict[str, Any]
    variant: str | None = None
    inputs: tuple[str, ...] = ()
    actions: frozenset[Action] = frozenset()
    """``UPDATE_DOSE`` where the rule calls for another dose: the regimen planner (``plans``)
    works out the one dose proposed for the draft, from every limit at once."""
    order: str | None = None
    tier: Indicator | None = None
    """Set only where a rule escalates above its table tier (stated in the rule's docstring)."""
    sources: tuple[str, ...] = ()
    """Sources beyond the rule's own, cited where this hit rests on them."""


@dataclass(slots=True)
class OlderStart:
    """R5c's start limit for an older adult and why (``variant``): the older-old age, reduced
    kidney function (``renal``), or neither (the adult start)."""

    limit: float
    variant: str | None
    renal: RenalValue | None = None


@dataclass(slots=True)
class Band:
    rule_id: str
    value: RenalValue
    ceiling: float
    severity: int


def num(value: float) -> str:
    """``value`` to one decimal, no trailing zeros: ``30``, ``7.5``, ``1e+06``."""
    if 0 < value < 1e6 and value == int(value):  # most doses and limits: nothing to round
        return str(int(value))
    return f"{round(value, 1):g}"


def short(value: RenalValue) -> str:
    """``eGFR 24 (2026-10-03)`` for summaries; calculated and cystatin C values say so."""
    kind = "eGFR" if value.kind.is_egfr else "CrCl"
    calc = (
        ", calculated"
        if value.kind in (RenalKind.EGFR_CALCULATED, RenalKind.CRCL_CALCULATED)
        else ", cystatin C"
        if value.cystatin_c
        else ""
    )
    when = value.effective.isoformat() if value.effective else "undated"
    return f"{kind} {value.display} ({when}{calc})"


def renal_line(value: RenalValue) -> str:
    return value.label + (f": {value.inputs}" if value.inputs else "")


def dose_lines(s: Situation, route: Route) -> tuple[str, ...]:
    """Each order's dose reading on ``route`` (and their total): worked out once per call."""
    lines = s.dose_lines.get(route)
    if lines is None:
        lines = s.dose_lines[route] = _dose_lines(s, route)
    return lines


def _dose_lines(s: Situation, route: Route) -> tuple[str, ...]:
    orders = [o for o in s.current if o.route is route]
    lines = [
        f"{o.label} ({'draft' if o.draft else 'active order'}): {o.dose.explanation}"
        for o in orders
    ]
    total = s.route_total(route)
    if len(orders) > 1 and total is not None and total.amount is not None:
        lines.append(f"Total {route.value} baclofen: {num(total.amount)} {total.unit}/day")
    return tuple(lines)


def age_line(s: Situation) -> tuple[str, ...]:
    return (f"Age {s.age} years",) if s.age is not None else ("Age unknown (no birth date)",)


def _amount(dose: DailyDose | None) -> float | None:
    return dose.amount if dose is not None else None


def _is_bolus(order: BaclofenOrder) -> bool:
    """A single intrathecal injection (screening), not a pump's daily dose (or rate)."""
    timings = [d.timing for d in order.order.dosages if d.timing is not None]
    if any(t.count == 1 for t in timings):
        return True
    return (
        bool(order.order.dosages)
        and not order.dose.from_rate
        and not any(t.frequency or t.period or t.code or t.when for t in timings)
    )


# --- R0 dose not computable ----------------------------------------------------------------


def dose_unknown(s: Situation, k: Knowledge) -> list[Hit]:
    del k
    hits = []
    for order in s.current:
        if order.dose.amount is not None:
            continue
        if order.intrathecal and _is_bolus(order) and order.dose.per_administration is not None:
            continue  # a screening bolus with a readable dose: the bolus rule judges it
        if not (order.under_review or any(r.route is order.route for r in s.reviewed)):
            continue
        hits.append(
            Hit(
                "R0",
                {
                    "medication": order.label,
                    "problem": order.dose.problem or "the dose could not be read",
                    "status": "draft" if order.draft else "active order",
                },
                inputs=(f"{order.label}: {order.dose.explanation}",),
                order=order.order.reference if order.under_review else None,
            )
        )
    return hits


# --- R1 route ------------------------------------------------------------------------------


def route(s: Situation, k: Knowledge) -> list[Hit]:
    del k
    hits = []
    for order in s.reviewed:
        product_route = order.product.route if order.product else None
        if product_route == "intrathecal" and order.route in PARENTERAL_ROUTES:
            rule_id = "R1a"
        elif (
            product_route == "oral" and order.route in PARENTERAL_ROUTES | {Route.INTRATHECAL}
        ) or (product_route == "intrathecal" and order.route is Route.ORAL):
            rule_id = "R1b"
        else:
            continue
        facts: dict[str, Any] = {
            "medication": order.label,
            "route": order.route.value.replace("-", " "),
        }
        if rule_id == "R1b":
            facts["product_route"] = product_route
        hits.append(
            Hit(
                rule_id,
                facts,
                inputs=(f"Route ordered: {facts['route']}; product: {order.label}",),
                actions=frozenset({Action.DELETE_DRAFT}),
                order=order.order.reference,
            )
        )
    return hits


# --- R2 intrathecal dose -------------------------------------------------------------------


def intrathecal_dose(s: Situation, k: Knowledge) -> list[Hit]:
    hits = []
    reviewed = s.intrathecal_reviewed
    for order in reviewed:
        written = (order.dose.written_unit or "").strip().lower()
        if written in MASS_UNITS:
            hits.append(
                Hit(
                    "R2d",
                    {
                        "medication": order.label,
                        "written": f"{num(_written_value(order))} {written}",
                    },
                    inputs=(f"{order.label}: {order.dose.explanation}",),
                    actions=frozenset({Action.DELETE_DRAFT}),
                    order=order.order.reference,
                )
            )
            return hits
        per_dose = order.dose.per_administration
        limit = k.thresholds["R2a", "max_bolus"]
        if _is_bolus(order) and per_dose is not None and per_dose > limit:
            hits.append(
                Hit(
                    "R2a",
                    {"bolus": num(per_dose), "limit": num(limit)},
                    inputs=(f"{order.label}: {order.dose.explanation}",),
                    order=order.order.reference,
                )
            )
    if not reviewed or all(_is_bolus(o) for o in reviewed):
        return hits
    total = _amount(s.route_total(Route.INTRATHECAL))
    inputs = dose_lines(s, Route.INTRATHECAL)
    limit = k.thresholds["R2b", "max_daily"]
    before = _amount(s.previous_total(Route.INTRATHECAL))
    if total is not None and total > limit:
        # Raised past the limit: repeated increases suggest tolerance or a system problem.
        raised = before is not None and total > before
        facts = {"daily": num(total), "limit": num(limit)}
        hits.append(
            Hit(
                "R2b",
                facts | ({"before": num(before)} if raised and before is not None else {}),
                variant="increase" if raised else None,
                inputs=inputs,
            )
        )
    if total is not None and before:
        rise = (total - before) / before * 100
        # An unknown age may be a child's: the smaller step, never the adult one by default.
        small_step = s.age is None or s.age < k.thresholds["R2c", "pediatric_age"]
        step = k.thresholds["R2c", "max_increase_cerebral" if small_step else "max_increase_spinal"]
        if rise > step:
            hits.append(
                Hit(
                    "R2c",
                    {
                        "before": num(before),
                        "daily": num(total),
                        "rise": num(rise),
                        "limit": num(step),
                        "window": num(k.thresholds["R2c", "window"]),
                    },
                    inputs=(
                        *inputs,
                        f"Current intrathecal dose: {num(before)} mcg/day",
                        *age_line(s),
                    ),
                )
            )
    return hits


def _written_value(order: BaclofenOrder) -> float:
    for dosage in order.order.dosages:
        quantity = dosage.dose or dosage.dose_range_high
        if quantity is not None:
            return quantity.value
    return order.dose.per_administration or 0.0


# --- R3 oral daily dose --------------------------------------------------------------------


def max_daily_dose(s: Situation, k: Knowledge) -> list[Hit]:
    reviewed = s.oral_reviewed
    if not reviewed:
        return []
    hits: list[Hit] = []
    total = _amount(s.route_total(Route.ORAL))
    inputs = dose_lines(s, Route.ORAL)
    label_max = k.thresholds["R3a", "max_daily"]
    reference_max = k.thresholds["R3b", "max_daily"]
    if total is not None and total > label_max:
        actions = {Action.UPDATE_DOSE}
        exceeded = [("R3a", label_max)]
        if total > reference_max and k.rules["R3b"].enabled:
            exceeded.insert(0, ("R3b", reference_max))
            actions.add(Action.DELETE_DRAFT)
        # Raised past the label maximum: repeated increases suggest tolerance (R3a says so).
        before = _amount(s.previous_total(Route.ORAL))
        raised = before is not None and total > before
        hits.extend(
            Hit(
                rule_id,
                {"daily": num(total), "limit": num(limit), "label_max": num(label_max)}
                | ({"before": num(before)} if raised and before is not None else {}),
                variant="increase" if raised and rule_id == "R3a" else None,
                inputs=inputs,
                actions=frozenset(actions),
                order=reviewed[0].order.reference,
            )
            for rule_id, limit in exceeded
        )
    single_max = k.thresholds["R3c", "max_single_dose"]
    for order in reviewed:
        single = order.dose.per_administration
        if single is not None and single > single_max:
            hits.append(
                Hit(
                    "R3c",
                    {"single": num(single), "limit": num(single_max)},
                    inputs=(f"{order.label}: {order.dose.explanation}",),
                    order=order.order.reference,
                )
            )
    return hits


def titration(s: Situation, k: Knowledge) -> list[Hit]:
    """R3d: a new start above the label start, a step larger than the label step, or a
    step sooner than the label interval.

    The interval is counted from the day the newest of the patient's active oral orders was
    written (its ``authoredOn``): the last time the oral dose could have changed. A renewal
    rewritten at the same dose also resets that day, so the card names the order and the
    day. Without a written day only the size of the step is checked.
    """
    reviewed = s.oral_reviewed
    total = _amount(s.route_total(Route.ORAL))
    if not reviewed or total is None:
        return []
    inputs = dose_lines(s, Route.ORAL)
    previous = s.previous_total(Route.ORAL)
    if previous is None:
        start = k.thresholds["R3d", "start_daily"]
        older = _older_start(s, k)
        if older is not None and older.limit < start and k.rules["R5c"].enabled:
            return []  # the older-adult card says it, with its lower limit
        if total > start:
            return [
                Hit(
                    "R3d",
                    {"daily": num(total), "limit": num(start)},
                    variant="start",
                    inputs=(*inputs, "No active oral baclofen order on record: a new start"),
                    actions=frozenset({Action.UPDATE_DOSE}),
                    order=reviewed[0].order.reference,
                )
            ]
        return []
    before = previous.amount
    if before is None or total <= before:
        return []
    step = k.thresholds["R3d", "step_increase"]
    step_days = k.thresholds["R3d", "step_days"]
    facts = {
        "before": num(before),
        "daily": num(total),
        "increase": num(total - before),
        "limit": num(step),
        "days": num(step_days),
    }
    inputs = (*inputs, f"Current oral baclofen before this change: {num(before)} mg/day")
    last = _last_written(s.previous, Route.ORAL)
    if last is not None:
        inputs += (f"{last[0].label} (active order) written {last[1].isoformat()}",)
    wants = frozenset({Action.UPDATE_DOSE})
    draft = reviewed[0].order.reference
    if total - before > step:
        return [Hit("R3d", facts, "increase", inputs, actions=wants, order=draft)]
    if last is None:
        return []
    since = (s.today - last[1]).days
    if not 0 <= since < step_days:  # a day in the future is an error, not a recent step
        return []
    facts |= {
        "since": f"{since} day{'s' if since > 1 else ''} after" if since else "on the day",
        "order": last[0].label,
        "written": last[1].isoformat(),
    }
    return [Hit("R3d", facts, "interval", inputs, actions=wants, order=draft)]


def _last_written(
    orders: Iterable[BaclofenOrder], route: Route
) -> tuple[BaclofenOrder, date] | None:
    """The most recently written of ``orders`` on ``route`` with its day (None if none of
    them gives the day it was written)."""
    dated = [(o, day) for o in orders if o.route is route and (day := o.written) is not None]
    return max(dated, key=itemgetter(1)) if dated else None


# --- R4 kidney function --------------------------------------------------------------------


_BANDS = {
    True: (("R4b", "severe_limit", 3), ("R4c", "egfr_limit", 2), ("R4d", "egfr_limit", 1)),
    False: (("R4b", "severe_limit", 3), ("R4c", "crcl_limit", 2), ("R4d", "crcl_limit", 1)),
}
"""Kidney bands, most severe first, for an eGFR (True) or a CrCl (False): rule id, the name
of its limit and its severity."""


def _band(values: Iterable[RenalValue], k: Knowledge) -> Band | None:
    """The most restrictive band over ``values`` (CrCl and eGFR limits differ).

    A band whose rule a policy switched off falls through to the next milder enabled band,
    so switching off the severe rule never silences a severely impaired patient.
    """
    best: Band | None = None
    for value in values:
        for rule_id, limit, severity in _BANDS[value.kind.is_egfr]:
            if value.certainly_below(k.thresholds[rule_id, limit]) and k.rules[rule_id].enabled:
                if best is None or severity > best.severity:
                    best = Band(rule_id, value, k.thresholds[rule_id, "ceiling"], severity)
                break
    return best


def kidney(s: Situation, k: Knowledge) -> list[Hit]:
    """R4a-R4f, R4h and R4i for oral baclofen (R4g: intrathecal doses give little systemic
    exposure).

    R4f escalates to warning from the high-risk age, or when the age is unknown: renal
    function falls with age and the toxicity cases in the literature are mostly older
    patients.
    """
    reviewed = s.oral_reviewed
    if not reviewed:
        return []
    order = reviewed[0]
    total = _amount(s.route_total(Route.ORAL))
    renal_lines = tuple(renal_line(v) for v in s.renal.values) + tuple(
        _set_aside_line(aside) for aside in s.renal.set_aside
    )
    cystatin = _cystatin_sources(s)
    inputs = dose_lines(s, Route.ORAL) + renal_lines + age_line(s)
    unchecked = (
        (
            "Problem list could not be obtained: "
            "dialysis, ESRD and label precautions were not checked",
        )
        if s.conditions_unavailable
        else ()
    )
    inputs += unchecked
    daily = {"daily": num(total)} if total is not None else {"daily": "unknown"}
    hits: list[Hit] = []

    on_record = [label for flag in KIDNEY_FAILURE_FLAGS for label in s.conditions.get(flag, ())]
    worst = _worst_band(s.renal.values, k)
    beers = _beers_low_egfr(s, k)
    failing = worst is not None and worst.rule_id == "R4a"
    if (on_record and k.rules["R4a"].enabled) or failing:
        ceiling = k.thresholds["R4a", "dialysis_ceiling"]
        over = total is not None and total > ceiling
        actions = {Action.DELETE_DRAFT} | ({Action.UPDATE_DOSE} if over else set())
        facts = daily | {"ceiling": num(ceiling)}
        if on_record:
            facts |= {"conditions": ", ".join(dict.fromkeys(on_record))}
        elif worst is not None:
            facts |= {"renal": short(worst.value), "limit": num(k.thresholds["R4a", "esrd_limit"])}
        hits.append(
            Hit(
                "R4a",
                facts,
                variant="conditions" if on_record else "kidney-failure",
                inputs=inputs + tuple(f"On record: {c}" for c in dict.fromkeys(on_record)),
                actions=frozenset(actions),
                order=order.order.reference,
            )
        )
    else:
        band = worst
        if band is not None and total is not None and total > band.ceiling:
            actions = {Action.UPDATE_DOSE}
            if band.rule_id == "R4b":
                actions.add(Action.DELETE_DRAFT)
            hits.append(
                Hit(
                    band.rule_id,
                    daily | {"ceiling": num(band.ceiling), "renal": short(band.value)},
                    inputs=(
                        dose_lines(s, Route.ORAL)
                        + renal_lines
                        + _used(band, s.renal.values)
                        + age_line(s)
                        + unchecked
                    ),
                    actions=frozenset(actions),
                    order=order.order.reference,
                    sources=_value_sources(band.value, cystatin),
                )
            )
        elif band is not None and band.rule_id == "R4b" and total is not None and beers is None:
            hits.append(_severe_within_ceiling(s, k, order, band, total, inputs))
        if not s.renal.known:
            hits.append(_renal_unknown(s, k, order, total, unchecked))

    if beers is not None:
        hits.append(
            Hit(
                "R4e",
                daily
                | {
                    "age": str(s.age),
                    "renal": short(beers),
                    "limit": num(k.thresholds["R4e", "egfr_limit"]),
                },
                inputs=inputs,
                order=order.order.reference,
            )
        )
    if s.renal.rise is not None:
        hits.append(_unstable(s, k, order, total, s.renal.rise, inputs))
    if unchecked and not hits:
        # R4h: a dialysis patient's results need not look like kidney failure, and no
        # other kidney card is there to list what was not checked.
        facts = daily | {"ceiling": num(k.thresholds["R4a", "dialysis_ceiling"])}
        hits.append(Hit("R4h", facts, inputs=inputs, order=order.order.reference))
    return hits


def _beers_low_egfr(s: Situation, k: Knowledge) -> RenalValue | None:
    """R4e: the eGFR (CrCl when no eGFR is known) under the Beers limit at the Beers age."""
    if s.age is None or s.age < k.thresholds["R4e", "age"]:
        return None
    return _egfr_below(s, k.thresholds["R4e", "egfr_limit"])


def _egfr_below(s: Situation, limit: float) -> RenalValue | None:
    """The strictest current eGFR (CrCl when no eGFR is known) certainly below ``limit``."""
    egfrs = [v for v in s.renal.values if v.kind.is_egfr] or list(s.renal.values)
    low = (v for v in egfrs if v.certainly_below(limit))
    return min(low, key=lambda v: v.strictness, default=None)


def _severe_within_ceiling(
    s: Situation,
    k: Knowledge,
    order: BaclofenOrder,
    band: Band,
    total: float,
    inputs: tuple[str, ...],
) -> Hit:
    """R4i: severe impairment with a dose at or under its ceiling still gets a word, since
    neurotoxicity is reported at 10 mg/day in CKD stage 4 (the ceiling is a most, not a safe
    dose). A new start above the renal start is offered that start; a regimen already taken
    is not changed from here. From the Beers age the R4e card says avoid instead."""
    start = k.thresholds["R4i", "start_daily"]
    new_start = s.previous_total(Route.ORAL) is None
    wants = new_start and total > start
    return Hit(
        "R4i",
        {
            "daily": num(total),
            "ceiling": num(band.ceiling),
            "renal": short(band.value),
            "start": num(start),
        },
        variant=None if new_start else "continuing",
        inputs=inputs,
        actions=frozenset({Action.UPDATE_DOSE}) if wants else frozenset(),
        order=order.order.reference,
    )


def _set_aside_line(aside: SetAside) -> str:
    """Which result of the day was not used, and why, short enough to be read on the card
    (the cystatin C preference's sources are the card's, see ``_cystatin_sources``)."""
    value = aside.value
    when = value.effective.isoformat() if value.effective else "undated"
    shown = f"{value.kind.value} {value.display} ({when}, LOINC {value.code})"
    if not aside.for_cystatin_c:
        return f"Not used: {shown}: the stricter result of the same day is used"
    return (
        f"Not used: {shown}: the same day's cystatin C-based eGFR is preferred, since "
        "creatinine overstates kidney function when muscle mass is low"
    )


def _value_sources(value: RenalValue, cystatin: tuple[str, ...]) -> tuple[str, ...]:
    """What the value a kidney card rests on was worked out by, when not reported as is."""
    if value.cystatin_c:
        return cystatin
    if value.kind is RenalKind.EGFR_CALCULATED:
        return observation_codes().calculated_egfr_sources
    return ()


def _cystatin_sources(s: Situation) -> tuple[str, ...]:
    """The cystatin C preference's sources, when it decided which eGFR was used."""
    if any(aside.for_cystatin_c for aside in s.renal.set_aside):
        return observation_codes().cystatin_c_sources
    return ()


def _used(band: Band, values: tuple[RenalValue, ...]) -> tuple[str, ...]:
    """Which of several results set the ceiling, and why that one: said in one line that
    names the others, as the card may have room for no other kidney line."""
    others = [short(v) for v in values if v is not band.value]
    if not others:
        return ()
    return (f"Used: {short(band.value)}, stricter than {' and '.join(others)}",)


def _unstable(
    s: Situation,
    k: Knowledge,
    order: BaclofenOrder,
    total: float | None,
    rise: Rise,
    inputs: tuple[str, ...],
) -> Hit:
    """R4j: creatinine rising by the acute kidney injury criteria. Escalated to a warning
    when the dose is above the ceiling for the worse of the results (an estimate from a
    rising creatinine overstates kidney function, so the true ceiling may be lower)."""
    criteria = rise.criteria
    facts = {
        "daily": num(total) if total is not None else "unknown",
        "before": f"{rise.baseline:.2f}",
        "before_at": _moment(rise.baseline_at),
        "latest": f"{rise.latest:.2f}",
        "latest_at": _moment(rise.latest_at),
        "span": _span(rise.latest_at - rise.baseline_at),
    }
    if rise.by_ratio:
        variant = "ratio"
        facts |= {
            "ratio": num(rise.latest / rise.baseline),
            "limit": num(criteria.ratio),
            "window": _span(criteria.ratio_window),
        }
    else:
        variant = "rise"
        facts |= {
            "rise": f"{rise.latest - rise.baseline:.2f}",
            "limit": num(criteria.rise_mg_dl),
            "window": _span(criteria.rise_window),
        }
    worst = _worst_band((*s.renal.values, *s.renal.without_age), k)
    over = worst is not None and total is not None and total > worst.ceiling
    if worst is not None and over:
        variant += "-over-ceiling"
        facts |= {"renal": short(worst.value), "ceiling": num(worst.ceiling)}
    # A new start above the start for the worse result is offered that start, as R4i does:
    # the card says keep the dose low, and the estimate overstates kidney function.
    wants = over or _start_to_offer(s, k, worst, total) is not None
    return Hit(
        "R4j",
        facts,
        variant=variant,
        inputs=inputs,
        actions=frozenset({Action.ORDER_CREATININE} | ({Action.UPDATE_DOSE} if wants else set())),
        order=order.order.reference,
        tier=Indicator.WARNING if over else None,
    )


def _moment(at: datetime) -> str:
    """A result's date, with its time of day when it has one (48-hour windows need it)."""
    if at.time() == time():
        return at.date().isoformat()
    return at.strftime("%Y-%m-%d %H:%M")


def _span(delta: timedelta) -> str:
    hours = delta / timedelta(hours=1)
    if hours < 72:
        return f"{num(hours)} h"
    return f"{num(delta / timedelta(days=1))} days"


def _renal_unknown(
    s: Situation,
    k: Knowledge,
    order: BaclofenOrder,
    total: float | None,
    unchecked: tuple[str, ...],
) -> Hit:
    """R4f. A stale result is not used as current, but it is not thrown away either: kidney
    function rarely recovers, so a dose above the ceiling for the last known band is said
    on this card (with the adjusted dose offered) rather than silenced.

    With a recent creatinine but no birth date, the card gives what the creatinine means
    for the youngest adult (older patients have less) and, when even that calls for a
    lower dose, says so at the tier of the kidney rule it matches. A new start is offered
    the start for that band, which holds at any age (so is one after a stale result); a
    regimen already taken is not changed from here, since the patient's own ceiling may be
    lower still.

    Escalated to a warning for a dose above a ceiling, and for a patient at the high-risk
    age or of unknown age (who may be that old), each reason stated as it is."""
    high_risk_age = num(k.thresholds["R4f", "high_risk_age"])
    older = s.age is None or s.age >= k.thresholds["R4f", "high_risk_age"]
    over_ceiling = False
    tier = Indicator.WARNING
    facts = {"lookback": str(s.renal.lookback_days)}
    actions = {Action.ORDER_CREATININE}
    stale_band = _worst_band(s.renal.stale, k)
    # The band the youngest adult's estimate, else the last known result, falls under.
    bounded = _worst_band(s.renal.without_age, k) if s.renal.without_age else stale_band
    if s.renal.labs_unavailable:
        variant = "unavailable"
    elif s.renal.without_age:
        actions = set()  # a creatinine is on record: what is missing is the birth date
        facts |= {"renal": short(s.renal.without_age[0])}
        variant = "no-age"
        if bounded is not None and total is not None and total > bounded.ceiling:
            variant = "no-age-over-ceiling"
            facts |= _over_ceiling(bounded, total)
            over_ceiling = True
            if k.rules[bounded.rule_id].tier.rank > tier.rank:
                tier = k.rules[bounded.rule_id].tier
            if tier is Indicator.CRITICAL:
                actions.add(Action.DELETE_DRAFT)
    elif stale_band is not None and total is not None and total > stale_band.ceiling:
        variant = "stale-over-ceiling"
        facts |= _over_ceiling(stale_band, total)
        actions.add(Action.UPDATE_DOSE)
        over_ceiling = True
    elif s.renal.stale:
        variant = "stale"
        facts |= {"renal": short(s.renal.stale[0])}
    else:
        variant = "none"
    # A new start above the start for that band is offered it: the start holds at any age,
    # and kidney function rarely recovers.
    start = _start_to_offer(s, k, bounded, total)
    if start is not None:
        actions.add(Action.UPDATE_DOSE)
        if variant == "stale":
            variant = "stale-start"
            facts["start"] = num(start.daily)
    shorter = s.renal.lookback_days < k.thresholds["R4f", "lookback"]
    inputs = (
        *age_line(s),
        *(renal_line(v) for v in s.renal.without_age),
        *(f"Older result not used: {renal_line(v)}" for v in s.renal.stale),
        f"Look-back: {s.renal.lookback_days} days"
        + (
            f" (the shorter look-back: age {high_risk_age} or over, known CKD, or age unknown)"
            if shorter
            else ""
        ),
        *unchecked,
    )
    if older and tier is Indicator.WARNING:
        who = (
            f"the age is unknown and may be {high_risk_age} or over"
            if s.age is None
            else f"the patient is {high_risk_age} or over"
        )
        inputs += (
            f"Shown as a warning because {who}: kidney function falls with age and most "
            "baclofen toxicity reports are in older patients",
        )
    return Hit(
        "R4f",
        facts,
        variant=variant,
        inputs=inputs,
        actions=frozenset(actions),
        order=order.order.reference,
        tier=tier if older or over_ceiling else None,
    )


def _over_ceiling(band: Band, total: float) -> dict[str, str]:
    return {"renal": short(band.value), "daily": num(total), "ceiling": num(band.ceiling)}


BAND_START = {"R4a": ("R4a", "dialysis_ceiling"), "R4b": ("R4i", "start_daily")}
BAND_START |= {"R4c": ("R4c", "start_daily"), "R4d": ("R4d", "start_daily")}
"""The kidney rule and the rule-table start dose for a new start under it (kidney failure:
its 5 mg/day most, Canada)."""


def band_start(band: Band | None, k: Knowledge) -> Limit | None:
    """The start dose for a new start under the kidney ``band`` (None above every band)."""
    if band is None:
        return None
    rule_id, name = BAND_START[band.rule_id]
    return Limit(rule_id, k.thresholds[rule_id, name])


def _start_to_offer(
    s: Situation, k: Knowledge, band: Band | None, total: float | None
) -> Limit | None:
    """The band's start dose, when this is a new oral start above it (R4f, R4j)."""
    start = band_start(band, k)
    new_start = s.previous_total(Route.ORAL) is None
    if new_start and start is not None and total is not None and total > start.daily:
        return start
    return None


def _worst_band(values: Iterable[RenalValue], k: Knowledge) -> Band | None:
    """The most restrictive kidney rule the values certainly fall under: kidney failure
    (R4a, unless a policy switched it off) before the bands of ``_band``."""
    failing = [v for v in values if v.certainly_below(k.thresholds["R4a", "esrd_limit"])]
    if failing and k.rules["R4a"].enabled:
        return Band("R4a", failing[0], k.thresholds["R4a", "dialysis_ceiling"], 4)
    return _band(values, k)


# --- R5 age --------------------------------------------------------------------------------


def age(s: Situation, k: Knowledge) -> list[Hit]:
    """R5a-d. R5c is left out when the titration rule already flags the same new start at
    the same or a lower limit: two cards saying one thing is alert fatigue."""
    if s.age is None:
        return _age_unknown(s, k)
    hits = []
    oral = s.oral_reviewed
    total = _amount(s.route_total(Route.ORAL))
    if oral and s.age < k.thresholds["R5a", "min_age"]:
        young = s.age < k.thresholds["R5a", "young_child_age"]
        ceiling = k.thresholds["R5a", "young_child_ceiling" if young else "child_ceiling"]
        over = total is not None and total > ceiling
        hits.append(
            Hit(
                "R5a",
                {
                    "age": str(s.age),
                    "limit": num(k.thresholds["R5a", "min_age"]),
                    "ceiling": num(ceiling),
                    "daily": num(total) if total is not None else "unknown",
                },
                variant="over-ceiling" if over else None,
                inputs=age_line(s) + dose_lines(s, Route.ORAL),
                actions=frozenset({Action.UPDATE_DOSE}) if over else frozenset(),
                order=oral[0].order.reference,
            )
        )
    intrathecal = s.intrathecal_reviewed
    if intrathecal and s.age < k.thresholds["R5b", "min_age"]:
        hits.append(
            Hit(
                "R5b",
                {"age": str(s.age), "limit": num(k.thresholds["R5b", "min_age"])},
                inputs=age_line(s),
                order=intrathecal[0].order.reference,
            )
        )
    older = _older_start(s, k)
    if (
        oral
        and older is not None
        and not (k.rules["R3d"].enabled and k.thresholds["R3d", "start_daily"] <= older.limit)
        and s.previous_total(Route.ORAL) is None
        and total is not None
        and total > older.limit
    ):
        facts = {"age": str(s.age), "daily": num(total), "limit": num(older.limit)}
        inputs = age_line(s) + dose_lines(s, Route.ORAL)
        if older.variant == "old-age":
            facts["old_age"] = num(k.thresholds["R5c", "old_age"])
        elif older.renal is not None:
            facts |= {
                "renal": short(older.renal),
                "egfr_limit": num(k.thresholds["R5c", "egfr_limit"]),
            }
            inputs += (renal_line(older.renal),)
        hits.append(
            Hit(
                "R5c",
                facts,
                variant=older.variant,
                inputs=inputs,
                actions=frozenset({Action.UPDATE_DOSE}),
                order=oral[0].order.reference,
            )
        )
    return hits


def _older_start(s: Situation, k: Knowledge) -> OlderStart | None:
    """R5c's start limit, None below its age (or with no age): the reduced start from the
    older-old age, or with eGFR (CrCl when no eGFR is known) below the normal limit; else the
    adult start. An unknown kidney function is not read as reduced here: the kidney-unknown
    card asks for it at this age."""
    if s.age is None or s.age < k.thresholds["R5c", "age"]:
        return None
    reduced = k.thresholds["R5c", "reduced_start_daily"]
    if s.age >= k.thresholds["R5c", "old_age"]:
        return OlderStart(reduced, "old-age")
    low = _egfr_below(s, k.thresholds["R5c", "egfr_limit"])
    if low is not None:
        return OlderStart(reduced, "kidney", low)
    return OlderStart(k.thresholds["R5c", "start_daily"], None)


def _age_unknown(s: Situation, k: Knowledge) -> list[Hit]:
    """R5d: without a birth date a child's oral dose, or an older adult's start, would pass
    unchecked; the card names the ages that were not checked instead of staying silent."""
    checked = s.oral_reviewed or s.intrathecal_reviewed
    if not checked:
        return []
    return [
        Hit(
            "R5d",
            {
                "child_age": num(k.thresholds["R5a", "min_age"]),
                "intrathecal_age": num(k.thresholds["R5b", "min_age"]),
                "older_age": num(k.thresholds["R5c", "age"]),
            },
            inputs=age_line(s),
            order=checked[0].order.reference,
        )
    ]


# --- R6 co-medication ----------------------------------------------------------------------


def _named(k: Knowledge, meds: Iterable[CoMedication], classes: frozenset[str]) -> list[str]:
    named = []
    for m in meds:
        if not m.classes.isdisjoint(classes):  # no empty intersection built per medication
            shared = m.classes & classes
            drafted = f", {ORDERED_NOW}" if m.draft else ""
            named.append(f"{m.label} ({k.class_labels(shared)}{drafted})")
    return named


def medications_unknown(s: Situation, k: Knowledge) -> list[Hit]:
    """R6i: without the medication list, or with orders on it whose drug cannot be
    identified, an opioid + benzodiazepine combination could go unseen, so say what was
    not checked instead of staying silent. The count is named on the interaction cards
    when they fire, and here otherwise."""
    del k
    if not s.reviewed:
        return []
    if s.medications_unavailable:
        return [Hit("R6i", {}, inputs=_med_inputs(s))]
    if s.unidentified_medications and not (s.comedication_classes & DEPRESSANTS):
        facts = {"count": str(s.unidentified_medications)}
        return [Hit("R6i", facts, variant="unidentified", inputs=_med_inputs(s))]
    return []


def _med_inputs(s: Situation) -> tuple[str, ...]:
    if s.medications_unavailable:
        return (
            "Active medication list could not be obtained: "
            "only the orders in this session were checked",
        )
    if s.unidentified_medications:
        return (
            f"Active medication orders not identified, so not checked: "
            f"{s.unidentified_medications}",
        )
    return ()


def cns_depressants(s: Situation, k: Knowledge) -> list[Hit]:
    classes = s.comedication_classes & DEPRESSANTS
    alcohol = s.conditions.get(ALCOHOL, ())
    if not classes and not alcohol:
        return []
    drugs = _named(k, s.comedications, DEPRESSANTS)
    named = list(drugs) + [f"{label} (alcohol use disorder on record)" for label in alcohol]
    class_text = k.class_labels(classes)
    facts = {
        "drugs": "; ".join(named),
        "classes": class_text + (" and alcohol use disorder" if alcohol and class_text else "")
        or "alcohol use disorder",
        "count": str(len(named)),
    }
    inputs = (
        tuple(f"Co-prescribed: {d}" for d in drugs)
        + tuple(f"Condition on record: {a}" for a in alcohol)
        + _med_inputs(s)
    )
    hits = []
    partners = classes & RESPIRATORY_PARTNERS
    if "opioid" in classes and partners:
        partner_text = k.class_labels(partners)
        primary = s.primary
        older = s.age is not None and s.age >= k.thresholds["R6d", "age"]
        hits.append(
            Hit(
                "R6b",
                facts | {"partners": partner_text},
                variant="older"
                if older and not partners.isdisjoint(BEERS_OPIOID_PARTNERS)
                else None,
                inputs=inputs,
                actions=frozenset({Action.DELETE_DRAFT}) if primary else frozenset(),
                order=primary.order.reference if primary else None,
            )
        )
    if "opioid" in classes:
        only = "; ".join(_named(k, s.comedications, OPIOIDS))
        hits.append(Hit("R6a", facts | {"drugs": only}, inputs=inputs))
    if not classes <= OPIOIDS:
        others = "; ".join(_named(k, s.comedications, OTHER_DEPRESSANTS))
        variant = "gabapentinoid" if not classes.isdisjoint(GABAPENTINOIDS) else None
        hits.append(Hit("R6c", facts | {"drugs": others}, variant=variant, inputs=inputs))
    if alcohol:
        hits.append(Hit("R6h", facts | {"conditions": ", ".join(alcohol)}, inputs=inputs))
    lungs = s.conditions.get(RESPIRATORY, ())
    if lungs:
        hits.append(
            Hit(
                "R6j",
                facts | {"conditions": ", ".join(lungs)},
                inputs=inputs + tuple(f"Condition on record: {label}" for label in lungs),
            )
        )
    return hits


def beers_cns_count(s: Situation, k: Knowledge) -> list[Hit]:
    if s.age is None or s.age < k.thresholds["R6d", "age"]:
        return []
    active = [m for m in s.comedications if k.any_beers_cns(m.classes)]
    alcohol = s.conditions.get("alcohol-use-disorder", ())
    count = 1 + len(active) + (1 if alcohol else 0)
    limit = k.thresholds["R6d", "cns_active_count"]
    if count < limit:
        return []
    named = [
        "baclofen",
        *(f"{m.label} ({ORDERED_NOW})" if m.draft else m.label for m in active),
        *(f"{a} (alcohol)" for a in alcohol),
    ]
    return [
        Hit(
            "R6d",
            {
                "age": str(s.age),
                "count": str(count),
                "limit": num(limit),
                "drugs": "; ".join(named),
            },
            inputs=age_line(s) + tuple(f"CNS-active: {d}" for d in named) + _med_inputs(s),
        )
    ]


def other_interactions(s: Situation, k: Knowledge) -> list[Hit]:
    """R6e-g. A rule is not worked out when no co-medication has its classes or a policy
    switched it off (the engine would drop its hit)."""
    hits = []
    present = s.comedication_classes
    rules = k.rules
    if rules["R6e"].enabled and not present.isdisjoint(LEVODOPA):
        levodopa = _named(k, s.comedications, LEVODOPA)
        hits.append(
            Hit(
                "R6e",
                {"drugs": "; ".join(levodopa)},
                inputs=tuple(f"Co-prescribed: {d}" for d in levodopa),
            )
        )
    if rules["R6f"].enabled and not present.isdisjoint(OTHER_SEDATING):
        sedating = _named(k, s.comedications, OTHER_SEDATING)
        hits.append(
            Hit(
                "R6f",
                {
                    "drugs": "; ".join(sedating),
                    "classes": k.class_labels(present & OTHER_SEDATING),
                },
                inputs=tuple(f"Co-prescribed: {d}" for d in sedating),
            )
        )
    if rules["R6g"].enabled and not present.isdisjoint(ANTIHYPERTENSIVES):
        lowering = _named(k, s.comedications, ANTIHYPERTENSIVES)
        hits.append(
            Hit(
                "R6g",
                {"drugs": "; ".join(lowering)},
                inputs=tuple(f"Co-prescribed: {d}" for d in lowering),
            )
        )
    return hits


# --- R7 stopping and duplicates ------------------------------------------------------------


def withdrawal(s: Situation, k: Knowledge) -> list[Hit]:
    """R7a, R7b: a stop or a sharp cut of the baclofen the patient is on.

    A stop with a new order of the same route in the session is a step of a taper or a
    rewritten order, not a stop: the route's total before the session is compared with the
    total after it. When a dose on either side cannot be read, each change is judged
    alone, as nothing shows the patient keeps the dose.
    """
    hits = []
    intrathecal_before = _amount(s.previous_total(Route.INTRATHECAL))
    intrathecal_after = _after(s, Route.INTRATHECAL)
    # An intrathecal order stopped and rewritten at no lower a daily dose (a refill with a
    # new concentration, say) keeps the pump running; a lower one may still be a stop.
    rewritten = (
        intrathecal_before is not None
        and intrathecal_after is not None
        and intrathecal_after >= intrathecal_before > 0
    )
    for change in s.changes:
        if change.active.intrathecal and change.stops and not rewritten:
            hits.append(
                Hit(
                    "R7b",
                    {"medication": change.active.label},
                    inputs=_change_lines(change),
                    actions=frozenset({Action.DELETE_DRAFT}),
                    order=change.draft.order.reference,
                )
            )
    oral = [c for c in s.changes if c.active.oral and (c.stops or c.draft.oral)]
    if not oral:
        return hits
    before = _amount(s.previous_total(Route.ORAL))
    after = _after(s, Route.ORAL)
    if before and after is not None:
        hits.extend(_oral_total_cut(s, k, oral, before, after))
    else:
        hits.extend(h for change in oral if (h := _oral_change_cut(k, change)) is not None)
    return hits


def _after(s: Situation, route: Route) -> float | None:
    """The route's daily total after signing: 0 when no order of it is left."""
    total = s.route_total(route)
    return 0.0 if total is None else total.amount


def _change_lines(change: Change) -> tuple[str, ...]:
    active, draft = change.active, change.draft
    return (
        f"Active order: {active.label}: {active.dose.explanation}",
        f"Draft sets {active.label} to '{draft.order.status}'"
        if change.stops
        else f"Draft ({draft.order.status or 'no status'}): {draft.dose.explanation}",
    )


def _taper(change: Change) -> dict[str, Any]:
    """A stop or sharp cut of oral baclofen calls for a taper step on its draft."""
    return {"actions": frozenset({Action.UPDATE_DOSE}), "order": change.draft.order.reference}


def _oral_total_cut(
    s: Situation, k: Knowledge, changes: list[Change], before: float, after: float
) -> list[Hit]:
    """The patient's oral baclofen before and after the session: stopped, or cut by more
    than the sharp-cut limit in one step."""
    sharp = k.thresholds["R7a", "sharp_cut"]
    stops = [c for c in changes if c.stops]
    first = (stops or changes)[0]
    inputs = (
        *(line for c in changes for line in _change_lines(c)),
        *dose_lines(s, Route.ORAL),
        f"Oral baclofen before this session: {num(before)} mg/day; after it: {num(after)} mg/day",
    )
    facts = {
        "medication": "; ".join(dict.fromkeys(c.active.label for c in stops or changes)),
        "before": num(before),
        "taper": num(k.thresholds["R7a", "taper_days"]),
    }
    if after <= 0:
        return [Hit("R7a", facts, variant="stop", inputs=inputs, **_taper(first))]
    cut = (before - after) / before * 100
    if cut <= sharp:
        return []
    facts |= {"daily": num(after), "cut": num(cut), "limit": num(sharp)}
    # A stop with a new, much lower order: the taper step goes on the order the patient goes
    # on with, so the stop still takes effect and one oral order is left, not two.
    taper = _taper(first)
    if stops and s.oral_reviewed:
        taper["order"] = s.oral_reviewed[0].order.reference
    return [Hit("R7a", facts, variant="cut", inputs=inputs, **taper)]


def _oral_change_cut(k: Knowledge, change: Change) -> Hit | None:
    """One change judged alone: a stop, or a draft dose cut sharply from its active order's."""
    active, draft = change.active, change.draft
    facts = {
        "medication": active.label,
        "before": num(active.dose.amount) if active.dose.amount else "current",
        "taper": num(k.thresholds["R7a", "taper_days"]),
    }
    inputs = _change_lines(change)
    if change.stops:
        return Hit("R7a", facts, variant="stop", inputs=inputs, **_taper(change))
    sharp = k.thresholds["R7a", "sharp_cut"]
    if not active.dose.amount or draft.dose.amount is None:
        return None
    cut = (active.dose.amount - draft.dose.amount) / active.dose.amount * 100
    if cut <= sharp:
        return None
    facts |= {"daily": num(draft.dose.amount), "cut": num(cut), "limit": num(sharp)}
    return Hit("R7a", facts, variant="cut", inputs=inputs, **_taper(change))


def duplicates(s: Situation, k: Knowledge) -> list[Hit]:
    del k
    hits = []
    oral = [o for o in s.current if o.oral]
    intrathecal = [o for o in s.current if o.intrathecal]
    reviewed_routes = {o.route for o in s.reviewed}
    if len(oral) > 1 and Route.ORAL in reviewed_routes:
        total = _amount(s.route_total(Route.ORAL))
        hits.append(
            Hit(
                "R7c",
                {
                    "count": str(len(oral)),
                    "orders": "; ".join(
                        f"{o.label} ({'draft' if o.draft else 'active'})" for o in oral
                    ),
                    "daily": num(total) if total is not None else "unknown",
                },
                inputs=dose_lines(s, Route.ORAL),
            )
        )
    if oral and intrathecal and reviewed_routes & {Route.ORAL, Route.INTRATHECAL}:
        hits.append(
            Hit(
                "R7d",
                {"orders": "; ".join(o.label for o in oral + intrathecal)},
                inputs=dose_lines(s, Route.ORAL) + dose_lines(s, Route.INTRATHECAL),
            )
        )
    return hits


# --- R8 label precautions ------------------------------------------------------------------


def conditions(s: Situation, k: Knowledge) -> list[Hit]:
    """R8: one reason per precaution (variant = condition flag), all named in the summary.

    R8c-R8e: precautions with a rule of their own, for baclofen being started or continued
    (not for an order that stops it). Respiratory impairment goes on the CNS-depressant card
    (R6j) when a CNS depressant is there. R8f: an infection at the pump or catheter site, for
    intrathecal baclofen being started or continued.

    R8b: without the problem list none of them can be on record. An oral order's kidney
    cards already list that gap (R4h when none other shows), so R8b is for an intrathecal
    order alone, which no kidney rule covers.
    """
    if s.conditions_unavailable:
        if s.intrathecal_reviewed and not s.oral_reviewed:
            unchecked = (*CAUTION_FLAGS, *(flag for _, flag in PRECAUTION_RULES))
            flags = ", ".join(flag.replace("-", " ") for flag in (PUMP_SITE_INFECTION, *unchecked))
            return [
                Hit(
                    "R8b",
                    {"flags": flags},
                    inputs=("Problem list could not be obtained",),
                    order=s.intrathecal_reviewed[0].order.reference,
                )
            ]
        return []
    present = [(flag, "R8") for flag in CAUTION_FLAGS if s.conditions.get(flag)]
    if s.reviewed:
        said_with_depressants = k.rules["R6j"].enabled and (
            not s.comedication_classes.isdisjoint(DEPRESSANTS) or ALCOHOL in s.conditions
        )
        present += [
            (flag, rule_id)
            for rule_id, flag in PRECAUTION_RULES
            if s.conditions.get(flag) and not (flag == RESPIRATORY and said_with_depressants)
        ]
    if s.intrathecal_reviewed and s.conditions.get(PUMP_SITE_INFECTION):
        present.insert(0, (PUMP_SITE_INFECTION, "R8f"))
    every = ", ".join(flag.replace("-", " ") for flag, _ in present)
    return [
        Hit(
            rule_id,
            {"conditions": ", ".join(s.conditions[flag]), "flags": every},
            variant=flag if rule_id == "R8" else None,
            inputs=tuple(f"On record: {label}" for label in s.conditions[flag]),
            order=s.intrathecal_reviewed[0].order.reference if rule_id == "R8f" else None,
        )
        for flag, rule_id in present
    ]


# --- R9 the patient record ----------------------------------------------------------------


def deceased(s: Situation, k: Knowledge) -> list[Hit]:
    """R9: an order on the record of a patient it marks deceased is most likely on the wrong
    chart, or the record is wrong; either way dose advice for that record is noise around
    the one thing to check, so this card comes alone (``families``)."""
    del k
    if s.deceased is False or s.primary is None:
        return []
    when = f" on {s.deceased.isoformat()}" if isinstance(s.deceased, date) else ""
    return [
        Hit(
            "R9",
            {"when": when},
            inputs=(f"Patient record: deceased{when or ' (no date given)'}",),
            actions=frozenset({Action.DELETE_DRAFT}),
            order=s.primary.order.reference,
        )
    ]


Family = Callable[[Situation, Knowledge], list[Hit]]

FAMILIES: Sequence[Family] = (
    route,
    intrathecal_dose,
    kidney,
    max_daily_dose,
    withdrawal,
    cns_depressants,
    medications_unknown,
    beers_cns_count,
    age,
    duplicates,
    titration,
    other_interactions,
    conditions,
    dose_unknown,
)


def families(s: Situation, k: Knowledge) -> Sequence[Family]:
    """The rule families for this call: R9 alone when the record marks the patient
    deceased and R9 is on; every other family otherwise (with R9 switched off by policy,
    the ordinary checks run as for any record)."""
    if s.deceased is not False and k.rules["R9"].enabled:
        return (deceased,)
    return FAMILIES
