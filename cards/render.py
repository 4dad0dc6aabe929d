"""Findings → CDS Hooks 2.0 cards, worded from ``catalogue.toml``.

One card per finding (the engine already merged each topic), most severe first, capped at
``max_cards``. When the cap hides cards, the last card shown says how many and which
topics were left out, so nothing is dropped silently. Optional fields are left out rather
than sent empty (the spec and some clients reject ``null``, ``""``, ``[]`` and ``{}``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from cards.card_uuid import topic_code, topic_tail, with_topic
from cds_hooks.engine.findings import Action, Finding, ProposedRegimen
from cds_hooks.knowledge import Knowledge
from cds_hooks.model import (
    LOINC,
    RXNORM,
    UCUM,
    FhirVersion,
    HookRequest,
    Indicator,
    MedicationOrder,
    Topic,
)

log = logging.getLogger(__name__)

NON_ADHERENCE_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
SUMMARY_LIMIT = 139
CREATININE = {"code": "2160-0", "display": "Creatinine [Mass/volume] in Serum or Plasma"}
_DOSE_REPEAT_KEYS = frozenset(
    {
        "frequency",
        "frequencyMax",
        "period",
        "periodMax",
        "periodUnit",
        "periodUnits",
        "when",
        "timeOfDay",
        "dayOfWeek",
    }
)
# "&" first: ``_escape`` replaces one character at a time, and the entities written for "<"
# and ">" must not be escaped again.
_MARKDOWN_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "*": r"\*",
    "_": r"\_",
    "`": r"\`",
    "[": r"\[",
    "]": r"\]",
    "#": r"\#",
    "|": r"\|",
}


# Read from dicts: an enum member's ``value`` and the ``rank`` property are Python-level
# calls, made for every card.
_INDICATOR_VALUES = {indicator: indicator.value for indicator in Indicator}
_MOST_SEVERE_FIRST = {indicator: -indicator.rank for indicator in Indicator}


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: str
    service_label: str
    topic_system: str
    label_link: Mapping[str, str]
    default_override_reasons: tuple[str, ...]
    suggestions: Mapping[str, Mapping[str, str]]
    topics: Mapping[str, Mapping[str, Any]]
    rules: Mapping[str, Mapping[str, str]]
    reason_displays: Mapping[str, str]
    fallback_summary: str
    fallback_reason: str


@cache
def catalogue() -> Catalogue:
    package = resources.files(__package__)
    with package.joinpath("catalogue.toml").open("rb") as fh:
        data = tomllib.load(fh)
    codes = json.loads(package.joinpath("non-adherence-reason-codes.json").read_text("utf-8"))
    displays: dict[str, str] = {}

    def walk(concepts: Sequence[Mapping[str, Any]]) -> None:
        for concept in concepts:
            displays[concept["code"]] = concept["display"]
            walk(concept.get("concept", ()))

    walk(codes["concept"])
    return Catalogue(
        version=data["version"],
        service_label=data["service_label"],
        topic_system=data["topic_system"],
        label_link=data["label_link"],
        default_override_reasons=tuple(data["default_override_reasons"]),
        suggestions=data["suggestions"],
        topics=data["topics"],
        rules=data["rules"],
        reason_displays=displays,
        fallback_summary=data["fallback"]["summary"],
        fallback_reason=data["fallback"]["reason"],
    )


class _Facts(dict[str, Any]):
    """Missing facts render visibly instead of raising: a card with a gap beats no card."""

    def __missing__(self, key: str) -> str:
        log.error("card template needs a fact the rule did not provide: %s", key)
        return "?"


@dataclass(frozen=True, slots=True)
class _Template:
    """A catalogue text, parsed once rather than on every card.

    ``numbered`` is the text with each field replaced by its position in ``fields`` (None
    unless every field is a bare fact name), so a card fills it with one ``str.format``.
    """

    text: str
    fields: tuple[str, ...]  # the fact names the text uses: only those are formatted
    numbered: str | None


@cache
def _template_of(text: str) -> _Template:
    parsed = list(string.Formatter().parse(text))
    fields = tuple(
        dict.fromkeys(
            re.split(r"[.\[]", field, maxsplit=1)[0] for _, field, _, _ in parsed if field
        )
    )
    bare = all(
        field is None or (field.isidentifier() and not spec and conversion is None)
        for _, field, spec, conversion in parsed
    )
    numbered = (
        "".join(
            literal.replace("{", "{{").replace("}", "}}")
            + ("" if field is None else f"{{{fields.index(field)}}}")
            for literal, field, _, _ in parsed
        )
        if bare
        else None
    )
    return _Template(text=text, fields=fields, numbered=numbered)


def _fill(template: _Template, facts: Mapping[str, Any], escape: bool) -> str:
    """``template`` with the named facts, Markdown-escaped if ``escape``.

    Usually every fact is present: their texts go into the numbered template in one call,
    checked for special characters all at once (each is one character, so the joined texts
    hold one only if some text does).
    """
    numbered = template.numbered
    if numbered is None:
        return _fill_by_name(template, facts, escape)
    texts = []
    for name in template.fields:
        value = facts.get(name)
        if value is None:
            return _fill_by_name(template, facts, escape)
        texts.append(str(value))
    if escape and _has_special("".join(texts)):
        texts = list(map(_escape, texts))
    return numbered.format(*texts)


def _fill_by_name(template: _Template, facts: Mapping[str, Any], escape: bool) -> str:
    """``_fill`` for any template and facts, a missing fact rendering as "?"."""
    fields = template.fields
    values = {}
    for name in fields:
        value = facts.get(name)
        if value is not None:
            text = str(value)
            values[name] = _escape(text) if escape else text
    # ``_Facts`` (slower to build) only when a fact is missing and must render as "?".
    return template.text.format_map(values if len(values) == len(fields) else _Facts(values))


def _escape(text: str) -> str:
    """Facts come from EHR data and the sandbox renders raw HTML in the detail.

    Most text has nothing to escape; the rest has a few kinds of special character, and a
    ``str.replace`` per kind present is cheaper than a regex callback per occurrence.
    """
    if not _has_special(text):
        return text
    for char, escaped in _MARKDOWN_ESCAPES.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


def _has_special(text: str) -> bool:
    """Whether ``text`` holds a key of ``_MARKDOWN_ESCAPES``.

    Ten substring tests, each a C scan of well under a machine instruction per character,
    where a regex character class costs about fifty: drug lists and inputs run to hundreds.
    """
    return (
        "&" in text
        or "<" in text
        or ">" in text
        or "*" in text
        or "_" in text
        or "`" in text
        or "[" in text
        or "]" in text
        or "#" in text
        or "|" in text
    )


@dataclass(frozen=True, slots=True)
class _Wording:
    summary: _Template
    reason: _Template
    recommendation: str | None = None
    """The rule's own recommendation paragraph, in place of the topic's (catalogue header)."""


def _wording_of(reason: Mapping[str, Any]) -> _Wording:
    """The rule's wording for this variant; a rule without wording still gets a card."""
    rule = reason["rule"]
    found = _wording(rule, reason.get("variant"))
    if found is None:
        log.error("card catalogue has no wording for rule %s", rule)
        return _fallback_wording()
    return found


