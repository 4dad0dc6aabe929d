"""The CDS Hooks endpoints: discovery and the hook call."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import Blueprint, Response, current_app, jsonify, request

from cds_hooks import metrics
from cds_hooks.config import Settings
from cds_hooks.discovery import SERVICES_BY_ID, ServiceDefinition, discovery_document
from cds_hooks.errors import UnknownService
from cds_hooks.http_json import read_json_body
from cds_hooks.knowledge import Knowledge
from cds_hooks.logging import annotate_evaluation
from cds_hooks.pipeline import evaluate_hook
from cds_hooks.snooze import Recall

bp = Blueprint("cds", __name__, url_prefix="/cds-services")


def settings() -> Settings:
    return current_app.extensions["baclofen_settings"]


def knowledge() -> Knowledge:
    return current_app.extensions["baclofen_knowledge"]


def recall() -> Recall:
    return current_app.extensions["baclofen_recall"]


def lookup_service(service_id: str) -> ServiceDefinition:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise UnknownService(
            f"No CDS service with id {service_id!r}; GET /cds-services lists the services."
        )
    return service


@bp.get("")
def discovery() -> Response:
    return jsonify(discovery_document())


@bp.post("/<service_id>")
def call_service(service_id: str) -> Response:
    service = lookup_service(service_id)
    body = read_json_body(request)
    now = datetime.now(UTC)
    memory = recall()
    evaluation = evaluate_hook(
        service,
        body,
        settings(),
        knowledge(),
        date.today(),
        hold_back=lambda hook_request, findings: memory.hold_back(hook_request, findings, now),
    )
    cards = evaluation.response["cards"]
    if cards:
        memory.record(evaluation.request, evaluation.shown, cards, now)
    metrics.count_cards(service.id, cards)
    annotate_evaluation(
        hook=evaluation.request.hook,
        hook_instance=evaluation.request.hook_instance,
        topics=(finding.topic.value for finding in evaluation.findings),
        card_count=len(cards),
    )
    return jsonify(evaluation.response)
