"""The facts every rule reads, worked out once per call from the request and the snapshot.

"What the patient would be on" after signing: the baclofen drafts under review, the other
drafts of the session, and the active orders that no draft stops or replaces. A draft that
stops an order (status stopped/cancelled/...) or replaces it (``priorPrescription``, or the
same id) takes that active order out of the total.

Every other drug drafted in the session, under review or not, is a co-medication of every
baclofen draft: an opioid written in the same order set as baclofen (often with gabapentin)
is given with it, and in order-sign every draft is under review.

An EHR often sends a stop or a dose change as the active order itself: the same id with a
stopping status or a new dosage. The prefetched version of that order is then what the
patient is on before the session (``previous``) and the drafted version the change, so a
stop, a cut or an increase is judged against it; only a pooled copy of the draft itself
(status ``draft``) is left out.

``patient-view`` (``HookRequest.active_list``) has no drafts: the active baclofen orders are
what is judged (``reviewed``), and only orders with status ``active`` count, since a
suspended or unsigned order is not being taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from cds_hooks.engine import renal
from cds_hooks.engine.dose import DailyDose, Route, daily_dose, route_of, total_daily_dose
from cds_hooks.knowledge import Knowledge, observation_codes
from cds_hooks.knowledge.drugs import BaclofenProduct
from cds_hooks.model import DataKind, HookRequest, MedicationOrder, PatientSnapshot

STOPPING_STATUSES = frozenset({"stopped", "cancelled", "entered-in-error", "on-hold", "completed"})
CURRENT_STATUSES = frozenset({"active", "on-hold", "draft"})
ACTIVE_LIST_STATUSES = frozenset({"active"})
INACTIVE_CONDITION_STATUSES = frozenset({"inactive", "resolved", "remission"})
REFUTED = frozenset({"refuted", "entered-in-error"})
SYSTEMIC_ROUTES = frozenset({Route.ORAL, Route.INTRATHECAL})
KIDNEY_DISEASE_FLAGS = frozenset({"ckd", "ckd-4", "ckd-5", "esrd", "dialysis"})


# Records built on every call are slotted but not frozen: a frozen dataclass pays an
# object.__setattr__ call per field when built. Nothing mutates them after construction
# but the rules' per-call memo ``Situation.dose_lines``.
@dataclass(slots=True)
class BaclofenOrder:
    order: MedicationOrder
    product: BaclofenProduct | None
    route: Route
    dose: DailyDose
    draft: bool
    under_review: bool

    @property
    def label(self) -> str:
        return self.order.medication_label or (self.product.name if self.product else "baclofen")

    @property
    def intrathecal(self) -> bool:
        return self.route is Route.INTRATHECAL

    @property
    def oral(self) -> bool:
        return self.route is Route.ORAL

    @property
    def written(self) -> date | None:
        """The day the order was written (``authoredOn``); None when it is not given to the
        day (a year or month alone says nothing about a titration interval)."""
        return written_day(self.order.authored_on)


def written_day(authored_on: str | None) -> date | None:
    """The day of an ``authoredOn``; None when it is not given to the day."""
    try:
        return (
            date.fromisoformat(authored_on[:10]) if authored_on and len(authored_on) >= 10 else None
        )
    except ValueError:
        return None


@dataclass(slots=True)
class CoMedication:
    label: str
    classes: frozenset[str]
    draft: bool
    written: date | None = None
    """The day an active order was written (patient-view asks whether a combination is new)."""


@dataclass(slots=True)
class Change:
    """A draft under review that stops or replaces an active baclofen order."""

    draft: BaclofenOrder
    active: BaclofenOrder
    stops: bool


@dataclass(slots=True)
class Situation:
    today: date
    age: int | None
    reviewed: tuple[BaclofenOrder, ...]
    """Baclofen drafts under review that start or continue therapy."""
    oral_reviewed: tuple[BaclofenOrder, ...]
    intrathecal_reviewed: tuple[BaclofenOrder, ...]
    """``reviewed`` of one route: most rule families start from one of them."""
    changes: tuple[Change, ...]
    current: tuple[BaclofenOrder, ...]
    """Every baclofen order the patient would be on after signing."""
    previous: tuple[BaclofenOrder, ...]
    """Active baclofen orders before this session."""
    comedications: tuple[CoMedication, ...]
    comedication_classes: frozenset[str]
    """Every class of ``comedications`` (the interaction rules start from it)."""
    conditions: dict[str, tuple[str, ...]]
    """Condition flag → labels of the conditions that raised it."""
    renal: renal.RenalStatus
    medications_unavailable: bool
    unidentified_medications: int
    """Current orders whose drug could not be identified (the list is known, not all of it)."""
    conditions_unavailable: bool
    totals: Mapping[Route, DailyDose]
    """Daily total of ``current`` per route present (several rules read the same total)."""
    previous_totals: Mapping[Route, DailyDose]
    deceased: date | bool = False
    """The record marks the patient deceased: on this day, or True when no day is given."""
    dose_lines: dict[Route, tuple[str, ...]] = field(default_factory=dict)
    """``rules.dose_lines`` per route, kept for this call: most rule families quote them."""
    active_list: bool = False
    """patient-view: ``reviewed`` are the active orders, and no draft is in the session."""

    def route_total(self, route: Route) -> DailyDose | None:
        return self.totals.get(route)

    def previous_total(self, route: Route) -> DailyDose | None:
        return self.previous_totals.get(route)

    @property
    def primary(self) -> BaclofenOrder | None:
        """The order a card's suggestions act on: the first reviewed draft."""
        return self.reviewed[0] if self.reviewed else None


