"""Structured logs (one JSON object per line) that are safe to ship to any log store.

``CDS_LOG_FORMAT=text`` writes the same records as plain lines for a person at a
terminal (``make run``); JSON stays the default, for log shippers.

Logs leave the clinical boundary: they go to aggregators, tickets and vendors. So they
carry what operators need (request id, hook, service, hookInstance, timings, card count
and topics, caller issuer and tenant) and never names, birth dates, identifiers,
resource bodies or tokens. Two guards beyond careful call sites:

- exceptions are logged as their type and stack frames only: exception *messages* often
  quote the offending input (a validation error repeats the bad birth date);
- only the request's summary is logged, never the body, query string or headers;
- urllib3, which logs every URL it fetches (FHIR URLs hold patient ids), is held at ERROR.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import IO, Any

import orjson
from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.orjson import OrjsonFormatter

from cds_hooks.discovery import SERVICES_BY_ID
from cds_hooks.knowledge import KNOWLEDGE_VERSION

log = logging.getLogger("cds_hooks.request")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"
"""The WSGI key of ``X-Request-ID``: ``request.headers.get`` pays a KeyError on the usual miss."""
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""What a caller-chosen id (X-Request-ID, hookInstance) must look like to be logged: a
bounded plain token, so it can neither bloat a log line nor carry text (a name) into it."""
WITHHELD = "(withheld: not a plain id)"
_HANDLER_NAME = "baclofen-json"
QUIETED_LOGGERS = ("urllib3",)
"""Third-party loggers that write request URLs (which hold patient ids) below ERROR."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class RequestContextFilter(logging.Filter):
    """Stamps every record logged during a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = g.get("request_id")
        return True


_BARE_WORD = re.compile(r"[\w.:/@+-]+")
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
"""What every LogRecord has; anything else on a record was passed as ``extra``."""


def _exception_without_message(ei: Any) -> str:
    """An exception as its type and frames: messages often quote the offending input."""
    exc_type, _, tb = ei
    frames = traceback.extract_tb(tb)
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    name = exc_type.__name__ if exc_type is not None else "Exception"
    return f"{name} (message withheld) at {where}" if where else f"{name} (message withheld)"


def _text_value(value: Any) -> str:
    """A field as a person reads it: bare when that is unambiguous, else as JSON (quoted,
    so a value holding spaces or a line break cannot pass for further fields or lines)."""
    if isinstance(value, str) and _BARE_WORD.fullmatch(value):
        return value
    return orjson.dumps(value, default=str).decode()


class SafeTextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``, with the JSON lines' fields and guards."""

    def __init__(self, *, pid: bool = False) -> None:
        """``pid``: add the process id (gunicorn's lines name the worker by it)."""
        pid_part = " [%(process)d]" if pid else ""
        super().__init__(f"%(asctime)s{pid_part} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # Not logging.Formatter.format: it would print the record's cached ``exc_text``,
        # which another handler may have filled with the full traceback and its message.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        fields = [
            f"{key}={_text_value(value)}"
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        ]
        if record.exc_info:
            fields.append(f"exception={_text_value(_exception_without_message(record.exc_info))}")
        return " ".join([self.formatMessage(record), *fields])


class SafeJsonFormatter(OrjsonFormatter):
    """JSON lines; exceptions reduced to type and frames (no message, no locals).

    orjson rather than the stdlib encoder: every request writes a line, and the stdlib
    encoder cost a few per cent of a hook call.
    """

    def __init__(self, *, pid: bool = False) -> None:
        """``pid``: add the process id (gunicorn's lines name the worker by it)."""
        super().__init__(
            "%(levelname)s %(name)s %(message)s" + (" %(process)d" if pid else ""),
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
                "process": "pid",
            },
            static_fields={"knowledge_version": KNOWLEDGE_VERSION},
            timestamp=True,
        )

    def formatException(self, ei: Any) -> str:
        return _exception_without_message(ei)


def formatter(log_format: str, *, pid: bool = False) -> logging.Formatter:
    """The formatter for ``CDS_LOG_FORMAT``: ``text``, or JSON for anything else."""
    if log_format == "text":
        return SafeTextFormatter(pid=pid)
    return SafeJsonFormatter(pid=pid)


def configure_logging(
    level: str = "INFO", stream: IO[str] | None = None, log_format: str = "json"
) -> logging.Handler:
    """Send all logging to one handler on the root logger (replacing ours).

    Idempotent: creating several apps (tests, CLI) does not stack handlers.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # No log line of ours prints a record's source file, line, function, thread or
    # process name (the JSON lines hold the fields above and the extras), so every record
    # skips the stack walk and the thread and process-name lookups (the logging HOWTO's
    # "Optimization"). Process ids stay on: gunicorn's error log prints them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return handler


def annotate(**fields: Any) -> None:
    """Add fields to this request's summary line (e.g. hook, hookInstance, topics)."""
    if has_request_context():
        g.setdefault("log_fields", {}).update(fields)


def loggable_id(value: str) -> str:
    """A caller-chosen id as it may be logged: itself when a plain token of at most 128
    characters (a UUID, as the spec asks), else a fixed placeholder."""
    return value if _SAFE_ID.fullmatch(value) else WITHHELD


def annotate_evaluation(
    hook: str, hook_instance: str, topics: Iterable[str], card_count: int
) -> None:
    annotate(
        hook=hook,
        hook_instance=loggable_id(hook_instance),
        topics=sorted({str(t) for t in topics}),
        card_count=card_count,
    )


def init_request_logging(app: Flask) -> None:
    """Give each request an id (``X-Request-ID``) and log one summary line at its end."""

    @app.before_request
    def _start() -> None:
        inbound = request.environ.get(_REQUEST_ID_ENVIRON, "")
        g.request_id = inbound if _SAFE_ID.fullmatch(inbound) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        method = request.method
        if method == "OPTIONS":
            return response
        status = response.status_code
        fields: dict[str, Any] = {"method": method, "endpoint": request.endpoint, "status": status}
        started = g.get("request_started")
        if started is not None:
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        service_id = (request.view_args or {}).get("service_id")
        if service_id in SERVICES_BY_ID:
            fields["service"] = service_id
        identity = g.get("cds_identity")
        if identity is not None:
            fields["issuer"] = identity.issuer
            if identity.tenant:
                fields["tenant"] = identity.tenant
        fields.update(g.get("log_fields", {}))
        if "card_count" not in fields and status == 200 and response.is_json:
            body = response.get_json(silent=True)
            if isinstance(body, dict) and isinstance(body.get("cards"), list):
                fields["card_count"] = len(body["cards"])
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "request handled", extra=fields)
        return response
