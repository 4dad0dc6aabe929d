"""The clinical engine: pure functions from a hook request and patient snapshot to findings.

Every rule family runs on the same ``Situation``; hits of one topic become one finding at
the highest tier listing every reason (knowledge note §9), so the prescriber sees one card
per problem.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from cds_hooks.engine.findings import Action, Finding, Topic
from cds_hooks.engine.rules import FAMILIES, Hit
from cds_hooks.engine.situation import Situation, build
from cds_hooks.knowledge import Knowledge
from cds_hooks.model import HookRequest, Indicator, PatientSnapshot


def evaluate(
    request: HookRequest, snapshot: PatientSnapshot, knowledge: Knowledge, today: date
) -> list[Finding]:
    """Findings for the baclofen drafts under review, most severe first; [] if none is baclofen."""
    situation = build(request, snapshot, knowledge, today)
    if situation is None:
        return []
    hits = [
        hit
        for family in FAMILIES
        for hit in family(situation, knowledge)
        if knowledge.rule(hit.rule_id).enabled
    ]
    return _merge(hits, knowledge, situation)


def _tier(hit: Hit, knowledge: Knowledge) -> Indicator:
    table = knowledge.rule(hit.rule_id).tier
    if hit.tier is not None and hit.tier.rank > table.rank:
        return hit.tier
    return table


def _merge(hits: list[Hit], knowledge: Knowledge, situation: Situation) -> list[Finding]:
    by_topic: dict[Topic, list[Hit]] = {}
    for hit in hits:
        by_topic.setdefault(Topic(knowledge.rule(hit.rule_id).topic), []).append(hit)
    findings = []
    for topic, group in by_topic.items():
        group.sort(key=lambda h: -_tier(h, knowledge).rank)  # stable: family order within a tier
        primary = group[0]
        proposal = next((h.proposal for h in group if h.proposal is not None), None)
        actions = frozenset(a for h in group for a in h.actions)
        if proposal is None:
            actions -= {Action.UPDATE_DOSE}
        order = next((h.order for h in group if h.order), None)
        if order is None and situation.primary is not None:
            order = situation.primary.order.reference
        facts: dict[str, Any] = {
            "reasons": tuple(
                {
                    "rule": h.rule_id,
                    "variant": h.variant,
                    "tier": _tier(h, knowledge).value,
                    **h.facts,
                }
                for h in group
            ),
            "inputs": tuple(dict.fromkeys(line for h in group for line in h.inputs)),
        }
        sources = tuple(
            dict.fromkeys(sid for h in group for sid in knowledge.rule(h.rule_id).source_ids)
        )
        findings.append(
            Finding(
                rule_id=primary.rule_id,
                topic=topic,
                indicator=_tier(primary, knowledge),
                facts=facts,
                order_reference=order,
                proposal=proposal,
                actions=actions,
                sources=sources,
            )
        )
    findings.sort(key=lambda f: -f.indicator.rank)
    return findings
