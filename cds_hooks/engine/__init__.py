"""The clinical engine: pure functions from a hook request and patient snapshot to findings.

Every rule family runs on the same ``Situation``; hits of one topic become one finding at
the highest tier listing every reason (knowledge note §9), so the prescriber sees one card
per problem.
"""

from __future__ import annotations

from datetime import date
from operator import itemgetter

from cds_hooks.engine.findings import Action, Finding, ProposedRegimen, Topic
from cds_hooks.engine.rules import FAMILIES, Hit
from cds_hooks.engine.situation import Situation, build
from cds_hooks.knowledge import Knowledge, RuleSpec
from cds_hooks.model import HookRequest, Indicator, PatientSnapshot


def evaluate(
    request: HookRequest, snapshot: PatientSnapshot, knowledge: Knowledge, today: date
) -> list[Finding]:
    """Findings for the baclofen drafts under review, most severe first; [] if none is baclofen."""
    situation = build(request, snapshot, knowledge, today)
    if situation is None:
        return []
    hits: list[_Ranked] = []
    for family in FAMILIES:
        for hit in family(situation, knowledge):
            spec = knowledge.rule(hit.rule_id)
            if spec.enabled:
                hits.append((hit, spec, *_TIER_RANK_VALUE[_tier(hit, spec)]))
    return _merge(hits, situation)


_Ranked = tuple[Hit, RuleSpec, Indicator, int, str]
"""(hit, its rule-table entry, effective tier, the tier's rank, its value), looked up once.

A plain tuple: a dataclass instance per hit costs more than the rest of the ranking."""

_TIER_RANK_VALUE = {tier: (tier, tier.rank, tier.value) for tier in Indicator}
"""Each tier with its rank and value, read once rather than through the enum per hit."""


def _tier(hit: Hit, spec: RuleSpec) -> Indicator:
    if hit.tier is not None and hit.tier.rank > spec.tier.rank:
        return hit.tier
    return spec.tier


def _most_severe_first(ranked: _Ranked) -> int:
    return -ranked[3]


def _merge(hits: list[_Ranked], situation: Situation) -> list[Finding]:
    by_topic: dict[Topic, list[_Ranked]] = {}
    for ranked in hits:
        by_topic.setdefault(ranked[1].topic, []).append(ranked)
    fallback_order = situation.primary.order.reference if situation.primary is not None else None
    findings: list[tuple[int, Finding]] = []
    for topic, group in by_topic.items():
        if len(group) > 1:
            group.sort(key=_most_severe_first)  # stable: family order within a tier
        proposal: ProposedRegimen | None = None
        order: str | None = None
        actions: set[Action] = set()
        reasons = []
        inputs: dict[str, None] = {}
        sources: dict[str, None] = {}
        for hit, spec, _, _, tier_value in group:
            if proposal is None:
                proposal = hit.proposal
            if not order:
                order = hit.order
            actions.update(hit.actions)
            reasons.append(
                {"rule": hit.rule_id, "variant": hit.variant, "tier": tier_value, **hit.facts}
            )
            inputs.update(dict.fromkeys(hit.inputs))
            sources.update(dict.fromkeys(spec.source_ids))
        if proposal is None:
            actions.discard(Action.UPDATE_DOSE)
        first_hit, _, indicator, rank, _ = group[0]
        finding = Finding(
            rule_id=first_hit.rule_id,
            topic=topic,
            indicator=indicator,
            facts={"reasons": tuple(reasons), "inputs": tuple(inputs)},
            order_reference=order or fallback_order,
            proposal=proposal,
            actions=frozenset(actions),
            sources=tuple(sources),
        )
        findings.append((-rank, finding))
    findings.sort(key=itemgetter(0))  # stable: topics in order of their first hit
    return [finding for _, finding in findings]
