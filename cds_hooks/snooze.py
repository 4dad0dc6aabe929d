"""Advice the prescriber has already decided on: snoozes, and order-select cards repeated at
order-sign (PDDI-CDS), held back between the engine and the cards.

A CDS Hooks feedback names a card by its uuid alone, so each card issued is recorded
(``IssuedCard``) with its topic, rules, indicator, the daily dose and co-medication classes
it saw, and whom it was for as a keyed pseudonym: HMAC-SHA256, under the configured
``CDS_PSEUDONYM_KEY``, of the FHIR server, the patient id and the drug (baclofen by route).
No name, identifier or resource is stored; without the key a pseudonym cannot be traced
back to a patient, and a pseudonym made under a key since dropped matches nothing.

A feedback that overrides a card with a snooze reason (catalogue ``[snooze]``) snoozes its
advice (``Store.snooze_cards``). A later finding is held back while a snooze of the same
pseudonym runs and ``same_advice`` says it is the same advice; findings of a topic the
catalogue never snoozes always reach the prescriber.

When an order-select call asks (``cache-for-order-sign-filtering``), its cards are also
recorded under a session pseudonym that adds the user and the encounter; an order-sign of
the same session that asks (``filter-out-repeated-alerts``) leaves out the same advice.
Without either item nothing is left out (the IG's default).

The database serves the hook call but never decides whether it is answered: when it is
unavailable every finding is shown (a wrong silence is worse than a repeated card) and the
cards go unrecorded, both logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from cards import same_advice
from cds_hooks.engine.findings import Finding
from cds_hooks.logging import annotate
from cds_hooks.model import HookRequest, Indicator
from cds_hooks.store import Advice, IssuedCard, Store, StoreUnavailable

log = logging.getLogger(__name__)

ORDER_SIGN_WINDOW = timedelta(hours=12)
"""How long an order-select's cards are remembered for its order-sign: an ordering session
takes minutes, but one left open over a shift still ends in an order-sign."""

_DOSE_TOLERANCE = 1e-9
"""Relative: the same dose computed again may differ in its last floating-point bits."""


def pseudonym(key: str, *parts: str | None) -> str:
    """HMAC-SHA256 of ``parts`` (canonical JSON, so no two tuples share an input) under
    ``key``, as hex."""
    message = json.dumps(parts, separators=(",", ":")).encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def is_same_advice(finding: Finding, earlier: Advice) -> bool:
    """Whether ``finding`` says nothing the snoozed or already shown ``earlier`` did not:
    the same topic, one the catalogue lets be snoozed, no rule ``earlier`` lacked, no
    higher indicator, then the topic's own conditions (catalogue ``same_advice``)."""
    conditions = same_advice(finding.topic)
    subject = finding.subject
    if not conditions or subject is None or finding.topic.value != earlier.topic:
        return False
    if finding.indicator.rank > Indicator(earlier.indicator).rank:
        return False
    if not set(finding.rules) <= set(earlier.rules):
        return False
    if "dose-not-higher" in conditions and not _dose_not_higher(
        subject.daily_dose, subject.dose_unit, earlier
    ):
        return False
    return "no-new-class" not in conditions or subject.classes <= earlier.classes


def _dose_not_higher(dose: float | None, unit: str | None, earlier: Advice) -> bool:
    """A dose that could not be worked out is the same only as another such dose: an
    unknown dose may be any dose."""
    if dose is None or earlier.daily_dose is None:
        return dose is None and earlier.daily_dose is None
    if unit != earlier.dose_unit:
        return False
    return dose <= earlier.daily_dose * (1 + _DOSE_TOLERANCE)


