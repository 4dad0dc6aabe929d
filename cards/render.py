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
from dataclasses import dataclass, replace
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
DETAIL_LIMIT = 600
"""Characters of a card's detail before its sources line: what a prescriber reads at the
point of care (what is wrong, the numbers used, what to do)."""
EXTENSION = "org.baclofen-cds.provenance"
"""The card's ``extension`` key for machines and pharmacists: rules, knowledge version,
every input and every citation, none of which belongs in the prescriber's text."""
OTHER_SOURCES = "\n\nOther sources: "
"""Starts the detail's last line, naming the clinical sources that have no link."""
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
    snooze_system: str
    snooze_days: Mapping[str, int]
    """Each snooze override reason code with the days it holds the same advice back."""
    snooze_displays: Mapping[str, str]
    unshown_sources: frozenset[str]


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
        snooze_system=data["snooze"]["system"],
        snooze_days={code: r["days"] for code, r in data["snooze"]["reasons"].items()},
        snooze_displays={code: r["display"] for code, r in data["snooze"]["reasons"].items()},
        unshown_sources=frozenset(data["unshown_sources"]),
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
    """The rule's own advice, in place of the topic's (catalogue header)."""
    also: _Template | None = None
    """The reason as said on a card whose first reason is another rule's."""
    said_by: frozenset[str] = frozenset()
    """Rules whose reason already says this one: on their card it is not repeated."""
    fold_into: tuple[str, ...] = ()
    """Topics whose card, when shown, carries this reason instead of its own topic's."""


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
    """The catalogue entry for a rule variant, else for the rule: a few dozen pairs recur.

    ``fold_into`` is the rule's, whatever the variant; ``said_by`` too unless the variant
    has its own."""
    rules = catalogue().rules
    found = rules.get(f"{rule}.{variant}") if variant else None
    base = rules.get(rule, {})
    entry = found or base
    if not entry:
        return None
    advice = entry.get("recommendation") or base.get("recommendation")
    also = entry.get("also") or base.get("also")
    return _Wording(
        summary=_template_of(entry["summary"]),
        reason=_template_of(entry["reason"]),
        recommendation=advice,
        also=_template_of(also) if also else None,
        said_by=frozenset(entry.get("said_by", base.get("said_by", ()))),
        fold_into=tuple(base.get("fold_into", ())),
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
    snooze_reasons: tuple[dict[str, str], ...]
    """Offered after ``override_reasons`` when snoozes are kept; none for a topic never
    snoozed."""


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
        recommendation=entry["recommendation"],
        recommended=None if recommended == "none" else Action(recommended),
        delete_label=entry.get("delete_label", delete["label"]),
        delete_description=entry.get("delete_description", delete["description"]),
        override_reasons=tuple(
            {"system": NON_ADHERENCE_SYSTEM, "code": code, "display": cat.reason_displays[code]}
            for code in codes
        ),
        snooze_reasons=tuple(
            {"system": cat.snooze_system, "code": code, "display": display}
            for code, display in cat.snooze_displays.items()
        )
        if same_advice(topic)
        else (),
    )


@cache
def same_advice(topic: Topic) -> frozenset[str]:
    """What makes a later card of ``topic`` the same advice as a snoozed one (catalogue
    ``same_advice``); empty for a topic that is never snoozed."""
    return frozenset(catalogue().topics[topic.value].get("same_advice", ()))


