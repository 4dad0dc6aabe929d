"""CDS Hooks 2.0 feedback endpoint: what clinicians did with our cards.

The spec defines no response body; clients (the sandbox included) ignore it, so a
small count is returned for people testing by hand. Only counts are logged: a
comment or reason may describe the patient.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from cds_hooks import metrics
from cds_hooks.api import lookup_service
from cds_hooks.feedback import parse_feedback_request
from cds_hooks.http_json import read_json_body
from cds_hooks.store import get_store

bp = Blueprint("feedback", __name__, url_prefix="/cds-services")


@bp.post("/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    service = lookup_service(service_id)
    items = parse_feedback_request(read_json_body(request))
    version = current_app.extensions["baclofen_knowledge"].version
    stored = get_store().record_feedback(service.id, items, knowledge_version=version)
    for item in items:
        metrics.count_feedback(service.id, item.outcome, item.card_topic)
    current_app.logger.info(
        "feedback received",
        extra={"service_id": service.id, "received": len(items), "stored": stored},
    )
    return jsonify({"received": len(items), "stored": stored})
