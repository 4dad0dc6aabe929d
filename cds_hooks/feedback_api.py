"""CDS Hooks 2.0 feedback endpoint: what clinicians did with our cards.

The spec defines no response body; clients (the sandbox included) ignore it, so a
small count is returned for people testing by hand. Only counts are logged: a
comment or reason may describe the patient. A card overridden with a snooze reason
(catalogue ``[snooze]``) has its advice snoozed (``cds_hooks.snooze``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, current_app, jsonify, request

from cards import snooze_days
from cds_hooks import metrics
from cds_hooks.api import lookup_service
from cds_hooks.feedback import FeedbackItem, parse_feedback_request
from cds_hooks.http_json import read_json_body
from cds_hooks.store import get_store

bp = Blueprint("feedback", __name__, url_prefix="/cds-services")


@bp.post("/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    service = lookup_service(service_id)
    items = parse_feedback_request(read_json_body(request))
    store = get_store()
    version = current_app.extensions["baclofen_knowledge"].version
    stored = store.record_feedback(service.id, items, knowledge_version=version)
    now = datetime.now(UTC)
    snoozes = [snooze for item in items if (snooze := _snooze(item, now)) is not None]
    snoozed = store.snooze_cards(snoozes, now) if snoozes else 0
    for item in items:
        metrics.count_feedback(service.id, item.outcome, item.card_topic)
    current_app.logger.info(
        "feedback received",
        extra={
            "service_id": service.id,
            "received": len(items),
            "stored": stored,
            "snoozed": snoozed,
        },
    )
    counts = {"received": len(items), "stored": stored}
    # Said only when a snooze was asked for, so the answer to plain feedback is unchanged.
    return jsonify(counts | {"snoozed": snoozed} if snoozes else counts)


def _snooze(item: FeedbackItem, now: datetime) -> tuple[str, str, datetime] | None:
    """(card, reason code, until) for a card overridden with a snooze reason; the period
    runs from when the service heard of it, not from the EHR's clock."""
    reason = item.override_reason
    if item.outcome != "overridden" or reason is None or reason.code is None:
        return None
    days = snooze_days(reason.system, reason.code)
    return None if days is None else (item.card, reason.code, now + timedelta(days=days))