def snooze_days(system: str | None, code: str | None) -> int | None:
    """The days a snooze override reason holds advice back; None for any other reason."""
    cat = catalogue()
    return cat.snooze_days.get(code or "") if system == cat.snooze_system else None


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

    A prescriber sees the clinical sources: as ``links`` where they have an address, else
    named in ``others`` (the detail's last line). Every source, design choices and data
    provenance included, is in ``citations`` for the card's extension.
    """

    label: str
    url: str
    links: tuple[dict[str, str], ...]  # copied into each card
    others: str
    citations: tuple[dict[str, str], ...]  # copied into each card's extension


@lru_cache(maxsize=512)
def _provenance(knowledge: Knowledge, source_ids: tuple[str, ...]) -> _Provenance:
    """Memoised with a bound: each entry keeps its ``Knowledge`` alive, and tests and policy
    reloads build many of those.
    """
    cat = catalogue()
    links = [(cat.label_link["label"], cat.label_link["url"])]
    unlinked = []
    cited = [knowledge.sources[s] for s in source_ids if s in knowledge.sources]
    for source in cited:
        if source.id in cat.unshown_sources:
            continue
        if source.url and source.url.startswith("https://"):
            if all(url != source.url for _, url in links):
                links.append((source.label, source.url))
        else:
            unlinked.append(source.label)
    return _Provenance(
        label=f"{cat.service_label} (knowledge {knowledge.version})",
        url=next((url for _, url in links[1:]), links[0][1]),
        links=tuple({"label": label, "url": url, "type": "absolute"} for label, url in links),
        others=f"{OTHER_SOURCES}{'; '.join(unlinked)}." if unlinked else "",
        citations=tuple(
            {"id": s.id, "label": s.label, "citation": s.citation, "grade": s.grade}
            | ({"url": s.url} if s.url else {})
            for s in cited
        ),
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


def _detail(
    finding: Finding, topic: _TopicText, cited: _Provenance, extra: str | None, offered: bool
) -> str:
    """What is wrong, the numbers used and what to do, then the sources that have no link.
    The proposed regimen is said only when no button (``offered``) already says it.

    The first reason is said in full; a further reason in its short form (``also``) unless
    a reason already on the card says it (``said_by``). What is wrong and what to do are
    never cut; the data used fill what room ``DETAIL_LIMIT`` leaves (the card's extension
    lists them all), and the catalogue's wording is kept short enough to leave some.
    """
    reasons = finding.facts["reasons"]
    first = _wording_of(reasons[0])
    why = _fill(first.reason, reasons[0], escape=True)
    on_card = {reasons[0]["rule"]}
    for reason in reasons[1:]:
        wording = _wording_of(reason)
        if not wording.said_by & on_card:
            why += f"\n- {_fill(wording.also or wording.reason, reason, escape=True)}"
        on_card.add(reason["rule"])
    advice = first.recommendation or topic.recommendation
    proposal = finding.proposal
    if proposal is not None:
        if not offered:
            product = (
                "" if proposal.medication is None else f" as {_escape(proposal.medication[1])}"
            )
            advice += f" Proposed{product}: **{_escape(proposal.text)}**."
        if proposal.schedule:
            advice += f" {_escape(proposal.schedule)}"
    elif "plan" in finding.facts:
        plan = _escape(str(finding.facts["plan"]))
        advice += f" Proposed dose, offered on another card: {plan}."
    todo = f"\n\n**What to do:** {advice}"
    more = f"\n\n{extra}" if extra else ""
    room = DETAIL_LIMIT - len(why) - len(todo) - len(more)
    data = _data_used(finding.facts.get("inputs", ()), room, why)
    return f"{why}{data}{todo}{more}{cited.others}"


_DATA_USED = "\n\n**Data used:** "
_GAP_WORDS = ("not checked", "could not be", "no birth date")
"""Words of an input that says data was missing: such an input is shown before any other,
since missing data must never read as normal."""


_CHOICE_WORDS = ("Used: ", "Not used: ")
"""How an input starts that says which of several results was used and why: shown right
after the gaps, since a card naming only the result set aside would mislead."""


def _data_used(inputs: Sequence[str], room: int, said: str) -> str:
    """The inputs, Markdown-escaped, as many as fit in ``room`` characters: gaps in the data
    first, then which result was used and why, then the rest in the engine's order (the
    order, then the values it was checked against). An input too long for the room left is
    given as its value without the explanation after it (``_value_only``), or left out; so
    is any whose value (after its label, such as "Co-prescribed: ") the text ``said``
    already names."""
    fresh = [text for text in inputs if not _said(text, said)]
    gaps = [text for text in fresh if any(word in text for word in _GAP_WORDS)]
    choice = [text for text in fresh if text.startswith(_CHOICE_WORDS) and text not in gaps]
    first = [*gaps, *choice]
    chosen: dict[str, str] = {}
    used = len(_DATA_USED) + 1  # the closing full stop
    for text in [*first, *(text for text in fresh if text not in first)]:
        for form in (text, _value_only(text)):
            cost = len(_escape(form)) + 2 * bool(chosen) if form else room
            if used + cost <= room:
                used += cost
                chosen[text] = _escape(form)
                break
    shown = [chosen[text] for text in fresh if text in chosen]
    return f"{_DATA_USED}{'; '.join(shown)}." if shown else ""


def _said(text: str, said: str) -> bool:
    """Whether ``said`` names the value of the input ``text``: a drug, a condition, a
    result; a value as short as a count ("not identified: 1") is never taken as named."""
    value = _escape(text.split(": ", 1)[-1])
    return len(value) >= 12 and value in said


def _value_only(text: str) -> str:
    """``text`` up to the ": " that starts its explanation ("eGFR (CKD-EPI 2021,
    calculated) 27.7 mL/min/1.73 m² (2026-12-06): CKD-EPI 2021 from creatinine ..."), past
    a leading label ("Not used: "); "" if it has no such part, the cut would split a
    parenthesis, or what follows is numbers, not words (an order's dose: "2 × 10 mg")."""
    start = 16  # past a label such as "Not used: " or "Co-prescribed: "
    cut = text.find(": ", start)
    head = text[:cut]
    words = cut > 0 and not text[cut + 2 : cut + 3].isdigit()
    return head if words and head.count("(") == head.count(")") else ""


def _extension(finding: Finding, knowledge: Knowledge, cited: _Provenance) -> dict[str, Any]:
    """For machines and pharmacists: the rules behind the card, the knowledge version,
    every input and every source (design choices and data provenance included)."""
    provenance: dict[str, Any] = {
        "knowledgeVersion": knowledge.version,
        "rules": [
            {"rule": r["rule"], "tier": r["tier"]}
            | ({"variant": r["variant"]} if r.get("variant") else {})
            for r in finding.facts["reasons"]
        ],
    }
    inputs = finding.facts.get("inputs")
    if inputs:
        provenance["inputs"] = list(inputs)
    if cited.citations:
        provenance["citations"] = list(map(dict.copy, cited.citations))
    return {EXTENSION: provenance}


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
    # patient-view: the EHR can take an update of an active order only when it knows the
    # order (its id); otherwise the proposal stays in words in the detail.
    active = finding.active_order
    target = draft or (active if active is not None and _has_id(active) else None)
    made: dict[Action, tuple[str, dict[str, Any]]] = {}  # label and action, by kind
    if Action.UPDATE_DOSE in actions and finding.proposal and target is not None:
        resource = updated_resource(target, finding.proposal)
        if resource is not None:
            label_text, description_text = _update_dose_texts(draft is None)
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
def _update_dose_texts(active: bool) -> tuple[_Template, _Template]:
    texts = catalogue().suggestions["update-active-order" if active else "update-dose"]
    return _template_of(texts["label"]), _template_of(texts["description"])


def render_card(
    finding: Finding,
    request: HookRequest,
    knowledge: Knowledge,
    uuids: Iterator[str],
    extra: str | None = None,
    snooze: bool = False,
) -> dict[str, Any]:
    """One card; its UUIDs (card and suggestions) are drawn from ``uuids``, the card's
    marked with its topic (``card_uuid``). ``snooze``: offer the topic's snooze reasons."""
    topic = _topic_text(finding.topic)
    cited = _provenance(knowledge, finding.sources)
    uuid = with_topic(next(uuids), topic.uuid_tail)
    suggestions = _suggestions(finding, topic, request, uuids) if finding.actions else []
    offered = any(
        action["type"] == "update" for suggestion in suggestions for action in suggestion["actions"]
    )
    card: dict[str, Any] = {
        "uuid": uuid,
        "summary": _summary(finding),
        "indicator": _INDICATOR_VALUES[finding.indicator],
        "detail": _detail(finding, topic, cited, extra, offered),
        "source": {"label": cited.label, "url": cited.url, "topic": topic.source_topic.copy()},
    }
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    reasons = topic.override_reasons + topic.snooze_reasons if snooze else topic.override_reasons
    card["overrideReasons"] = list(map(dict.copy, reasons))
    card["links"] = list(map(dict.copy, cited.links))
    card["extension"] = _extension(finding, knowledge, cited)
    return card


def displayed(findings: Sequence[Finding], max_cards: int) -> list[Finding]:
    """The findings ``render_cards`` makes cards of, in the order of the cards."""
    return _ordered(findings)[:max_cards]


def _ordered(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: _MOST_SEVERE_FIRST[f.indicator])


def folded(findings: Sequence[Finding], knowledge: Knowledge) -> list[Finding]:
    """``findings`` with each reason whose rule folds into a shown topic (``fold_into``)
    moved onto that topic's card, so one problem is one card: the Beers kidney statement
    on the kidney card, the older adult's CNS load on the CNS-depressant card. The card
    that gave the reason keeps the rest, at their highest tier, or goes if none is left.
    """
    shown = {finding.topic.value: index for index, finding in enumerate(findings)}
    moves: dict[int, list[tuple[Mapping[str, Any], tuple[str, ...]]]] = {}
    for index, finding in enumerate(findings):
        for reason in finding.facts["reasons"]:
            targets = _wording_of(reason).fold_into
            host = next((shown[t] for t in targets if t in shown and shown[t] != index), None)
            if host is not None:
                moves.setdefault(host, []).append((reason, finding.sources))
    if not moves:
        return list(findings)
    moved = {id(reason) for pairs in moves.values() for reason, _ in pairs}
    result = []
    for index, finding in enumerate(findings):
        reasons = [r for r in finding.facts["reasons"] if id(r) not in moved]
        if not reasons:
            continue
        if len(reasons) < len(finding.facts["reasons"]):
            gone = [r for r in finding.facts["reasons"] if id(r) in moved]
            inputs = [
                text
                for text in finding.facts.get("inputs", ())
                if not _names(text, gone) or _names(text, reasons)
            ]
            finding = _with_reasons(finding, reasons, knowledge, inputs=inputs)
        if index in moves:
            guests = [reason for reason, _ in moves[index]]
            cited = tuple(s for _, sources in moves[index] for s in sources)
            finding = _with_reasons(finding, [*reasons, *guests], knowledge, cited)
        result.append(finding)
    return result


def _names(text: str, reasons: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the value of the input ``text`` (after a label such as "CNS-active: ") is
    among the facts of one of ``reasons``: the inputs of a reason moved to another card.
    A value as short as a count is never taken as a reason's (see ``_said``)."""
    value = text.split(": ", 1)[-1]
    return len(value) >= 12 and any(
        value in str(fact) for reason in reasons for fact in reason.values()
    )


def _with_reasons(
    finding: Finding,
    reasons: Sequence[Mapping[str, Any]],
    knowledge: Knowledge,
    cited: tuple[str, ...] = (),
    inputs: Sequence[str] | None = None,
) -> Finding:
    """``finding`` saying ``reasons``, at their highest tier, citing the sources of their
    rules as far as the engine cited them for this patient (on this card or, for reasons
    moved here, in ``cited``), and any source the engine added for no rule in particular;
    with ``inputs`` in place of its own if given."""
    rules = knowledge.rules
    of_rules = _rule_sources(knowledge)
    kept = {s for r in reasons for s in rules[r["rule"]].source_ids}
    own = (s for s in finding.sources if s in kept or s not in of_rules)
    sources = tuple(dict.fromkeys((*own, *(s for s in cited if s in kept))))
    tier = max((Indicator(r["tier"]) for r in reasons), key=lambda i: i.rank)
    return replace(
        finding,
        rule_id=reasons[0]["rule"],
        indicator=tier,
        facts={
            **finding.facts,
            "reasons": tuple(reasons),
            "inputs": finding.facts.get("inputs", ()) if inputs is None else tuple(inputs),
        },
        sources=sources,
    )


@lru_cache(maxsize=8)
def _rule_sources(knowledge: Knowledge) -> frozenset[str]:
    """Every source some rule of ``knowledge`` cites, worked out once per knowledge (bounded:
    each entry keeps its ``Knowledge`` alive)."""
    return frozenset(s for spec in knowledge.rules.values() for s in spec.source_ids)


def render_cards(
    findings: Sequence[Finding],
    request: HookRequest,
    knowledge: Knowledge,
    max_cards: int,
    snooze: bool = False,
) -> list[dict[str, Any]]:
    """Cards for ``findings`` (as ``folded`` leaves them: one per problem), most severe
    first; beyond ``max_cards`` the last card says so. ``snooze``: offer snooze override
    reasons (only where the service keeps them)."""
    ordered = _ordered(findings)
    shown, hidden = ordered[:max_cards], ordered[max_cards:]
    # A UUID per card and per suggestion, and a card has at most one suggestion per action.
    uuids = _uuids(len(shown) + sum(len(f.actions) for f in shown))
    cards = [
        render_card(finding, request, knowledge, uuids, None, snooze) for finding in shown[:-1]
    ]
    if shown:
        extra = None
        if hidden:
            topics = ", ".join(catalogue().topics[f.topic.value]["display"] for f in hidden)
            extra = (
                f"**{len(hidden)} more baclofen alert(s) not shown** (at most {max_cards} cards "
                f"per request): {topics}."
            )
        cards.append(render_card(shown[-1], request, knowledge, uuids, extra, snooze))
    return cards
