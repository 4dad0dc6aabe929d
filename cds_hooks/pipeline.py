"""One hook call, start to finish: request → hook context → snapshot → findings → cards.

Shared by the HTTP endpoint and ``baclofen-cds evaluate`` so both give the same answer;
no Flask here, so the CLI runs it without building the app (no store, no caller auth).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from cards import render_cards
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
    response: dict[str, Any]


def evaluate_hook(
    service: ServiceDefinition, body: Any, settings: Settings, knowledge: Knowledge, today: date
) -> Evaluation:
    request = parse_hook_request(body, service)
    snapshot = assemble_snapshot(request, settings)
    if snapshot is None:  # patient-view for a patient on no baclofen: the common case
        return Evaluation(request=request, findings=(), response={"cards": []})
    findings = tuple(engine.evaluate(request, snapshot, knowledge, today))
    cards = render_cards(findings, request, knowledge, settings.max_cards)
    return Evaluation(request=request, findings=findings, response={"cards": cards})
