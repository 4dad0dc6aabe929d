"""Reading a JSON request body strictly: right content type, bounded size and depth.

Werkzeug enforces the size limit (MAX_CONTENT_LENGTH → 413); everything else about a
bad body becomes a 4xx with an OperationOutcome instead of a parser traceback. orjson
parses strict JSON only (no NaN/Infinity, no lone surrogates, depth limited) and costs
a fraction of the stdlib parser on a full-prefetch request.

Nesting is bounded at ``MAX_DEPTH`` levels, the deepest orjson can write back: a card's
suggestion echoes the draft order, and a body the parser took (orjson reads up to 1,024
levels) but the response encoder could not write sent the answer through the stdlib
encoder into its recursion limit, a 500. FHIR resources nest a dozen levels or so.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

from cds_hooks.errors import BadRequest, UnsupportedMediaType

JSON_MEDIA_TYPES = ("application/json", "application/fhir+json", "application/json+fhir")
MAX_DEPTH = 254
"""orjson's own serialisation limit: ``orjson.dumps`` refuses a 255th level."""
TOO_DEEP = f"The request body is nested too deeply (more than {MAX_DEPTH} levels)."


def read_json_body(request: Request) -> Any:
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Send the request as application/json (got {request.mimetype or 'no Content-Type'})."
        )
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object is required.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise BadRequest(TOO_DEEP) from None
        raise BadRequest(f"The request body is not valid JSON at position {exc.pos}.") from None
    _check_depth(body)
    return body


def _check_depth(body: Any) -> None:
    """Refuse a body nested deeper than ``MAX_DEPTH``: writing it with orjson is the depth
    check (it stops at that limit) and costs a small part of what parsing it did."""
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" not in str(exc):
            raise  # nothing else orjson.loads produces can fail to encode
        raise BadRequest(TOO_DEEP) from None


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON through orjson (several times faster); key order kept as written.

    Anything orjson cannot serialise goes through Flask's own ``default`` (dates,
    dataclasses, Decimal); calls with options (e.g. ``indent``) and values orjson refuses
    use Flask's encoder.
    """

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs:
            try:
                return orjson.dumps(obj, default=DefaultJSONProvider.default).decode()
            except orjson.JSONEncodeError:
                pass  # e.g. an integer beyond 64 bits: the stdlib encoder takes it
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """``jsonify`` through orjson: Flask's own ``response`` always passes formatting
        options, which would send every response through the stdlib encoder."""
        obj = self._prepare_response_obj(args, kwargs)
        pretty = (self.compact is None and self._app.debug) or self.compact is False
        try:
            body = orjson.dumps(
                obj,
                default=DefaultJSONProvider.default,
                option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
                if pretty
                else orjson.OPT_APPEND_NEWLINE,
            )
        except orjson.JSONEncodeError:
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)  # type: ignore[arg-type]

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return super().loads(s, **kwargs) if kwargs else orjson.loads(s)
