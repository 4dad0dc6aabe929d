"""The clinical engine: pure functions from a hook request and patient snapshot to findings.

Every rule family runs on the same ``Situation``; hits of one topic become one finding at
the highest tier listing every reason (knowledge note §9), so the prescriber sees one card
per problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

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
    hits = []
    for family in FAMILIES:
        for hit in family(situation, knowledge):
            spec = knowledge.rule(hit.rule_id)
            if spec.enabled:
                tier = _tier(hit, spec)
                hits.append(_Ranked(hit, spec, tier, tier.rank))
    return _merge(hits, situation)


@dataclass(frozen=True, slots=True)
class _Ranked:
    """A hit with its rule-table entry and effective tier, looked up once."""

    hit: Hit
    spec: RuleSpec
    tier: Indicator
    rank: int


def _tier(hit: Hit, spec: RuleSpec) -> Indicator:
    if hit.tier is not None and hit.tier.rank > spec.tier.rank:
        return hit.tier
    return spec.tier


def _most_severe_first(ranked: _Ranked) -> int:
    return -ranked.rank


def _merge(hits: list[_Ranked], situation: Situation) -> list[Finding]:
    by_topic: dict[Topic, list[_Ranked]] = {}
    for ranked in hits:
        by_topic.setdefault(ranked.spec.topic, []).append(ranked)
    fallback_order = situation.primary.order.reference if situation.primary is not None else None
    findings = []
    for topic, group in by_topic.items():
        group.sort(key=_most_severe_first)  # stable: family order within a tier
        proposal: ProposedRegimen | None = None
        order: str | None = None
        actions: set[Action] = set()
        reasons = []
        inputs: dict[str, None] = {}
        sources: dict[str, None] = {}
        for ranked in group:
            hit = ranked.hit
            if proposal is None:
                proposal = hit.proposal
            if not order:
                order = hit.order
            actions.update(hit.actions)
            reasons.append(
                {
                    "rule": hit.rule_id,
                    "variant": hit.variant,
                    "tier": ranked.tier.value,
                    **hit.facts,
                }
            )
            inputs.update(dict.fromkeys(hit.inputs))
            sources.update(dict.fromkeys(ranked.spec.source_ids))
        if proposal is None:
            actions.discard(Action.UPDATE_DOSE)
        findings.append(
            Finding(
                rule_id=group[0].hit.rule_id,
                topic=topic,
                indicator=group[0].tier,
                facts={"reasons": tuple(reasons), "inputs": tuple(inputs)},
                order_reference=order or fallback_order,
                proposal=proposal,
                actions=frozenset(actions),
                sources=tuple(sources),
            )
        )
    findings.sort(key=lambda f: -f.indicator.rank)
    return findings
