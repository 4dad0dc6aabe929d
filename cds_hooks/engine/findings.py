"""What the rules conclude, before any wording: the contract between engine and cards.

A Finding carries facts (numbers, dates, drug names) rather than prose, so the card
catalogue owns the wording and an institution can retune text without touching rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cds_hooks.model import Indicator, MedicationOrder, Topic


class Action(StrEnum):
    """One-click fixes a card may offer."""

    UPDATE_DOSE = "update-dose"
    ORDER_CREATININE = "order-creatinine"
    DELETE_DRAFT = "delete-draft"


# Built for every proposal of every call, so slotted but not frozen (see ``Finding``).
@dataclass(slots=True)
class ProposedRegimen:
    """An adjusted regimen for the same product, ready to write into the draft order."""

    dose_value: float
    dose_unit: str
    dose_code: str
    frequency: int
    period: float
    period_unit: str
    daily_dose: float
    daily_unit: str
    text: str
    schedule: str | None = None
    """The steps after this one, in words (a taper)."""
    status: str | None = None
    """The order's new status, where the update changes it (a stop becomes a taper step)."""
    medication: tuple[str, str] | None = None
    """(RxNorm code, name) of another strength of the product, where the one ordered cannot
    give the dose; None: the same product."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What a finding is about beyond its words, so the same advice can be recognised on a
    later call: a prescriber who overrode it with a snooze reason is not shown it again
    while nothing that matters has changed (cds_hooks/snooze.py).

    ``drug`` names the baclofen therapy by route (oral and intrathecal baclofen are different
    therapies with different doses); ``daily_dose`` is the total daily dose the patient
    would be on by that route, in ``dose_unit`` (None when not computable); ``classes`` are
    the drug classes of every co-medication.
    """

    drug: str
    daily_dose: float | None
    dose_unit: str | None
    classes: frozenset[str]


# Built for every topic of every call, so slotted but not frozen: a frozen dataclass pays an
# object.__setattr__ call per field when built. Nothing mutates a finding after the engine
# returns it (and ``facts`` is a dict, so a finding was never hashable anyway).
@dataclass(slots=True)
class Finding:
    rule_id: str
    topic: Topic
    indicator: Indicator
    facts: Mapping[str, Any] = field(default_factory=dict)
    order_reference: str | None = None
    proposal: ProposedRegimen | None = None
    actions: frozenset[Action] = frozenset()
    sources: tuple[str, ...] = ()
    active_order: MedicationOrder | None = None
    """patient-view: the active order (not a draft) that ``order_reference`` names."""
    subject: Subject | None = None

    @property
    def rules(self) -> tuple[str, ...]:
        """Every rule this finding merges, most severe first, each once."""
        return tuple(dict.fromkeys(reason["rule"] for reason in self.facts["reasons"]))
