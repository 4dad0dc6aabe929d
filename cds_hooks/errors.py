"""Every refusal the service gives, as a FHIR OperationOutcome with a 4xx status (or 503
when the database it needs is down, so that clients retry rather than give up).

CDS Hooks 3.0 asks services to explain non-2xx answers with an OperationOutcome; a
clinician's EHR or an integration engineer reading the response should learn what was
wrong without our logs. Messages never quote request content (it may hold PHI).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException


class CdsError(Exception):
    """A request the service refuses, with the HTTP status and FHIR issue code to use."""

    status = 400
    issue_code = "invalid"

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


class BadRequest(CdsError):
    status = 400
    issue_code = "invalid"


class UnsupportedMediaType(CdsError):
    status = 415
    issue_code = "not-supported"


class UnknownService(CdsError):
    status = 404
    issue_code = "not-found"


class PayloadTooLarge(CdsError):
    status = 413
    issue_code = "too-costly"


class PreconditionFailed(CdsError):
    """CDS Hooks §412: required data came neither from prefetch nor the FHIR server."""

    status = 412
    issue_code = "processing"


class Forbidden(CdsError):
    status = 403
    issue_code = "forbidden"


class ServiceUnavailable(CdsError):
    """A dependency failed mid-request: nothing was done, and the same request may be retried."""

    status = 503
    issue_code = "transient"


def operation_outcome(message: str, code: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(
    status: int, message: str, code: str, expression: str | None = None
) -> Response:
    response = jsonify(operation_outcome(message, code, expression))
    response.status_code = status
    return response


_HTTP_ISSUE_CODES = {
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
}


def register_error_handlers(app: Flask) -> None:
    """Turn every error, ours or Werkzeug's, into an OperationOutcome; never a traceback."""

    @app.errorhandler(CdsError)
    def _cds_error(error: CdsError) -> Response:
        return outcome_response(error.status, error.message, error.issue_code, error.expression)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = error.description or error.name
        response = outcome_response(status, message, _HTTP_ISSUE_CODES.get(status, "processing"))
        for key, value in error.get_headers():
            if key.lower() not in ("content-type", "content-length"):
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        app.logger.exception("unhandled error", extra={"error_type": type(error).__name__})
        return outcome_response(500, "Internal error; the request was not evaluated.", "exception")
