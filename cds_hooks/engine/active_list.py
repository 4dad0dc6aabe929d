"""The rule families for baclofen already being taken (``patient-view``, rules R10a-R10d).

At ordering the prescriber is looking at the order; afterwards nobody is, and the harm the
literature describes most often comes then: toxicity on a stable long-term dose within days
of kidney function falling (El-Husseini 2011, Wolf 2018). So when the chart of a patient on
baclofen is opened these say, from the same knowledge as the order checks:

- R10a: the oral daily dose is above the ceiling for the current kidney function (the bands
  of R4a-R4d, at the tier the matching ordering rule has), with the adjusted dose;
- R10b: kidney function is unstable (creatinine rising by the KDIGO criteria);
- R10c: oral baclofen taken longer than a stated period with no kidney result in the
  look-back;
- R10d: an opioid with another respiratory depressant on the list: a reminder (info) when
  the baclofen order came after the combination, so the ordering check could have said it,
  and a warning when the combination is new since the last baclofen order.

Intrathecal baclofen gets nothing about kidneys (R4g: little systemic exposure), as at
ordering. A record marked deceased gets nothing: reviewing the chart of a patient who has
died is routine, and the order rules' R9 card is about ordering on the wrong chart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from cds_hooks.engine.dose import Route
from cds_hooks.engine.findings import Action
from cds_hooks.engine.rules import (
    KIDNEY_FAILURE_FLAGS,
    OPIOIDS,
    RESPIRATORY_PARTNERS,
    Family,
    Hit,
    _amount,
    _named,
    _set_aside_line,
    _unstable,
    _used,
    _worst_band,
    age_line,
    dose_lines,
    num,
    renal_line,
    short,
)
from cds_hooks.engine.situation import BaclofenOrder, CoMedication, Situation
from cds_hooks.knowledge import Knowledge
from cds_hooks.model import Indicator

_OVER_CEILING_SUFFIX = "-over-ceiling"


def kidney_on_list(s: Situation, k: Knowledge) -> list[Hit]:
    """R10a-R10c for the oral baclofen on the active list (the first order carries the
    proposal, fitted under the ceiling together with the others)."""
    oral = s.oral_reviewed
    if not oral:
        return []
    order = oral[0]
    reference = order.order.reference
    total = _amount(s.route_total(Route.ORAL))
    renal_lines = tuple(renal_line(v) for v in (*s.renal.values, *s.renal.without_age)) + tuple(
        _set_aside_line(aside) for aside in s.renal.set_aside
    )
    inputs = dose_lines(s, Route.ORAL) + renal_lines + age_line(s)
    hits: list[Hit] = []
    over = _over_ceiling(s, k, order, total, inputs)
    if over is not None:
        hits.append(over)
    rise = s.renal.rise
    if rise is not None:
        # R4j's reading of the rise; the dose against the ceiling is R10a's to say.
        unstable = _unstable(s, k, order, total, rise, inputs)
        hits.append(
            Hit(
                "R10b",
                unstable.facts,
                variant=(unstable.variant or "").removesuffix(_OVER_CEILING_SUFFIX) or None,
                inputs=inputs,
                actions=frozenset({Action.ORDER_CREATININE}),
                order=reference,
            )
        )
    if not s.renal.values and not s.renal.without_age:
        unchecked = _unchecked(s, k, oral, total)
        if unchecked is not None:
            hits.append(unchecked)
    return hits


def _over_ceiling(
    s: Situation,
    k: Knowledge,
    order: BaclofenOrder,
    total: float | None,
    inputs: tuple[str, ...],
) -> Hit | None:
    """R10a at the tier of the ordering rule whose band applies: dialysis or kidney failure
    on record (R4a), else the most restrictive band of the current results. Results worked
    out without a birth date are upper bounds on kidney function, so a band they fall under
    certainly applies."""
    if total is None:
        return None
    on_record = [label for flag in KIDNEY_FAILURE_FLAGS for label in s.conditions.get(flag, ())]
    values = (*s.renal.values, *s.renal.without_age)
    facts: dict[str, str]
    if on_record and k.rules["R4a"].enabled:
        band_rule, ceiling = "R4a", k.thresholds["R4a", "dialysis_ceiling"]
        facts = {"conditions": ", ".join(dict.fromkeys(on_record))}
        variant: str | None = "conditions"
        used: tuple[str, ...] = tuple(f"On record: {c}" for c in dict.fromkeys(on_record))
    else:
        band = _worst_band(values, k)
        if band is None:
            return None
        band_rule, ceiling = band.rule_id, band.ceiling
        facts = {"renal": short(band.value)}
        variant = None
        used = _used(band, tuple(values))
    if total <= ceiling:
        return None
    # The dose itself is the planner's (engine.plans), worked out once for the order.
    return Hit(
        "R10a",
        facts | {"daily": num(total), "ceiling": num(ceiling)},
        variant=variant,
        inputs=inputs + used,
        actions=frozenset({Action.UPDATE_DOSE}),
        order=order.order.reference,
        tier=k.rules[band_rule].tier,
    )


def _unchecked(
    s: Situation, k: Knowledge, oral: Sequence[BaclofenOrder], total: float | None
) -> Hit | None:
    """R10c: on oral baclofen at least ``min_days_on`` days (from the earliest day an active
    oral order was written) with no kidney result in the look-back. An order without that
    day may be years old, so an unknown start counts as long enough.

    As R4f: kidney function rarely recovers, so a dose above the ceiling for the last known
    (stale) result is said, as a warning, with the adjusted dose."""
    days = _days_on(oral, s.today)
    minimum = k.thresholds["R10c", "min_days_on"]
    if days is not None and days < minimum:
        return None
    over_ceiling = False
    facts = {
        "lookback": str(s.renal.lookback_days),
        "days_on": str(days) if days is not None else "an unknown number of",
        "minimum": num(minimum),
    }
    if s.renal.labs_unavailable:
        variant = "unavailable"
    elif s.renal.stale:
        variant = "stale"
        facts["renal"] = short(s.renal.stale[0])
        band = _worst_band(s.renal.stale, k)
        if band is not None and total is not None and total > band.ceiling:
            variant = "stale-over-ceiling"
            facts |= {"renal": short(band.value), "daily": num(total), "ceiling": num(band.ceiling)}
            over_ceiling = True
    else:
        variant = "none"
    started = [d for o in oral if (d := o.written) is not None]
    inputs = (
        *dose_lines(s, Route.ORAL),
        (
            f"Earliest active oral baclofen order written: {min(started).isoformat()}"
            if started
            else "No active oral baclofen order gives the day it was written"
        ),
        *(f"Older result not used: {renal_line(v)}" for v in s.renal.stale),
        f"Look-back: {s.renal.lookback_days} days",
        *age_line(s),
    )
    return Hit(
        "R10c",
        facts,
        variant=variant,
        inputs=inputs,
        actions=frozenset(
            {Action.ORDER_CREATININE} | ({Action.UPDATE_DOSE} if over_ceiling else set())
        ),
        order=oral[0].order.reference,
        tier=Indicator.WARNING if variant == "stale-over-ceiling" else None,
    )


def _days_on(orders: Iterable[BaclofenOrder], today: date) -> int | None:
    """Days since the earliest of ``orders`` was written; None when any does not say."""
    days = [o.written for o in orders]
    if not days or any(d is None for d in days):
        return None
    return (today - min(d for d in days if d is not None)).days


def opioid_combination_on_list(s: Situation, k: Knowledge) -> list[Hit]:
    """R10d: an opioid with a benzodiazepine, Z-drug, barbiturate, gabapentinoid or oxybate
    beside baclofen (any route). Info when the combination may already have been there when
    baclofen was last ordered (the ordering check could have said it); a warning when it is
    new since then: every opioid, or every partner, written after the newest baclofen order.
    Unknown days never prove a combination new."""
    classes = s.comedication_classes
    partners = classes & RESPIRATORY_PARTNERS
    if "opioid" not in classes or not partners:
        return []
    opioids = [m for m in s.comedications if not m.classes.isdisjoint(OPIOIDS)]
    others = [m for m in s.comedications if not m.classes.isdisjoint(partners)]
    written = [o.written for o in s.reviewed]
    last = max(d for d in written if d is not None) if all(written) and written else None
    new = last is not None and (_all_after(opioids, last) or _all_after(others, last))
    drugs = _named(k, s.comedications, OPIOIDS | partners)
    facts = {"drugs": "; ".join(drugs), "partners": k.class_labels(partners)}
    if last is not None:
        facts["last_order"] = last.isoformat()
    inputs = (
        *(f"Active order: {d}" for d in drugs),
        *(
            f"Baclofen ({o.label}): written {o.order.authored_on or 'on an unknown day'}"
            for o in s.reviewed
        ),
    )
    return [
        Hit(
            "R10d",
            facts,
            variant="new" if new else None,
            inputs=inputs,
            order=s.reviewed[0].order.reference,
            tier=Indicator.WARNING if new else None,
        )
    ]


def _all_after(medications: Iterable[CoMedication], day: date) -> bool:
    listed = list(medications)
    return bool(listed) and all(m.written is not None and m.written > day for m in listed)


ACTIVE_LIST_FAMILIES: Sequence[Family] = (kidney_on_list, opioid_combination_on_list)


def families(s: Situation, k: Knowledge) -> Sequence[Family]:
    """The families for the active list: none for a record marked deceased (module docstring)."""
    del k
    return () if s.deceased is not False else ACTIVE_LIST_FAMILIES
