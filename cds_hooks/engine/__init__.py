"""The clinical engine: pure functions from a hook request and patient snapshot to findings.

Every rule family runs on the same ``Situation``; hits of one topic become one finding at
the highest tier listing every reason (knowledge note §9), so the prescriber sees one card
per problem.
"""

from __future__ import annotations

from datetime import date
from operator import itemgetter

from cds_hooks.engine import active_list, plans
from cds_hooks.engine.dose import Route
from cds_hooks.engine.findings import Action, Finding, Subject
from cds_hooks.engine.rules import Hit, families
from cds_hooks.engine.situation import BaclofenOrder, Situation, build
from cds_hooks.knowledge import Knowledge, RuleSpec
from cds_hooks.model import HookRequest, Indicator, PatientSnapshot, Topic


def evaluate(
    request: HookRequest, snapshot: PatientSnapshot, knowledge: Knowledge, today: date
) -> list[Finding]:
    """Findings for the baclofen drafts under review (patient-view: the baclofen on the active
    list), most severe first; [] if none is baclofen."""
    situation = build(request, snapshot, knowledge, today)
    if situation is None:
        return []
    rules = knowledge.rules
    by_topic: dict[Topic, list[_Ranked]] = {}
    chosen = active_list.families if situation.active_list else families
    for family in chosen(situation, knowledge):
        for hit in family(situation, knowledge):
            spec = rules[hit.rule_id]
            if spec.enabled:
                tier = spec.tier if hit.tier is None else _tier(hit, spec)
                ranked = (hit, spec, *_TIER_RANK_VALUE[tier])
                group = by_topic.get(spec.topic)
                if group is None:
                    by_topic[spec.topic] = [ranked]
                else:
                    group.append(ranked)
    unsupported = knowledge.unsupported_sources(situation.age, situation.comedication_classes)
    findings = _merge(by_topic, situation, unsupported)
    _one_plan_per_draft(findings, situation, knowledge)
    return findings


_Ranked = tuple[Hit, RuleSpec, Indicator, int, str]
"""(hit, its rule-table entry, effective tier, the tier's rank, its value), looked up once.

A plain tuple: a dataclass instance per hit costs more than the rest of the ranking."""

_TIER_RANK_VALUE = {tier: (tier, tier.rank, tier.value) for tier in Indicator}
"""Each tier with its rank and value, read once rather than through the enum per hit."""

_WITHOUT_UPDATE = frozenset({Action.UPDATE_DOSE})


def _one_plan_per_draft(findings: list[Finding], situation: Situation, k: Knowledge) -> None:
    """One dose proposed per draft, computed once from every limit (``plans``): on the most
    severe of the findings that call for another dose of it (``findings`` come most severe
    first); the others about that draft name it (fact ``plan``) and offer no update."""
    done: set[str] = set()
    for finding in findings:
        reference = finding.order_reference
        if Action.UPDATE_DOSE not in finding.actions or reference is None:
            continue
        finding.actions = finding.actions - _WITHOUT_UPDATE
        if reference in done:
            continue
        done.add(reference)
        plan = plans.plan_for(situation, k, reference)
        if plan is None or plan.regimen.daily_dose == _drafted(situation, reference):
            continue
        finding.proposal = plan.regimen
        finding.actions = finding.actions | _WITHOUT_UPDATE
        regimen = plan.regimen
        medication = regimen.medication
        named = regimen.text if medication is None else f"{medication[1]}, {regimen.text}"
        for other in findings:
            if other is not finding and other.order_reference == reference:
                other.facts = {**other.facts, "plan": named}


def _drafted(situation: Situation, reference: str) -> float | None:
    """The daily dose the draft gives as written (None for a stop: it gives none)."""
    for order in situation.oral_reviewed:
        if order.order.reference == reference:
            return order.dose.amount
    return None


def _tier(hit: Hit, spec: RuleSpec) -> Indicator:
    if hit.tier is not None and hit.tier.rank > spec.tier.rank:
        return hit.tier
    return spec.tier


