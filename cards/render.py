"""Findings → CDS Hooks 2.0 cards, worded from ``catalogue.toml``.

One card per finding (the engine already merged each topic), most severe first, capped at
``max_cards``. When the cap hides cards, the last card shown says how many and which
topics were left out, so nothing is dropped silently. Optional fields are left out rather
than sent empty (the spec and some clients reject ``null``, ``""``, ``[]`` and ``{}``).
"""

from __future__ import annotations

import json
import logging
import re
import string
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from cds_hooks.engine.findings import Action, Finding, ProposedRegimen
from cds_hooks.knowledge import Knowledge
from cds_hooks.model import LOINC, UCUM, FhirVersion, HookRequest, MedicationOrder

log = logging.getLogger(__name__)

NON_ADHERENCE_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
SUMMARY_LIMIT = 139
CREATININE = {"code": "2160-0", "display": "Creatinine [Mass/volume] in Serum or Plasma"}
_DOSE_REPEAT_KEYS = (
    "frequency",
    "frequencyMax",
    "period",
    "periodMax",
    "periodUnit",
    "periodUnits",
    "when",
    "timeOfDay",
    "dayOfWeek",
)
_MARKDOWN_ESCAPES = {
    "<": "&lt;",
    ">": "&gt;",
    "&": "&amp;",
    "*": r"\*",
    "_": r"\_",
    "`": r"\`",
    "[": r"\[",
    "]": r"\]",
    "#": r"\#",
    "|": r"\|",
}


_MARKDOWN_SPECIAL = re.compile("[" + re.escape("".join(_MARKDOWN_ESCAPES)) + "]")


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


@cache
def _fields(template: str) -> tuple[str, ...]:
    """The fact names a template uses: only those are formatted and escaped."""
    names = (
        re.split(r"[.\[]", field, maxsplit=1)[0]
        for _, field, _, _ in string.Formatter().parse(template)
        if field
    )
    return tuple(dict.fromkeys(names))


def _fill(template: str, facts: Mapping[str, Any], escape: bool) -> str:
    values = _Facts()
    for name in _fields(template):
        value = facts.get(name)
        if value is not None:
            values[name] = _escape(str(value)) if escape else str(value)
    return template.format_map(values)


def _escape(text: str) -> str:
    """Facts come from EHR data and the sandbox renders raw HTML in the detail."""
    return _MARKDOWN_SPECIAL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return _MARKDOWN_ESCAPES[match.group()]


def _template(cat: Catalogue, reason: Mapping[str, Any]) -> Mapping[str, str]:
    """The rule's wording for this variant; a rule without wording still gets a card."""
    variant = reason.get("variant")
    rule = reason["rule"]
    found = cat.rules.get(f"{rule}.{variant}") if variant else None
    found = found or cat.rules.get(rule)
    if found is None:
        log.error("card catalogue has no wording for rule %s", rule)
        return {"summary": cat.fallback_summary, "reason": cat.fallback_reason}
    return found


def _summary(cat: Catalogue, finding: Finding) -> str:
    primary = finding.facts["reasons"][0]
    text = _fill(_template(cat, primary)["summary"], primary, escape=False)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def _detail(cat: Catalogue, finding: Finding, knowledge: Knowledge, extra: str | None) -> str:
    topic = cat.topics[finding.topic.value]
    reasons = finding.facts["reasons"]
    parts = ["**Why**"]
    parts += [
        f"- {_fill(_template(cat, r)['reason'], r, escape=True)}"
        + (f" _({r['tier']})_" if len(reasons) > 1 else "")
        for r in reasons
    ]
    inputs = finding.facts.get("inputs") or ()
    if inputs:
        parts += ["", "**Data used**"] + [f"- {_escape(line)}" for line in inputs]
    parts += ["", "**Recommendation**", topic["recommendation"]]
    if finding.proposal is not None:
        parts.append(f"Suggested regimen for the same product: {finding.proposal.text}.")
    cited = [knowledge.sources[s] for s in finding.sources if s in knowledge.sources]
    if cited:
        parts += ["", "**Sources**"] + [f"- {s.label}: {s.citation}" for s in cited]
    if extra:
        parts += ["", extra]
    rules = ", ".join(dict.fromkeys(r["rule"] for r in reasons))
    parts += ["", f"_{cat.service_label}, knowledge {knowledge.version}, rules {rules}_"]
    return "\n".join(parts)


def _links(cat: Catalogue, finding: Finding, knowledge: Knowledge) -> list[dict[str, Any]]:
    links = [{"label": cat.label_link["label"], "url": cat.label_link["url"], "type": "absolute"}]
    for source_id in finding.sources:
        source = knowledge.sources.get(source_id)
        if (
            source is not None
            and source.url
            and source.url.startswith("https://")
            and all(link["url"] != source.url for link in links)
        ):
            links.append({"label": source.label, "url": source.url, "type": "absolute"})
    return links