@cache
def _wording(rule: str, variant: str | None) -> _Wording | None:
    """The catalogue entry for a rule variant, else for the rule: a few dozen pairs recur."""
    rules = catalogue().rules
    found = rules.get(f"{rule}.{variant}") if variant else None
    entry = found or rules.get(rule)
    if entry is None:
        return None
    advice = entry.get("recommendation") or rules.get(rule, {}).get("recommendation")
    return _Wording(
        summary=_template_of(entry["summary"]),
        reason=_template_of(entry["reason"]),
        recommendation=f"\n\n**Recommendation**\n{advice}" if advice else None,
    )


@cache
def _fallback_wording() -> _Wording:
    cat = catalogue()
    return _Wording(
        summary=_template_of(cat.fallback_summary), reason=_template_of(cat.fallback_reason)
    )


@dataclass(frozen=True, slots=True)
class _TopicText:
    """A topic's fixed wording, resolved once per topic instead of once per card."""

    source_topic: dict[str, str]  # copied into each card
    uuid_tail: str  # the topic's code, ending each card's uuid (card_uuid)
    recommendation: str
    recommended: Action | None  # the suggestion marked isRecommended if offered
    delete_label: str
    delete_description: str
    override_reasons: tuple[dict[str, str], ...]  # copied into each card


