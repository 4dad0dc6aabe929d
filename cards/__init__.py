"""The card catalogue: turns engine findings into CDS Hooks 2.0 cards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cds_hooks.engine.findings import Finding
from cds_hooks.model import HookRequest


def render_cards(
    findings: Sequence[Finding], request: HookRequest, max_cards: int
) -> list[dict[str, Any]]:
    """Placeholder until the catalogue lands."""
    del findings, request, max_cards
    return []