_NO_CLASSES: frozenset[str] = frozenset()


def _drug(
    order: MedicationOrder, knowledge: Knowledge
) -> tuple[BaclofenProduct | None, frozenset[str]]:
    """The order's baclofen product (None if not baclofen) and its medication's drug classes
    (none without a medication concept: a bare product is only checked for baclofen)."""
    if order.medication is not None:
        return knowledge.drug(order.medication, order.product)
    if order.product is not None:
        return knowledge.drug(order.product.code, order.product)[0], _NO_CLASSES
    return None, _NO_CLASSES


def _baclofen(
    order: MedicationOrder, product: BaclofenProduct, draft: bool, under_review: bool
) -> BaclofenOrder:
    return BaclofenOrder(
        order=order,
        product=product,
        route=route_of(order, product),
        dose=daily_dose(order, product),
        draft=draft,
        under_review=under_review,
    )


def _id(reference: str | None) -> str | None:
    return reference.rsplit("/", 1)[-1] if reference else None


def _targets(draft: BaclofenOrder, active: Iterable[BaclofenOrder]) -> list[BaclofenOrder]:
    """Active orders a draft stops or replaces: by id, by priorPrescription, else by route."""
    active = list(active)
    ids = {_id(draft.order.reference), _id(draft.order.prior_prescription)} - {None}
    linked = [a for a in active if _id(a.order.reference) in ids]
    if linked:
        return linked
    if (draft.order.status or "") in STOPPING_STATUSES:
        same_route = [a for a in active if a.route is draft.route]
        return same_route if len(same_route) == 1 else []
    return []


def _totals(orders: Iterable[BaclofenOrder]) -> dict[Route, DailyDose]:
    by_route: dict[Route, list[DailyDose]] = {}
    for order in orders:
        by_route.setdefault(order.route, []).append(order.dose)
    return {route: total_daily_dose(doses) for route, doses in by_route.items()}


def _conditions(snapshot: PatientSnapshot, knowledge: Knowledge) -> dict[str, tuple[str, ...]]:
    flags: dict[str, list[str]] = {}
    for condition in snapshot.conditions:
        if (condition.clinical_status or "active") in INACTIVE_CONDITION_STATUSES:
            continue
        if (condition.verification_status or "") in REFUTED:
            continue
        for flag in knowledge.condition_flags(condition.code):
            label = condition.code.label or "condition on record"
            if label not in flags.setdefault(flag, []):
                flags[flag].append(label)
    return {flag: tuple(labels) for flag, labels in flags.items()}