@cache
def _topic_text(topic: Topic) -> _TopicText:
    cat = catalogue()
    entry = cat.topics[topic.value]
    delete = cat.suggestions["delete-draft"]
    codes = entry.get("override_reasons") or cat.default_override_reasons
    recommended = entry.get("recommended", "update-dose")
    return _TopicText(
        source_topic={"system": cat.topic_system, "code": topic.value, "display": entry["display"]},
        uuid_tail=topic_tail(entry["code"]),
        recommendation=f"\n\n**Recommendation**\n{entry['recommendation']}",
        recommended=None if recommended == "none" else Action(recommended),
        delete_label=entry.get("delete_label", delete["label"]),
        delete_description=entry.get("delete_description", delete["description"]),
        override_reasons=tuple(
            {"system": NON_ADHERENCE_SYSTEM, "code": code, "display": cat.reason_displays[code]}
            for code in codes
        ),
    )


def topic_of_card(card_uuid: str) -> str | None:
    """The topic of a card this service sent, read from its uuid; None for any other uuid."""
    code = topic_code(card_uuid)
    return None if code is None else _topics_by_code().get(code)


@cache
def _topics_by_code() -> dict[int, str]:
    return {entry["code"]: name for name, entry in catalogue().topics.items()}


@dataclass(frozen=True, slots=True)
class _Provenance:
    """What a card cites: fixed by the knowledge and the finding's source ids, not the patient.

    ``sources`` and ``footer`` are whole detail paragraphs, each with the blank line before it.
    """

    label: str
    url: str
    links: tuple[dict[str, str], ...]  # copied into each card
    sources: str
    footer: str


@lru_cache(maxsize=512)
def _provenance(knowledge: Knowledge, source_ids: tuple[str, ...]) -> _Provenance:
    """Memoised with a bound: each entry keeps its ``Knowledge`` alive, and tests and policy
    reloads build many of those.
    """
    cat = catalogue()
    links = [(cat.label_link["label"], cat.label_link["url"])]
    for source_id in source_ids:
        source = knowledge.sources.get(source_id)
        if (
            source is not None
            and source.url
            and source.url.startswith("https://")
            and all(url != source.url for _, url in links)
        ):
            links.append((source.label, source.url))
    cited = [knowledge.sources[s] for s in source_ids if s in knowledge.sources]
    sources = "\n\n**Sources**" + "".join(f"\n- {s.label}: {s.citation}" for s in cited)
    return _Provenance(
        label=f"{cat.service_label} (knowledge {knowledge.version})",
        url=next((url for _, url in links[1:]), links[0][1]),
        links=tuple({"label": label, "url": url, "type": "absolute"} for label, url in links),
        sources=sources if cited else "",
        footer=f"\n\n_{cat.service_label}, knowledge {knowledge.version}, rules ",
    )


def _uuids(count: int) -> Iterator[str]:
    """``count`` random version 4 UUIDs as text, as ``str(uuid.uuid4())`` writes them, from
    one ``os.urandom`` call for the whole response rather than one per UUID."""
    return iter(_uuid_texts(os.urandom(16 * count)))


