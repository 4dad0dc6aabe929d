"""One hook call, start to finish: request → hook context → snapshot → findings → cards.

Shared by the HTTP endpoint and ``baclofen-cds evaluate`` so both give the same answer;
no Flask here, so the CLI runs it without building the app (no store, no caller auth).
The endpoint passes ``hold_back`` (``cds_hooks.snooze``): findings the prescriber has
already decided on, which need the store, are taken out before the cards are made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cards import displayed, folded, render_cards
from cds_hooks import engine
from cds_hooks.config import Settings
from cds_hooks.discovery import ServiceDefinition
from cds_hooks.engine.findings import Finding
from cds_hooks.hook_context import parse_hook_request
from cds_hooks.knowledge import Knowledge
from cds_hooks.model import HookRequest
from cds_hooks.snapshot import assemble_snapshot


@dataclass(frozen=True, slots=True)
class Evaluation:
    request: HookRequest
    findings: tuple[Finding, ...]
    """What the cards answer: the engine's findings less those held back."""
    response: dict[str, Any]
    shown: tuple[Finding, ...] = ()
    """The findings of ``response["cards"]``, card for card."""


HoldBack = Callable[[HookRequest, Sequence[Finding]], tuple[Finding, ...]]


def evaluate_hook(
    service: ServiceDefinition,
    body: Any,
    settings: Settings,
    knowledge: Knowledge,
    today: date,
    hold_back: HoldBack | None = None,
) -> Evaluation:
    request = parse_hook_request(body, service)
    snapshot = assemble_snapshot(request, settings)
    if snapshot is None:  # patient-view for a patient on no baclofen: the common case
        return Evaluation(request=request, findings=(), response={"cards": []})
    # One card per problem: related findings folded together before anything is held back,
    # so a snooze is matched against the card the prescriber saw.
    findings = tuple(folded(engine.evaluate(request, snapshot, knowledge, today), knowledge))
    if hold_back is not None and findings:
        findings = hold_back(request, findings)
    cards = render_cards(findings, request, knowledge, settings.max_cards, settings.snooze)
    return Evaluation(
        request=request,
        findings=findings,
        response={"cards": cards},
        shown=tuple(displayed(findings, settings.max_cards)),
    )
