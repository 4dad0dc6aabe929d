"""The regimen planner: for one baclofen draft, the one dose a pharmacist would propose.

Pure: plain data in (``PlanInput``: the kind of order, every daily limit that applies, this
patient's start dose, the titration and taper steps, the product), plain data out (``Plan``).
Every number comes from the knowledge through the caller; none is written here.

What is proposed depends on the kind of order (rule table, R3d, R4c/R4d/R4i, R5c and R7a):

- a **new start** gets this patient's start dose (the lowest start that applies: label, kidney
  band, older adult), titrated later; never a ceiling;
- a **continuation** gets the highest dose at or under every limit, an increase at most one
  titration step (none before the step interval has passed); where a limit calls for a cut
  sharper than the sharp-cut limit, the largest step that limit allows, the limit next;
- a **cut or a stop** gets the first taper step, with the rest of the schedule in words.

A regimen is one a prescriber can give (Falconnier 2001, peers note §5: a specific dose beside
the alert is what gets adjustments done): the same product where it can give the dose (else
another strength that exists), whole tablets or half of a scored one, liquids in volumes a
syringe measures, divided doses unless the amount needs once daily.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from cds_hooks.engine.findings import ProposedRegimen
from cds_hooks.knowledge.regimens import RegimenRules

SOLID_FORMS = frozenset({"tablet", "odt", "granules"})
LIQUID_FORMS = frozenset({"solution", "suspension"})
FREQUENCY_WORDS = {1: "once a day", 2: "twice a day", 3: "three times a day", 4: "four times a day"}
UNIT_WORDS = {"tablet": "tablet", "odt": "orally disintegrating tablet", "granules": "packet"}
DRAFT_STATUS = "draft"
"""The status an update of a stop order takes: a draft order again, at the taper step (an
order the EHR sent back stopped under its own id takes its active status again instead)."""
_EPSILON = 1e-9


class OrderKind(StrEnum):
    NEW_START = "new-start"
    CONTINUATION = "continuation"
    CUT = "cut"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Product:
    """The product ordered and how the prescriber wrote its dose."""

    form: str
    """tablet, odt, granules, solution, suspension or unknown."""
    strength: float | None
    """mg per unit for solids, mg per mL for liquids; None when not known."""
    written: str
    """How the dose was written: "mass" (mg), "volume" (mL) or "count" (tablets)."""
    written_unit: str | None = None
    written_code: str | None = None
    frequency: int | None = None
    """Doses a day as ordered (1-4), kept where it gives the same daily dose."""


@dataclass(frozen=True, slots=True)
class Limit:
    """A daily amount (mg/day, the route's total) and the rule or reason that sets it."""

    source: str
    daily: float


@dataclass(frozen=True, slots=True)
class PlanInput:
    kind: OrderKind
    product: Product
    drafted: float
    """The route's daily total after signing as drafted (0 after a stop)."""
    others: float
    """Of ``drafted``, what other orders of the route keep giving (the draft cannot change it)."""
    before: float | None
    """The route's daily total before the session; None for a new start."""
    ceilings: tuple[Limit, ...]
    """Every daily maximum that applies (kidney, label, child)."""
    start: Limit | None
    """This patient's start dose; None where no start dose can be proposed (a child)."""
    step_increase: float
    step_allowed: bool
    """Whether the titration interval has passed since the last change (or is unknown)."""
    sharp_cut: float
    """Largest cut in one step, % of the daily dose before it."""
    taper_step: float
    """A taper step, % of the daily dose the taper starts from."""
    taper_days: float
    max_single: float | None
    alternatives: tuple[tuple[str, str, Product], ...] = ()
    """Other strengths of the same kind of product that exist, (RxNorm code, name, product),
    smallest first: offered only where the product ordered cannot give the dose."""
    stop_status: str = DRAFT_STATUS
    """The status a stop's update takes: the order goes on at the taper step."""


@dataclass(frozen=True, slots=True)
class Plan:
    kind: OrderKind
    regimen: ProposedRegimen
    total: float
    """The route's daily total with the proposal."""
    basis: str
    """What set the proposal: a limit's source, "start", "titration-step", "taper-step" or
    "sharp-cut" (the largest step a limit needing a sharper cut allows)."""


@dataclass(frozen=True, slots=True)
class _Candidate:
    daily: float
    frequency: int
    per_dose_mg: float
    units: float
    """Tablets (count), mL (liquids) or mg (unknown strength) per dose."""
    whole: bool


def plan(given: PlanInput, rules: RegimenRules) -> Plan | None:
    """The proposal for one draft, or None when no regimen fits (or none may be proposed: an
    intrathecal order, a child's new start, nothing left to give).

    The same product where possible: another strength (``alternatives``) only where the one
    ordered gives no regimen at all, or only once daily what another gives more of or in
    divided doses (half a 20 mg tablet once a day where the start is 5 mg twice a day: the
    half-life of 3-4 hours asks for divided doses)."""
    own = _plan(given, rules)
    if own is not None and own.regimen.frequency != 1:
        return own
    best: tuple[tuple[float, bool, int], Plan, str, str] | None = None
    for index, (code, name, product) in enumerate(given.alternatives):
        other = _plan(replace(given, product=product, alternatives=()), rules)
        if other is None:
            continue
        divided = other.regimen.frequency != 1
        if own is not None:
            if other.total < own.total - _EPSILON:
                continue
            # An equal amount is worth another strength only for divided doses of a tablet:
            # a liquid keeps its concentration, since a switch of concentration is how
            # ten-fold and two-fold liquid errors happen.
            equal = other.total <= own.total + _EPSILON
            if equal and (not divided or given.product.form in LIQUID_FORMS):
                continue
        key = (other.total, divided, -index)
        if best is None or key > best[0]:
            best = (key, other, code, name)
    if best is None:
        return own
    _, chosen, code, name = best
    return replace(chosen, regimen=replace(chosen.regimen, medication=(code, name)))


def _plan(given: PlanInput, rules: RegimenRules) -> Plan | None:
    """``plan`` for the product ordered alone."""
    ceiling = min((limit.daily for limit in given.ceilings), default=math.inf)
    strictest = min(given.ceilings, key=lambda limit: limit.daily, default=None)
    others = given.others
    before = given.before
    if given.kind is OrderKind.NEW_START:
        if given.start is None:
            return None
        top = min(given.start.daily, ceiling, given.drafted)
        basis = given.start.source if given.start.daily <= ceiling else _source(strictest)
        return _fit_below(given, rules, top - others, basis)
    if before is None or before <= 0:
        return None
    floor = before * (1 - given.sharp_cut / 100)
    if given.kind is OrderKind.CONTINUATION:
        allowed, basis = given.drafted, _source(strictest)
        if given.drafted > before:
            step = before + given.step_increase if given.step_allowed else before
            if step < allowed:
                allowed, basis = step, "titration-step"
        top = min(allowed, ceiling)
        if top == ceiling and ceiling < allowed:
            basis = _source(strictest)
        if top >= floor - _EPSILON:
            below = _fit_below(given, rules, top - others, basis)
            if below is not None and below.total >= floor - _EPSILON:
                return below
        # A limit calls for a sharper cut than one step may take (or the product's doses
        # under it would): the sharp-cut step now, the limit one taper interval later.
        return _fit_step(given, rules, max(top, floor), floor, given.drafted, top, "sharp-cut")
    # A cut or a stop: the first taper step, never sharper than the sharp-cut limit, and
    # under every ceiling unless that would itself be a sharp cut.
    first = before * (1 - given.taper_step / 100)
    target = max(given.drafted, first)
    if target > ceiling:
        target = max(ceiling, floor)
    return _fit_step(given, rules, target, floor, before, given.drafted, "taper-step")


def _source(limit: Limit | None) -> str:
    return limit.source if limit is not None else "drafted"


def _fit_below(given: PlanInput, rules: RegimenRules, top: float, basis: str) -> Plan | None:
    """The largest regimen at or under ``top`` mg/day for the draft."""
    if top <= _EPSILON:
        return None
    options = _candidates(given.product, rules, given.max_single, top)
    chosen = _largest(options, top, given.product.frequency)
    if chosen is None:
        return None
    return Plan(given.kind, _regimen(given, chosen, None), given.others + chosen.daily, basis)


def _fit_step(
    given: PlanInput,
    rules: RegimenRules,
    target: float,
    floor: float,
    cap: float,
    goal: float,
    basis: str,
) -> Plan | None:
    """A step down to about ``target`` (route totals throughout): the largest regimen at or
    under it that is no sharper a cut than ``floor`` allows, else the smallest one at or over
    ``floor`` that still lowers the dose, never above ``cap``; None when no regimen of the
    product lies between. The schedule then steps on to ``goal`` in words."""
    others = given.others
    before = given.before or 0.0
    options = _candidates(given.product, rules, given.max_single, min(cap, before) - others)
    below = [c for c in options if others + c.daily >= floor - _EPSILON]
    current = given.product.frequency
    chosen = _largest(below, target - others, current)
    if chosen is None:
        above = [c for c in below if others + c.daily < before - _EPSILON]
        lowest = min((c.daily for c in above), default=None)
        chosen = None if lowest is None else _largest(above, lowest, current)
    if chosen is None:
        return None
    total = others + chosen.daily
    schedule = _schedule(given, total, goal)
    regimen = _regimen(given, chosen, schedule)
    return Plan(given.kind, regimen, total, basis)


def _schedule(given: PlanInput, start: float, goal: float) -> str | None:
    """The taper after its first step, in words: equal steps of ``taper_step`` % of the dose
    the taper started from, one every ``taper_days`` days, down to ``goal`` (0: stop)."""
    before = given.before or 0.0
    step = before * given.taper_step / 100
    if step <= 0 or start <= goal + _EPSILON:
        return None
    if given.kind is OrderKind.CONTINUATION:
        # One more step: to the limit the sharp-cut step was heading for.
        steps = [goal]
    else:
        # The taper's equal steps from the dose it started from, after the first step as
        # given (which a product's doses may have rounded down), down to the goal.
        levels = (before - step * i for i in range(2, math.ceil(before / step) + 1))
        steps = [_round_down(x) for x in levels if goal + _EPSILON < x < start - _EPSILON]
        steps.append(goal)
    days = given.taper_days
    words = []
    for index, daily in enumerate(steps, start=1):
        day = _fmt(1 + index * days)
        words.append(
            f"stop on day {day}" if daily <= _EPSILON else f"{_fmt(daily)} mg/day from day {day}"
        )
    return "Then " + ", ".join(words) + "."


def _round_down(value: float) -> float:
    """A schedule's later steps, in words only: to the half mg, never up."""
    return math.floor(value * 2 + _EPSILON) / 2


def _candidates(
    product: Product, rules: RegimenRules, max_single: float | None, top_daily: float
) -> list[_Candidate]:
    """Every regimen of ``product`` up to ``top_daily`` mg/day: doses a prescriber can give
    (whole tablets, halves of scored ones, syringe volumes), at most ``max_single`` each."""
    strength = product.strength
    form = product.form
    if strength and form in SOLID_FORMS:
        scored = form == "tablet" and strength in rules.scored_strengths_mg
        unit_step = 0.5 if scored else 1.0
        mg_step = strength * unit_step
        per_unit = strength
    elif strength and form in LIQUID_FORMS:
        unit_step = rules.liquid_step_ml
        mg_step = strength * unit_step
        per_unit = strength
    elif product.written == "mass":
        unit_step = mg_step = rules.unknown_strength_step_mg
        per_unit = 1.0
    else:
        return []
    found = []
    for frequency in rules.frequencies:
        most = top_daily / frequency
        if max_single is not None:
            most = min(most, max_single)
        for count in range(1, int(most / mg_step + _EPSILON) + 1):
            per_dose = count * mg_step
            units = count * unit_step if per_unit != 1.0 else per_dose
            found.append(
                _Candidate(
                    daily=per_dose * frequency,
                    frequency=frequency,
                    per_dose_mg=per_dose,
                    units=units,
                    whole=float(count * unit_step).is_integer(),
                )
            )
    return found


def _largest(options: Iterable[_Candidate], top: float, current: int | None) -> _Candidate | None:
    """The largest daily dose at or under ``top``; among equal ones, divided doses before
    once daily, the frequency ordered, whole tablets before halves, then the planner's
    order of frequencies (``options`` come in it)."""
    best: _Candidate | None = None
    best_key: tuple[float, bool, bool, bool] | None = None
    for option in options:
        if option.daily > top + _EPSILON:
            continue
        key = (option.daily, option.frequency != 1, option.frequency == current, option.whole)
        if best_key is None or key > best_key:
            best, best_key = option, key
    return best


def _regimen(given: PlanInput, chosen: _Candidate, schedule: str | None) -> ProposedRegimen:
    product = given.product
    mg = chosen.per_dose_mg
    if product.form in LIQUID_FORMS and product.strength:
        ml = chosen.units
        if product.written == "mass":
            value, unit, code, shown = mg, "mg", "mg", f"{_fmt(mg)} mg ({_fmt(ml)} mL)"
        else:
            value, unit, code, shown = ml, "mL", "mL", f"{_fmt(ml)} mL ({_fmt(mg)} mg)"
    elif product.form in SOLID_FORMS and product.strength and product.written != "mass":
        count = chosen.units
        noun = UNIT_WORDS.get(product.form, "tablet") + ("s" if count > 1 else "")
        value, unit = count, product.written_unit or noun
        code = product.written_code or "{tbl}"
        shown = f"{_count(count)} {noun} ({_fmt(mg)} mg)"
    else:
        value, unit, code, shown = mg, "mg", "mg", f"{_fmt(mg)} mg"
    daily = chosen.daily
    return ProposedRegimen(
        dose_value=value,
        dose_unit=unit,
        dose_code=code,
        frequency=chosen.frequency,
        period=1,
        period_unit="d",
        daily_dose=daily,
        daily_unit="mg",
        text=f"{shown} {FREQUENCY_WORDS[chosen.frequency]} = {_fmt(daily)} mg/day",
        schedule=schedule,
        status=given.stop_status if given.kind is OrderKind.STOP else None,
    )


def _count(units: float) -> str:
    """Tablets as a prescriber writes them: ½, 1, 1½, 2."""
    whole = int(units)
    half = units - whole >= 0.5 - _EPSILON
    if not half:
        return str(whole)
    return "½" if whole == 0 else f"{whole}½"


def _fmt(value: float) -> str:
    return f"{round(value, 2):g}"
