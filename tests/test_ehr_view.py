"""Every response to a request of the test suite, rendered as the CDS Hooks sandbox renders
it (tests/ehr_view.py: the detail as GitHub-flavoured Markdown with raw HTML allowed): the
Markdown the cards write comes out as intended, and text from the EHR stays text.
"""

from __future__ import annotations

import re
from datetime import date
from html.parser import HTMLParser

import pytest
from flask.testing import FlaskClient

from tests.ehr_view import detail_html, response_html
from tests.scenario_requests import build_request, post
from tests.suite_requests import scenarios, suite_requests

REQUESTS = dict(suite_requests(date.today()))
DETAIL_TAGS = {"p", "strong", "ul", "li"}
"""All a detail uses: paragraphs, a bold lead-in and a list of further reasons."""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read(html: str) -> _Reader:
    reader = _Reader()
    reader.feed(html)
    return reader


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_details_render_as_written(client: FlaskClient, name: str) -> None:
    cards = post(client, REQUESTS[name])
    for card in cards:
        rendered = read(detail_html(card["detail"]))
        assert rendered.tags <= DETAIL_TAGS, rendered.tags
        text = "".join(rendered.text)
        # No Markdown left as characters, no escape shown: "[Valium]" reads as written.
        assert "**" not in text and "\\" not in text, text
    page = read(response_html(name, cards))
    for card in cards:
        assert card["summary"] in "".join(page.text)


def test_ehr_text_with_markup_is_shown_as_text(client: FlaskClient) -> None:
    """A drug name holding HTML and Markdown, as an EHR may send, renders as the same text."""
    name = "<img src=x onerror=alert(1)> *oxycodone* [5 MG](x) Oral Tablet | #1"
    row = next(s for s in scenarios() if s["id"] == "opioid-plus-benzodiazepine")
    row = row | {"active": [{"id": "a1", "name": name}, *row["active"][1:]]}
    (card,) = [
        c for c in post(client, build_request(row, date.today())) if "opioid" in c["summary"]
    ]
    rendered = read(detail_html(card["detail"]))
    assert rendered.tags <= DETAIL_TAGS
    assert name in re.sub(r"\s+", " ", "".join(rendered.text))
