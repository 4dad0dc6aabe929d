"""Plain-text views for people at a terminal; the command line's JSON stays for scripts.

A pharmacist reviewing a case wants each card's indicator, summary, suggestions and the
data it was worked out from, not 20 kB of CDS Hooks JSON. Nothing here re-decides
anything: every line comes from the response and the findings behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cards.render import catalogue
from cds_hooks.pipeline import Evaluation


def evaluation_text(evaluation: Evaluation) -> str:
    cards: list[Mapping[str, Any]] = evaluation.response["cards"]
    if not cards:
        return "No cards: no baclofen order under review, or nothing to flag.\n"
    # One finding per topic and one card per finding: a card's topic names its finding.
    findings = {finding.topic.value: finding for finding in evaluation.findings}
    lines = [f"{len(cards)} card(s), most severe first:"]
    for number, card in enumerate(cards, 1):
        topic = card["source"]["topic"]
        facts = findings[topic["code"]].facts
        rules = ", ".join(dict.fromkeys(reason["rule"] for reason in facts["reasons"]))
        lines += [
            "",
            f"{number}. {card['indicator'].upper()}: {card['summary']}",
            f"   topic: {topic['display']} (rules {rules})",
            *_section("data used", facts.get("inputs", ())),
            *_section("suggestions", _suggestions(card)),
        ]
    shown = {card["source"]["topic"]["code"] for card in cards}
    hidden = [code for code in findings if code not in shown]
    if hidden:
        displays = ", ".join(catalogue().topics[code]["display"] for code in hidden)
        lines += ["", f"Not shown (more than CDS_MAX_CARDS cards): {displays}"]
    return "\n".join(lines) + "\n"


def _section(title: str, items: Iterable[str]) -> Iterator[str]:
    listed = [f"   - {item}" for item in items]
    if listed:
        yield f"   {title}:"
        yield from listed


def _suggestions(card: Mapping[str, Any]) -> Iterator[str]:
    for suggestion in card.get("suggestions", ()):
        yield suggestion["label"] + (" (recommended)" if suggestion.get("isRecommended") else "")