def _override_reasons(cat: Catalogue, topic: Mapping[str, Any]) -> list[dict[str, str]]:
    codes = topic.get("override_reasons") or cat.default_override_reasons
    return [
        {"system": NON_ADHERENCE_SYSTEM, "code": code, "display": cat.reason_displays[code]}
        for code in codes
    ]


def _draft(request: HookRequest, reference: str | None) -> MedicationOrder | None:
    return next((o for o in request.draft_orders if o.reference == reference), None)


def _has_id(order: MedicationOrder) -> bool:
    return bool(order.raw.get("id")) and "#" not in order.reference


def _node(value: Any) -> dict[str, Any]:
    """A copy of a JSON object, or {} for anything else (drafts can be malformed)."""
    return dict(value) if isinstance(value, Mapping) else {}


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
    dosage = dict(first) if isinstance(first, Mapping) else {}
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


def _suggestions(cat: Catalogue, finding: Finding, request: HookRequest) -> list[dict[str, Any]]:
    texts = cat.suggestions
    topic = cat.topics[finding.topic.value]
    recommended = topic.get("recommended", "update-dose")
    draft = _draft(request, finding.order_reference)
    made: list[tuple[str, dict[str, Any]]] = []
    if Action.UPDATE_DOSE in finding.actions and finding.proposal and draft is not None:
        resource = updated_resource(draft, finding.proposal)
        if resource is not None:
            regimen = {"regimen": finding.proposal.text}
            made.append(
                (
                    Action.UPDATE_DOSE.value,
                    {
                        "label": _fill(texts["update-dose"]["label"], regimen, escape=False),
                        "actions": [
                            {
                                "type": "update",
                                "description": _fill(
                                    texts["update-dose"]["description"], regimen, escape=False
                                ),
                                "resource": resource,
                            }
                        ],
                    },
                )
            )
    if Action.ORDER_CREATININE in finding.actions:
        made.append(
            (
                Action.ORDER_CREATININE.value,
                {
                    "label": texts["order-creatinine"]["label"],
                    "actions": [
                        {
                            "type": "create",
                            "description": texts["order-creatinine"]["description"],
                            "resource": _creatinine_order(request.patient_id),
                        }
                    ],
                },
            )
        )
    if Action.DELETE_DRAFT in finding.actions and draft is not None and _has_id(draft):
        made.append(
            (
                Action.DELETE_DRAFT.value,
                {
                    "label": topic.get("delete_label", texts["delete-draft"]["label"]),
                    "actions": [
                        {
                            "type": "delete",
                            "description": topic.get(
                                "delete_description", texts["delete-draft"]["description"]
                            ),
                            "resourceId": draft.reference,
                        }
                    ],
                },
            )
        )
    if not made:
        return []
    if recommended == "none":
        chosen = None
    elif any(kind == recommended for kind, _ in made):
        chosen = recommended
    else:
        chosen = made[0][0]
    result = []
    for kind, suggestion in sorted(made, key=lambda m: m[0] != chosen):
        result.append(
            {"label": suggestion["label"], "uuid": str(uuid.uuid4())}
            | ({"isRecommended": True} if kind == chosen else {})
            | {"actions": suggestion["actions"]}
        )
    return result


def render_card(
    finding: Finding, request: HookRequest, knowledge: Knowledge, extra: str | None = None
) -> dict[str, Any]:
    cat = catalogue()
    topic = cat.topics[finding.topic.value]
    links = _links(cat, finding, knowledge)
    source_url = next((link["url"] for link in links[1:]), links[0]["url"])
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(cat, finding),
        "indicator": finding.indicator.value,
        "detail": _detail(cat, finding, knowledge, extra),
        "source": {
            "label": f"{cat.service_label} (knowledge {knowledge.version})",
            "url": source_url,
            "topic": {
                "system": cat.topic_system,
                "code": finding.topic.value,
                "display": topic["display"],
            },
        },
    }
    suggestions = _suggestions(cat, finding, request)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    card["overrideReasons"] = _override_reasons(cat, topic)
    card["links"] = links
    return card


def render_cards(
    findings: Sequence[Finding], request: HookRequest, knowledge: Knowledge, max_cards: int
) -> list[dict[str, Any]]:
    """Cards for ``findings``, most severe first; beyond ``max_cards`` the last card says so."""
    ordered = sorted(findings, key=lambda f: -f.indicator.rank)
    shown, hidden = ordered[:max_cards], ordered[max_cards:]
    cards = []
    for index, finding in enumerate(shown):
        extra = None
        if hidden and index == len(shown) - 1:
            topics = ", ".join(catalogue().topics[f.topic.value]["display"] for f in hidden)
            extra = (
                f"**{len(hidden)} more baclofen alert(s) not shown** (at most {max_cards} cards "
                f"per request): {topics}."
            )
        cards.append(render_card(finding, request, knowledge, extra))
    return cards
