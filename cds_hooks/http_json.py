"""Reading a JSON request body strictly: right content type, bounded size and depth.

Werkzeug enforces the size limit (MAX_CONTENT_LENGTH → 413); everything else about a
bad body becomes a 4xx with an OperationOutcome instead of a parser traceback.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from cds_hooks.errors import BadRequest, UnsupportedMediaType

JSON_MEDIA_TYPES = ("application/json", "application/fhir+json", "application/json+fhir")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json_body(request: Request) -> Any:
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Send the request as application/json (got {request.mimetype or 'no Content-Type'})."
        )
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object is required.")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("The request body is nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        position = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadRequest(f"The request body is not valid JSON{position}.") from None