def _uuid_texts(random: bytes) -> list[str]:
    """Each 16 bytes of ``random`` as ``str(uuid.UUID(bytes=..., version=4))`` writes them.

    The version and variant bits of every UUID are set with one mask over all the bytes,
    the way ``uuid.UUID`` sets them on one: a ``UUID`` object per card and per suggestion,
    only to be turned into text, was a visible share of a response's time.
    """
    clear, set_ = _version_4_masks(len(random) // 16)
    digits = f"{(int.from_bytes(random) & clear) | set_:0{2 * len(random)}x}"
    return [
        f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-{digits[i + 12 : i + 16]}-"
        f"{digits[i + 16 : i + 20]}-{digits[i + 20 : i + 32]}"
        for i in range(0, 2 * len(random), 32)
    ]


@cache
def _version_4_masks(count: int) -> tuple[int, int]:
    """(bits kept, bits set) that make ``count`` concatenated 128-bit numbers version 4
    RFC 4122 UUIDs: ``uuid.UUID(..., version=4)``'s masks, repeated."""
    clear = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
    set_ = (0x8000 << 48) | (4 << 76)
    return (
        sum(clear << (128 * i) for i in range(count)),
        sum(set_ << (128 * i) for i in range(count)),
    )


def _summary(finding: Finding) -> str:
    primary = finding.facts["reasons"][0]
    text = _fill(_wording_of(primary).summary, primary, escape=False)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def _detail(finding: Finding, topic: _TopicText, cited: _Provenance, extra: str | None) -> str:
    reasons = finding.facts["reasons"]
    recommendation = _wording_of(reasons[0]).recommendation or topic.recommendation
    if len(reasons) == 1:
        (reason,) = reasons
        why = f"**Why**\n- {_fill(_wording_of(reason).reason, reason, escape=True)}"
        rules = reason["rule"]
    else:
        why = "**Why**" + "".join(
            f"\n- {_fill(_wording_of(r).reason, r, escape=True)} _({r['tier']})_" for r in reasons
        )
        rules = ", ".join(dict.fromkeys(r["rule"] for r in reasons))
    inputs = finding.facts.get("inputs")
    # One escape for all lines: the separator holds nothing to escape.
    data = "\n\n**Data used**\n- " + _escape("\n- ".join(inputs)) if inputs else ""
    proposal = finding.proposal
    if proposal is not None:
        schedule = f" {proposal.schedule}" if proposal.schedule else ""
        product = (
            "for the same product"
            if proposal.medication is None
            else "as " + _escape(proposal.medication[1])
        )
        regimen = f"\nSuggested regimen {product}: {proposal.text}.{schedule}"
    elif "plan" in finding.facts:
        plan = finding.facts["plan"]
        regimen = f"\nThe dose proposed for this order is on the card above: {plan}."
    else:
        regimen = ""
    more = f"\n\n{extra}" if extra else ""
    return f"{why}{data}{recommendation}{regimen}{cited.sources}{more}{cited.footer}{rules}_"


def _draft(request: HookRequest, reference: str | None) -> MedicationOrder | None:
    for order in request.draft_orders:
        if order.reference == reference:
            return order
    return None


def _has_id(order: MedicationOrder) -> bool:
    return bool(order.raw.get("id")) and "#" not in order.reference


def _node(value: Any) -> dict[str, Any]:
    """A copy of a JSON object, or {} for anything else (drafts can be malformed).

    ``dict`` is checked first: drafts are parsed JSON, and the ``Mapping`` check is slow.
    """
    return dict(value) if isinstance(value, (dict, Mapping)) else {}


def updated_resource(order: MedicationOrder, regimen: ProposedRegimen) -> dict[str, Any] | None:
    """The draft as sent, with its dose and timing replaced in its own FHIR version's shape.

    Every node on the path to what changes is a fresh copy and the rest is shared with the
    draft (neither is mutated afterwards), which spares a deep copy of the whole resource.
    """
    if not order.raw:
        return None
    resource = dict(order.raw)
    instructions = resource.get("dosageInstruction")
    first = instructions[0] if isinstance(instructions, list) and instructions else {}
    dosage = _node(first)
    value = regimen.dose_value
    quantity = {
        "value": int(value) if float(value).is_integer() else value,
        "unit": regimen.dose_unit,
        "system": UCUM,
        "code": regimen.dose_code,
    }
    timing = _node(dosage.get("timing"))
    repeat = {k: v for k, v in _node(timing.get("repeat")).items() if k not in _DOSE_REPEAT_KEYS}
    repeat |= {"frequency": regimen.frequency, "period": regimen.period}
    repeat["periodUnits" if order.fhir_version is FhirVersion.DSTU2 else "periodUnit"] = (
        regimen.period_unit
    )
    timing.pop("code", None)
    timing["repeat"] = repeat
    dosage["timing"] = timing
    dosage["text"] = regimen.text
    for key in ("doseQuantity", "doseRange", "doseAndRate"):
        dosage.pop(key, None)
    if order.fhir_version is FhirVersion.R4:
        dosage["doseAndRate"] = [{"doseQuantity": quantity}]
    else:
        dosage["doseQuantity"] = quantity
    resource["dosageInstruction"] = [dosage]
    if regimen.status is not None:
        resource["status"] = regimen.status
    if regimen.medication is not None:
        # Another strength of the product: the order names it instead.
        code, name = regimen.medication
        resource.pop("medicationReference", None)
        resource["medicationCodeableConcept"] = {
            "coding": [{"system": RXNORM, "code": code, "display": name}],
            "text": name,
        }
    return resource


def _creatinine_order(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "108252007",
                        "display": "Laboratory procedure",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, **CREATININE}],
            "text": "Serum creatinine (eGFR)",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def _suggestions(
    finding: Finding, topic: _TopicText, request: HookRequest, uuids: Iterator[str]
) -> list[dict[str, Any]]:
    actions = finding.actions
    draft = _draft(request, finding.order_reference)
    made: dict[Action, tuple[str, dict[str, Any]]] = {}  # label and action, by kind
    if Action.UPDATE_DOSE in actions and finding.proposal and draft is not None:
        resource = updated_resource(draft, finding.proposal)
        if resource is not None:
            label_text, description_text = _update_dose_texts()
            medication = finding.proposal.medication
            text = finding.proposal.text
            regimen = {"regimen": text if medication is None else f"{medication[1]}, {text}"}
            made[Action.UPDATE_DOSE] = (
                _fill(label_text, regimen, escape=False),
                {
                    "type": "update",
                    "description": _fill(description_text, regimen, escape=False),
                    "resource": resource,
                },
            )
    if Action.ORDER_CREATININE in actions:
        texts = catalogue().suggestions["order-creatinine"]
        made[Action.ORDER_CREATININE] = (
            texts["label"],
            {
                "type": "create",
                "description": texts["description"],
                "resource": _creatinine_order(request.patient_id),
            },
        )
    if Action.DELETE_DRAFT in actions and draft is not None and _has_id(draft):
        made[Action.DELETE_DRAFT] = (
            topic.delete_label,
            {
                "type": "delete",
                "description": topic.delete_description,
                "resourceId": draft.reference,
            },
        )
    if not made:
        return []
    result = []
    # The recommended suggestion comes first: the planner's dose where the card carries it
    # (one per draft), else the topic's choice if offered, else the first.
    recommended = Action.UPDATE_DOSE if Action.UPDATE_DOSE in made else topic.recommended
    if recommended is not None:
        label, action = made.pop(recommended if recommended in made else next(iter(made)))
        result.append(
            {"label": label, "uuid": next(uuids), "isRecommended": True, "actions": [action]}
        )
    for label, action in made.values():
        result.append({"label": label, "uuid": next(uuids), "actions": [action]})
    return result