class Recall:
    """What the service remembers of its cards, for one app: bound to its store, its
    pseudonym keys (the current one first) and its knowledge version."""

    def __init__(self, store: Store, keys: Sequence[str], knowledge_version: str) -> None:
        self.store = store
        self.keys = tuple(keys)
        self.knowledge_version = knowledge_version

    def _subject_keys(self, request: HookRequest, drug: str) -> list[str]:
        return [
            pseudonym(key, "subject", request.fhir_server, request.patient_id, drug)
            for key in self.keys
        ]

    def _session_keys(self, request: HookRequest, drug: str) -> list[str]:
        return [
            pseudonym(
                key,
                "session",
                request.fhir_server,
                request.patient_id,
                drug,
                request.user_id,
                request.encounter_id,
            )
            for key in self.keys
        ]

    def hold_back(
        self, request: HookRequest, findings: Sequence[Finding], now: datetime
    ) -> tuple[Finding, ...]:
        """``findings`` without those a running snooze or (when the EHR asked) the same
        session's order-select already covers."""
        candidates = [f for f in findings if f.subject is not None and same_advice(f.topic)]
        if not self.keys or not candidates:
            return tuple(findings)
        subjects = {
            f.subject.drug: self._subject_keys(request, f.subject.drug)
            for f in candidates
            if f.subject
        }
        sessions = (
            {drug: self._session_keys(request, drug) for drug in subjects}
            if request.filter_repeated_alerts
            else {}
        )
        try:
            snoozed = self.store.snoozed(_flat(subjects.values()), now)
            shown = self.store.shown_at_order_select(
                _flat(sessions.values()), now - ORDER_SIGN_WINDOW
            )
        except StoreUnavailable:
            log.error("snoozes not checked: database unavailable; every card is shown")
            return tuple(findings)
        earlier: dict[str, list[Advice]] = {}
        for drug, advice in (*_by_drug(subjects, snoozed), *_by_drug(sessions, shown)):
            earlier.setdefault(drug, []).append(advice)
        kept: list[Finding] = []
        held: list[str] = []
        for finding in findings:
            same = earlier.get(finding.subject.drug, ()) if finding.subject is not None else ()
            if any(is_same_advice(finding, advice) for advice in same):
                held.append(finding.topic.value)
            else:
                kept.append(finding)
        if held:
            annotate(held_back=sorted(held))
        return tuple(kept)

    def record(
        self,
        request: HookRequest,
        shown: Sequence[Finding],
        cards: Sequence[dict[str, Any]],
        now: datetime,
    ) -> None:
        """Record what each card was about (``shown[i]`` made ``cards[i]``)."""
        issued = []
        for finding, card in zip(shown, cards, strict=True):
            subject = finding.subject
            drug = subject.drug if subject is not None else None
            subject_key = session_key = None
            # Only advice that may be held back is kept with a pseudonym: no more is stored.
            if self.keys and drug is not None and same_advice(finding.topic):
                subject_key = self._subject_keys(request, drug)[0]
                if request.cache_for_order_sign:
                    session_key = self._session_keys(request, drug)[0]
            issued.append(
                IssuedCard(
                    card_uuid=card["uuid"],
                    service_id=request.service_id,
                    hook=request.hook,
                    knowledge_version=self.knowledge_version,
                    issued_at=now,
                    advice=Advice(
                        topic=finding.topic.value,
                        indicator=finding.indicator.value,
                        rules=finding.rules,
                        daily_dose=subject.daily_dose if subject is not None else None,
                        dose_unit=subject.dose_unit if subject is not None else None,
                        classes=subject.classes if subject is not None else frozenset(),
                    ),
                    subject_key=subject_key,
                    session_key=session_key,
                )
            )
        try:
            self.store.record_issued(issued)
        except StoreUnavailable:
            log.error("cards not recorded: database unavailable; they cannot be snoozed")


def _flat(groups: Iterable[list[str]]) -> list[str]:
    return [key for group in groups for key in group]


def _by_drug(
    keys_by_drug: dict[str, list[str]], found: Sequence[tuple[str, Advice]]
) -> list[tuple[str, Advice]]:
    """Each advice found under a pseudonym, with the drug that pseudonym was made for."""
    drug_of = {key: drug for drug, keys in keys_by_drug.items() for key in keys}
    return [(drug_of[key], advice) for key, advice in found if key in drug_of]
