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


def evaluation_text(evaluation: Evaluation) -> str:
    cards: list[Mapping[str, Any]] = evaluation.response["cards"]
    if not cards:
        return "No cards: no baclofen order under review, or nothing to flag.\n"
    lines = [f"{len(cards)} card(s), most severe first:"]
    shown: set[str] = set()
    for number, card in enumerate(cards, 1):
        topic = card["source"]["topic"]
        # The card's extension names its rules (a finding folded into another card's
        # included) and every input, where its detail had room for some.
        provenance = card["extension"][EXTENSION]
        rules = list(dict.fromkeys(reason["rule"] for reason in provenance["rules"]))
        shown.update(rules)
        lines += [
            "",
            f"{number}. {card['indicator'].upper()}: {card['summary']}",
            f"   topic: {topic['display']} (rules {', '.join(rules)})",
            *_section("data used", provenance.get("inputs", ())),
            *_section("suggestions", _suggestions(card)),
        ]
    # A rule belongs to one topic: a finding none of whose rules is on a card was capped.
    hidden = [
        finding.topic.value
        for finding in evaluation.findings
        if not any(reason["rule"] in shown for reason in finding.facts["reasons"])
    ]
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


def feedback_text(counts: Sequence[FeedbackCount]) -> str:
    """An aligned table: service, card topic and override reason by their names."""
    rows = [("service", "card topic", "outcome", "override reason", "count")]
    rows += [
        (
            c.service_id,
            _topic_display(c.card_topic) or "unknown (card uuid carries no topic)",
            c.outcome,
            _reason_display(c) or "—",
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
                _topic_display(c.card_topic) or "",
                c.outcome,
                c.reason_system or "",
                c.reason_code or "",
                _reason_display(c) or "",
                c.count,
            )
        )
    return out.getvalue()


def _topic_display(code: str | None) -> str | None:
    if code is None:
        return None
    topic = catalogue().topics.get(code)
    return topic["display"] if topic else code


def _reason_display(count: FeedbackCount) -> str | None:
    """The code system's display for the reasons our cards offer, else what the EHR sent
    with the code, else the bare code."""
    if count.reason_code is None:
        return None
    if count.reason_system == NON_ADHERENCE_SYSTEM:
        known = catalogue().reason_displays.get(count.reason_code)
        if known:
            return known
    return count.reason_display or f"{count.reason_system}#{count.reason_code}"