@cache
def _update_dose_texts() -> tuple[_Template, _Template]:
    texts = catalogue().suggestions["update-dose"]
    return _template_of(texts["label"]), _template_of(texts["description"])


def render_card(
    finding: Finding,
    request: HookRequest,
    knowledge: Knowledge,
    uuids: Iterator[str],
    extra: str | None = None,
) -> dict[str, Any]:
    """One card; its UUIDs (card and suggestions) are drawn from ``uuids``, the card's
    marked with its topic (``card_uuid``)."""
    topic = _topic_text(finding.topic)
    cited = _provenance(knowledge, finding.sources)
    card: dict[str, Any] = {
        "uuid": with_topic(next(uuids), topic.uuid_tail),
        "summary": _summary(finding),
        "indicator": _INDICATOR_VALUES[finding.indicator],
        "detail": _detail(finding, topic, cited, extra),
        "source": {"label": cited.label, "url": cited.url, "topic": topic.source_topic.copy()},
    }
    if finding.actions:
        suggestions = _suggestions(finding, topic, request, uuids)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "at-most-one"
    card["overrideReasons"] = list(map(dict.copy, topic.override_reasons))
    card["links"] = list(map(dict.copy, cited.links))
    return card


def render_cards(
    findings: Sequence[Finding], request: HookRequest, knowledge: Knowledge, max_cards: int
) -> list[dict[str, Any]]:
    """Cards for ``findings``, most severe first; beyond ``max_cards`` the last card says so."""
    ordered = sorted(findings, key=lambda f: _MOST_SEVERE_FIRST[f.indicator])
    shown, hidden = ordered[:max_cards], ordered[max_cards:]
    # A UUID per card and per suggestion, and a card has at most one suggestion per action.
    uuids = _uuids(len(shown) + sum(len(f.actions) for f in shown))
    cards = [render_card(finding, request, knowledge, uuids) for finding in shown[:-1]]
    if shown:
        extra = None
        if hidden:
            topics = ", ".join(catalogue().topics[f.topic.value]["display"] for f in hidden)
            extra = (
                f"**{len(hidden)} more baclofen alert(s) not shown** (at most {max_cards} cards "
                f"per request): {topics}."
            )
        cards.append(render_card(shown[-1], request, knowledge, uuids, extra))
    return cards
