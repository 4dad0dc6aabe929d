"""Placeholder: CDS Hooks 2.0 feedback endpoint (replaced by the feedback work)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

bp = Blueprint("feedback", __name__, url_prefix="/cds-services")


@bp.post("/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    del service_id
    return jsonify({})