def _lookback_days(
    knowledge: Knowledge, age: int | None, conditions: dict[str, tuple[str, ...]]
) -> int:
    """The shorter look-back from the high-risk age, with known CKD, or when age is unknown."""
    high_risk_age = knowledge.thresholds["R4f", "high_risk_age"]
    ckd = not KIDNEY_DISEASE_FLAGS.isdisjoint(conditions)
    if ckd or age is None or age >= high_risk_age:
        return int(knowledge.thresholds["R4f", "lookback_high_risk"])
    return int(knowledge.thresholds["R4f", "lookback"])


def build(
    request: HookRequest, snapshot: PatientSnapshot, knowledge: Knowledge, today: date
) -> Situation | None:
    """None when no draft under review is baclofen: the service has nothing to say."""
    selected = set(request.selected)  # a draft is under review when selected
    drafts: list[BaclofenOrder] = []
    other_drafts: list[CoMedication] = []
    for order in request.draft_orders:
        product, classes = _drug(order, knowledge)
        under_review = order.reference in selected
        if product is not None:
            drafts.append(_baclofen(order, product, draft=True, under_review=under_review))
        elif classes and (order.status or "") not in STOPPING_STATUSES:
            other_drafts.append(
                CoMedication(order.medication_label or "unnamed drug", classes, draft=True)
            )
    active_list = request.active_list
    if not active_list and not any(d.under_review for d in drafts):
        return None
    statuses = ACTIVE_LIST_STATUSES if active_list else CURRENT_STATUSES
    draft_refs = {o.reference for o in request.draft_orders}
    # Active orders a draft stops or renews: the draft stands for them (a renewed opioid is
    # one opioid, a stopped one none).
    superseded = {_id(o.prior_prescription) for o in request.draft_orders} - {None}
    previous: list[BaclofenOrder] = []
    comedications: list[CoMedication] = []
    for order in snapshot.medications:
        order_status = order.status or "active"
        drafted = order.reference in draft_refs
        if order_status not in statuses or (drafted and order_status == "draft"):
            continue
        product, classes = _drug(order, knowledge)
        if product is not None:
            previous.append(_baclofen(order, product, draft=False, under_review=active_list))
        elif classes and not drafted and _id(order.reference) not in superseded:
            comedications.append(
                CoMedication(
                    order.medication_label or "unnamed drug",
                    classes,
                    draft=False,
                    written=written_day(order.authored_on),
                )
            )
    if active_list and not previous:
        return None
    comedications += other_drafts  # the session's other drafts after the active orders

    changes: list[Change] = []
    replaced: set[str] = set()
    starting: list[BaclofenOrder] = []
    for draft in drafts:
        stops = (draft.order.status or "") in STOPPING_STATUSES
        for target in _targets(draft, previous):
            replaced.add(target.order.reference)
            if draft.under_review:
                changes.append(Change(draft=draft, active=target, stops=stops))
        if not stops:
            starting.append(draft)
    current = tuple(starting) + tuple(p for p in previous if p.order.reference not in replaced)

    age = renal.age_on(snapshot.patient.birth_date, today)
    conditions = _conditions(snapshot, knowledge)
    status = renal.assess(
        snapshot.observations,
        snapshot.patient,
        observation_codes(),
        today,
        _lookback_days(knowledge, age, conditions),
        labs_unavailable=DataKind.RENAL_LABS in snapshot.unavailable,
    )
    reviewed = tuple(d for d in current if d.under_review)
    return Situation(
        today=today,
        age=age,
        reviewed=reviewed,
        oral_reviewed=tuple(d for d in reviewed if d.route is Route.ORAL),
        intrathecal_reviewed=tuple(d for d in reviewed if d.route is Route.INTRATHECAL),
        changes=tuple(changes),
        current=current,
        previous=tuple(previous),
        comedications=tuple(comedications),
        comedication_classes=frozenset().union(*[m.classes for m in comedications]),
        conditions=conditions,
        renal=status,
        medications_unavailable=DataKind.MEDICATIONS in snapshot.unavailable,
        unidentified_medications=snapshot.unidentified_medications,
        conditions_unavailable=DataKind.CONDITIONS in snapshot.unavailable,
        totals=_totals(current),
        previous_totals=_totals(previous),
        deceased=snapshot.patient.deceased,
        active_list=active_list,
    )
