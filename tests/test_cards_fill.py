"""The numbered-template fast path of card wording gives what the by-name path gives.

``_fill`` formats a template whose fields are all bare fact names with one ``str.format``
call and one special-character check over all facts; ``_fill_by_name`` handles anything
(missing facts render as "?"). These tests pin the two together on every catalogue text
and on generated templates and facts.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cards.render import (
    _MARKDOWN_ESCAPES,
    _fill,
    _fill_by_name,
    _has_special,
    _template_of,
    catalogue,
)

NAMES = ("daily", "limit", "drugs", "regimen", "rule")
FACT_VALUES = st.one_of(
    st.text(alphabet="ab *_`[]#|<>&{}.\n", max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
)


def catalogue_texts() -> list[str]:
    cat = catalogue()
    texts = [cat.fallback_summary, cat.fallback_reason]
    for wording in cat.rules.values():
        texts += [wording["summary"], wording["reason"]]
    for suggestion in cat.suggestions.values():
        texts += [suggestion["label"], suggestion["description"]]
    return texts


def both(text: str, facts: dict[str, Any], escape: bool) -> tuple[str, str]:
    template = _template_of(text)
    return _fill(template, facts, escape), _fill_by_name(template, facts, escape)


@pytest.mark.parametrize("escape", [False, True])
def test_catalogue_texts_fill_the_same_both_ways(escape: bool) -> None:
    for text in catalogue_texts():
        fields = _template_of(text).fields
        assert _template_of(text).numbered is not None, text  # all use the fast path
        plain = {name: f"v{i}" for i, name in enumerate(fields)}
        special = {name: f"<b>{i}</b> *x* [y]_z_ #|`&" for i, name in enumerate(fields)}
        numbers = {name: i + 0.5 for i, name in enumerate(fields)}
        for facts in (plain, special, numbers):
            fast, careful = both(text, facts, escape)
            assert fast == careful, text


def test_a_missing_or_empty_fact_renders_as_a_logged_question_mark(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "{daily} mg/day exceeds {limit} mg/day"
    with caplog.at_level(logging.ERROR, logger="cards.render"):
        for facts in ({"daily": "30"}, {"daily": "30", "limit": None}):
            assert both(text, facts, True) == ("30 mg/day exceeds ? mg/day",) * 2
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records] == ["limit"] * 4


def template_parts() -> st.SearchStrategy[list[tuple[str, str | None]]]:
    literal = st.text(alphabet="ab {}*_\n", max_size=6)
    return st.lists(st.tuples(literal, st.one_of(st.none(), st.sampled_from(NAMES))), max_size=5)


@given(
    parts=template_parts(),
    facts=st.dictionaries(st.sampled_from(NAMES), FACT_VALUES),
    escape=st.booleans(),
)
def test_generated_templates_fill_the_same_both_ways(
    parts: list[tuple[str, str | None]], facts: dict[str, Any], escape: bool
) -> None:
    text = "".join(
        literal.replace("{", "{{").replace("}", "}}") + ("" if name is None else f"{{{name}}}")
        for literal, name in parts
    )
    fast, careful = both(text, facts, escape)
    assert fast == careful


@pytest.mark.parametrize("text", ["{daily!r} x", "{daily:>6}", "{daily.upper}", "{} {daily}"])
def test_fields_other_than_bare_names_take_the_by_name_path(text: str) -> None:
    assert _template_of(text).numbered is None


def test_special_characters_are_the_escaped_ones() -> None:
    assert all(_has_special(f"a {char} b") for char in _MARKDOWN_ESCAPES)
    others = "".join(chr(c) for c in range(0x3000) if chr(c) not in _MARKDOWN_ESCAPES)
    assert not _has_special(others)