def _most_severe_first(ranked: _Ranked) -> int:
    return -ranked[3]


def _reason(hit: Hit, tier_value: str) -> dict[str, object]:
    return {"rule": hit.rule_id, "variant": hit.variant, "tier": tier_value, **hit.facts}


def _merge(
    by_topic: dict[Topic, list[_Ranked]], situation: Situation, unsupported: frozenset[str]
) -> list[Finding]:
    """One finding per topic (topics in order of their first hit), most severe first, citing
    only the sources that support it for this patient (none of ``unsupported``)."""
    fallback_order = situation.primary.order.reference if situation.primary is not None else None
    # patient-view: a suggestion changes the active order itself (there is no draft).
    active = (
        {o.order.reference: o.order for o in situation.reviewed} if situation.active_list else {}
    )
    findings: list[tuple[int, Finding]] = []
    for topic, group in by_topic.items():
        first_hit, first_spec, indicator, rank, tier_value = group[0]
        if len(group) == 1:
            # Most topics have one hit: its own records are the finding's, no merging needed.
            order = first_hit.order
            actions = first_hit.actions
            reasons: tuple[dict[str, object], ...] = (_reason(first_hit, tier_value),)
            inputs = tuple(dict.fromkeys(first_hit.inputs))
            sources = tuple(dict.fromkeys((*first_spec.source_ids, *first_hit.sources)))
        else:
            group.sort(key=_most_severe_first)  # stable: family order within a tier
            first_hit, _, indicator, rank, _ = group[0]
            order, actions, reasons, inputs, sources = _combine(group)
        if unsupported:
            sources = tuple(s for s in sources if s not in unsupported)
        finding = Finding(
            rule_id=first_hit.rule_id,
            topic=topic,
            indicator=indicator,
            facts={"reasons": reasons, "inputs": inputs},
            order_reference=order or fallback_order,
            actions=actions,
            sources=sources,
            active_order=active.get(order or fallback_order or ""),
            subject=_subject(situation, order or fallback_order),
        )
        findings.append((-rank, finding))
    findings.sort(key=itemgetter(0))  # stable: topics in order of their first hit
    return [finding for _, finding in findings]


def _subject(situation: Situation, reference: str | None) -> Subject:
    """What the finding's order is about: its route's baclofen total and the co-medications'
    classes. A finding about no order of its own (missing data) takes the first reviewed."""
    order = _baclofen_order(situation, reference) or situation.primary
    route = order.route if order is not None else Route.UNKNOWN
    total = situation.route_total(route)
    amount = total.amount if total is not None else None
    return Subject(
        drug=f"baclofen:{route.value}",
        daily_dose=amount,
        dose_unit=total.unit if total is not None and amount is not None else None,
        classes=situation.comedication_classes,
    )


def _baclofen_order(situation: Situation, reference: str | None) -> BaclofenOrder | None:
    if reference is None:
        return None
    for candidate in situation.reviewed:
        if candidate.order.reference == reference:
            return candidate
    for change in situation.changes:
        if change.draft.order.reference == reference:
            return change.draft
    return None


def _combine(
    group: list[_Ranked],
) -> tuple[
    str | None,
    frozenset[Action],
    tuple[dict[str, object], ...],
    tuple[str, ...],
    tuple[str, ...],
]:
    """The hits of one topic, most severe first, as one finding's parts: the first order,
    every action, reason, input and source (inputs and sources once each)."""
    order: str | None = None
    actions: set[Action] = set()
    reasons = []
    inputs: dict[str, None] = {}
    sources: dict[str, None] = {}
    for hit, spec, _, _, tier_value in group:
        if not order:
            order = hit.order
        actions.update(hit.actions)
        reasons.append(_reason(hit, tier_value))
        inputs.update(dict.fromkeys(hit.inputs))
        sources.update(dict.fromkeys(spec.source_ids))
        sources.update(dict.fromkeys(hit.sources))
    return order, frozenset(actions), tuple(reasons), tuple(inputs), tuple(sources)
