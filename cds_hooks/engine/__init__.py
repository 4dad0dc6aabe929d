"""The clinical engine: pure functions from a hook request and patient snapshot to findings."""

from __future__ import annotations

from datetime import date

from cds_hooks.engine.findings import Finding
from cds_hooks.model import HookRequest, PatientSnapshot


def evaluate(request: HookRequest, snapshot: PatientSnapshot, today: date) -> list[Finding]:
    """Placeholder until the clinical rules land: no findings, so ``{"cards": []}``."""
    del request, snapshot, today
    return []
