"""Liveness and readiness for load balancers and Kubernetes probes."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)

READY_CHECKS = "baclofen_ready_checks"
"""app.extensions key: name -> check that must pass for the instance to take hook calls."""
DEGRADED_CHECKS = "baclofen_degraded_checks"
"""app.extensions key: name -> check of a dependency hook calls can do without."""


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready for hook calls once the configuration loaded (the app exists) and trusted
    issuers are set: 200 with ``status`` "ready", or "degraded" while a dependency that
    hook calls can do without fails (the database: JWT replay checks fall back to each
    worker's memory, feedback answers 503); 503 "not ready" otherwise. ``checks`` names
    each check and its result, the database's as ``store``."""
    required = {name: check() for name, check in current_app.extensions[READY_CHECKS].items()}
    optional = {name: check() for name, check in current_app.extensions[DEGRADED_CHECKS].items()}
    ready = all(required.values())
    status = "not ready" if not ready else "ready" if all(optional.values()) else "degraded"
    response = jsonify({"status": status, "checks": required | optional})
    response.status_code = 200 if ready else 503
    return response
