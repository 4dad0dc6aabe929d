"""Views for people of what the command line prints: a case, feedback counts.

A pharmacist reviewing a case wants each card's indicator, summary, suggestions and the
data it was worked out from, not 20 kB of CDS Hooks JSON; one reviewing feedback wants
topics and override reasons by name, or a CSV for a spreadsheet. Nothing here re-decides
anything: every line comes from the response and its findings, or from the store's counts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cards.render import EXTENSION, NON_ADHERENCE_SYSTEM, catalogue
from cds_hooks.pipeline import Evaluation
from cds_hooks.store import FeedbackCount

CSV_COLUMNS = (
    "service",
    "card_topic",
    "card_topic_display",
    "outcome",
    "override_reason_system",
    "override_reason_code",
    "override_reason_display",
    "count",
)


@dataclass(frozen=True, slots=True)
class CardReview:
    """One card of a response with the finding it was made from."""

    card: Mapping[str, Any]
    topic_display: str
    rules: tuple[str, ...]
    inputs: tuple[str, ...]
    """The data the rules used, as the finding names it."""


@dataclass(frozen=True, slots=True)
class EvaluationReview:
    cards: tuple[CardReview, ...]
    hidden: tuple[str, ...]
    """Displays of the topics that had a finding but no card (over CDS_MAX_CARDS)."""


def evaluation_review(evaluation: Evaluation) -> EvaluationReview:
    cards: list[Mapping[str, Any]] = evaluation.response["cards"]
    # Each card's extension names its rules (a finding folded into another card's included)
    # and every input, where its detail had room for some.
    reviews = []
    shown: set[str] = set()
    for card in cards:
        provenance = card["extension"][EXTENSION]
        rules = tuple(dict.fromkeys(reason["rule"] for reason in provenance["rules"]))
        shown.update(rules)
        reviews.append(
            CardReview(
                card=card,
                topic_display=card["source"]["topic"]["display"],
                rules=rules,
                inputs=tuple(provenance.get("inputs", ())),
            )
        )
    # A rule belongs to one topic: a finding none of whose rules is on a card was capped.
    hidden = tuple(
        catalogue().topics[finding.topic.value]["display"]
        for finding in evaluation.findings
        if not any(reason["rule"] in shown for reason in finding.facts["reasons"])
    )
    return EvaluationReview(cards=tuple(reviews), hidden=hidden)


def evaluation_text(evaluation: Evaluation) -> str:
    review = evaluation_review(evaluation)
    if not review.cards:
        return "No cards: no baclofen order under review, or nothing to flag.\n"
    lines = [f"{len(review.cards)} card(s), most severe first:"]
    for number, reviewed in enumerate(review.cards, 1):
        card = reviewed.card
        lines += [
            "",
            f"{number}. {card['indicator'].upper()}: {card['summary']}",
            f"   topic: {reviewed.topic_display} (rules {', '.join(reviewed.rules)})",
            *_section("data used", reviewed.inputs),
            *_section("suggestions", _suggestions(card)),
        ]
    if review.hidden:
        lines += ["", f"Not shown (more than CDS_MAX_CARDS cards): {', '.join(review.hidden)}"]
    return "\n".join(lines) + "\n"


def _section(title: str, items: Iterable[str]) -> Iterator[str]:
    listed = [f"   - {item}" for item in items]
    if listed:
        yield f"   {title}:"
        yield from listed


def _suggestions(card: Mapping[str, Any]) -> Iterator[str]:
    for suggestion in card.get("suggestions", ()):
        yield suggestion["label"] + (" (recommended)" if suggestion.get("isRecommended") else "")


def feedback_text(counts: Sequence[FeedbackCount]) -> str:
    """An aligned table: service, card topic and override reason by their names."""
    rows = [("service", "card topic", "outcome", "override reason", "count")]
    rows += [
        (
            c.service_id,
            topic_display(c.card_topic) or "unknown (card uuid carries no topic)",
            c.outcome,
            reason_display(c) or "—",
            str(c.count),
        )
        for c in counts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def feedback_csv(counts: Sequence[FeedbackCount]) -> str:
    """Codes and names both, one row per count; just the header when there is none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in counts:
        writer.writerow(
            (
                c.service_id,
                c.card_topic or "",
                topic_display(c.card_topic) or "",
                c.outcome,
                c.reason_system or "",
                c.reason_code or "",
                reason_display(c) or "",
                c.count,
            )
        )
    return out.getvalue()


def topic_display(code: str | None) -> str | None:
    if code is None:
        return None
    topic = catalogue().topics.get(code)
    return topic["display"] if topic else code


def reason_display(count: FeedbackCount) -> str | None:
    """The code system's display for the reasons our cards offer, else what the EHR sent
    with the code, else the bare code."""
    if count.reason_code is None:
        return None
    if count.reason_system == NON_ADHERENCE_SYSTEM:
        known = catalogue().reason_displays.get(count.reason_code)
        if known:
            return known
    if count.reason_system == catalogue().snooze_system:
        snooze = catalogue().snooze_displays.get(count.reason_code)
        if snooze:
            return snooze
    return count.reason_display or f"{count.reason_system}#{count.reason_code}"
