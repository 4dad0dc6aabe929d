"""Prometheus metrics and the ``GET /metrics`` endpoint.

Operators need to see, per service, how many hook calls arrive, how fast we answer,
which cards clinicians are shown, how the EHR's FHIR server behaves, and why tokens or
feedback are refused. Every label value is drawn from a closed set (route templates,
known service ids, topic and indicator codes, short reason names): a label taken from
request content would let any caller grow the series without bound.

Under gunicorn each worker is a process with its own counters. When
``PROMETHEUS_MULTIPROC_DIR`` is set before ``prometheus_client`` is imported, values go
to per-process files there and each scrape merges them, so the numbers are the same
whichever worker answers; ``cds_hooks.gunicorn_conf`` empties the directory at server
start and marks dead workers. Without it (tests, the CLI, one process) the default
in-process registry is served.

``/metrics`` carries no patient data but is not behind the JWT check (Prometheus cannot
sign CDS Hooks tokens): expose it only inside the cluster, never through the ingress
the EHR uses.

Reading them (PromQL)::

    # hook calls per second by service and status
    sum by (service, status) (rate(cds_requests_total{route="/cds-services/<service_id>"}[5m]))
    # p99 hook latency
    histogram_quantile(0.99, sum by (le, service)
        (rate(cds_request_duration_seconds_bucket{route="/cds-services/<service_id>"}[5m])))
    # share of evaluations that showed a card; cards by topic and indicator
    sum(rate(cds_evaluations_total{result="cards"}[1h])) / sum(rate(cds_evaluations_total[1h]))
    sum by (topic, indicator) (increase(cds_cards_total[1d]))
    # FHIR-server failures by kind and reason; refused tokens; overridden cards by topic
    sum by (kind, outcome) (rate(cds_fhir_fetches_total{outcome!="ok"}[5m]))
    sum by (reason) (rate(cds_auth_failures_total[5m]))
    sum by (topic, outcome) (increase(cds_feedback_total[1d]))
    # which release and which clinical knowledge each pod serves (during a rollout, two)
    count by (version, knowledge_version) (cds_build_info)

The alerts and the dashboard in ``deploy/monitoring/`` are written against these names;
``tests/test_monitoring.py`` checks every query there against this module.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any, ParamSpec

from flask import Flask, Response, g, request, request_started
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from cds_hooks import fhir_client
from cds_hooks.discovery import SERVICES_BY_ID
from cds_hooks.knowledge import KNOWLEDGE_VERSION
from cds_hooks.model import DataKind, Indicator, Topic

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"

# Hook answers should take tens of milliseconds (the p99 target is 50 ms); FHIR
# fetches are bounded by CDS_FHIR_TOTAL_TIMEOUT (3 s by default).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FHIR_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)

NO_SERVICE = ""
UNKNOWN = "unknown"
OTHER = "other"
UNMATCHED_ROUTE = "unmatched"
_REASON = re.compile(r"[a-z0-9_]{1,40}")
_KINDS = frozenset(kind.value for kind in DataKind)
_TOPICS = frozenset(topic.value for topic in Topic)
_INDICATORS = frozenset(indicator.value for indicator in Indicator)
_FEEDBACK_OUTCOMES = frozenset({"accepted", "overridden"})
_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"})
_MAPPING = dict | Mapping
"""dict first: cards are dicts, and the Mapping check alone goes through ABC machinery."""

REQUESTS = Counter(
    "cds_requests",
    "HTTP requests answered, by route template, method, CDS service id and status.",
    ["route", "method", "service", "status"],
)
REQUEST_DURATION = Histogram(
    "cds_request_duration_seconds",
    "Time from routing to response, by route template, method, CDS service id and status.",
    ["route", "method", "service", "status"],
    buckets=REQUEST_BUCKETS,
)
EVALUATIONS = Counter(
    "cds_evaluations",
    "Hook calls evaluated, by service and whether any card was returned.",
    ["service", "result"],
)
CARDS = Counter(
    "cds_cards",
    "Cards returned to the EHR, by service, card topic (source.topic) and indicator.",
    ["service", "topic", "indicator"],
)
FHIR_FETCHES = Counter(
    "cds_fhir_fetches",
    "HTTP exchanges with the EHR's FHIR server, by data kind and outcome ('ok' or a reason).",
    ["kind", "outcome"],
)
FHIR_FETCH_DURATION = Histogram(
    "cds_fhir_fetch_duration_seconds",
    "Duration of one exchange with the EHR's FHIR server, by data kind.",
    ["kind"],
    buckets=FHIR_BUCKETS,
)
AUTH_FAILURES = Counter(
    "cds_auth_failures",
    "Requests refused by the JWT check, by reason.",
    ["reason"],
)
JWT_REPLAY_FALLBACKS = Counter(
    "cds_jwt_replay_fallbacks",
    "Token ids checked in this worker's memory because the shared database was unavailable "
    "(a replay to another worker or instance is not caught then).",
)
FEEDBACK = Counter(
    "cds_feedback",
    "Feedback items received, by service, card topic and outcome (accepted / overridden).",
    ["service", "topic", "outcome"],
)

# Every worker sets the same series to 1; "max" merges them into one per pod.
BUILD_INFO = Gauge(
    "cds_build_info",
    "Always 1, labelled with the release (version) and the clinical knowledge version served.",
    ["version", "knowledge_version"],
    multiprocess_mode="max",
)


P = ParamSpec("P")


def _never_raises(record: Callable[P, None]) -> Callable[P, None]:
    """A metrics fault (say, an unwritable multiprocess directory) must not fail a hook call."""

    @functools.wraps(record)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            log.exception("recording a metric failed")

    return guarded


@functools.cache
def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the same child prometheus_client keeps, without
    its per-call argument checks and lock. Label values come from closed sets, so the memo
    stays small."""
    return metric.labels(*labels)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def _reason(value: object) -> str:
    text = str(value).strip().lower().replace("-", "_")
    return text if _REASON.fullmatch(text) else OTHER


def _service_label(service_id: object) -> str:
    return service_id if isinstance(service_id, str) and service_id in SERVICES_BY_ID else UNKNOWN


@_never_raises
def observe_fhir_fetch(kind: str, seconds: float, outcome: str) -> None:
    """Record one exchange with the FHIR server; ``outcome`` is ``"ok"`` or a short reason."""
    label = kind if kind in _KINDS else OTHER
    FHIR_FETCHES.labels(label, _reason(outcome)).inc()
    FHIR_FETCH_DURATION.labels(label).observe(max(seconds, 0.0))


@_never_raises
def observe_fetch_record(record: Any) -> None:
    """Adapter for ``cds_hooks.fhir_client.OBSERVERS`` (takes a ``FetchRecord``)."""
    if record.error:
        outcome = f"http_{record.status}" if record.error == "http_status" else record.error
    else:
        outcome = "ok" if record.status == 200 else f"http_{record.status}"
    observe_fhir_fetch(record.kind.value, record.elapsed_ms / 1000.0, outcome)


@_never_raises
def count_auth_failure(reason: str) -> None:
    """Count a refused token; ``reason`` is a short code such as ``expired``."""
    AUTH_FAILURES.labels(_reason(reason)).inc()


@_never_raises
def count_replay_fallback() -> None:
    """Count one token id checked in memory because the database was down."""
    JWT_REPLAY_FALLBACKS.inc()


@_never_raises
def count_feedback(service: str, outcome: str, topic: str | None) -> None:
    """Count one feedback item (call once per item of a feedback request); ``topic`` is
    the card's, None when its uuid carries none."""
    label = outcome if outcome in _FEEDBACK_OUTCOMES else OTHER
    topic_label = "unknown" if topic is None else topic if topic in _TOPICS else OTHER
    FEEDBACK.labels(_service_label(service), topic_label, label).inc()


def _topic_label(card: Mapping[str, Any]) -> str:
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, _MAPPING) else None
    code = topic.get("code") if isinstance(topic, _MAPPING) else None
    if code is None:
        return UNKNOWN
    return code if code in _TOPICS else OTHER


@_never_raises
def count_cards(service: str, cards: Iterable[Mapping[str, Any]]) -> None:
    """Count the cards of one hook response by ``source.topic.code`` and ``indicator``."""
    service_label = _service_label(service)
    shown = 0
    for card in cards:
        shown += 1
        indicator = card.get("indicator")
        _child(
            CARDS,
            service_label,
            _topic_label(card),
            indicator if indicator in _INDICATORS else OTHER,
        ).inc()
    _child(EVALUATIONS, service_label, "cards" if shown else "no_cards").inc()


def release() -> str:
    """The installed project's version (``version`` in pyproject.toml)."""
    try:
        return metadata.version("baclofen-cds")
    except metadata.PackageNotFoundError:
        return UNKNOWN


@_never_raises
def _record_build() -> None:
    BUILD_INFO.labels(release(), KNOWLEDGE_VERSION).set(1)


def _start_timer(sender: Flask, **extra: Any) -> None:
    g.cds_request_started = time.perf_counter()


def _observe_request(response: Response) -> Response:
    _record_request(response.status_code)
    return response


@_never_raises
def _record_request(status: int) -> None:
    started = g.pop("cds_request_started", None)
    if started is None:
        return
    rule = request.url_rule
    view_args = request.view_args or {}
    service = _service_label(view_args["service_id"]) if "service_id" in view_args else NO_SERVICE
    method = request.method
    labels = (
        rule.rule if rule is not None else UNMATCHED_ROUTE,
        method if method in _METHODS else OTHER,
        service,
        str(status),
    )
    _child(REQUESTS, *labels).inc()
    _child(REQUEST_DURATION, *labels).observe(time.perf_counter() - started)


def scrape() -> bytes:
    """The exposition text: merged across worker processes in multiprocess mode."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _metrics_view() -> Response:
    return Response(scrape(), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time every request, serve ``GET /metrics`` and listen to FHIR-server fetches.

    The timer starts on ``request_started``, before any ``before_request`` function, so
    requests that the JWT check refuses early are timed and counted too.
    """
    _record_build()
    request_started.connect(_start_timer, app)
    app.after_request(_observe_request)
    app.add_url_rule(METRICS_PATH, "metrics", _metrics_view, methods=["GET"])
    if observe_fetch_record not in fhir_client.OBSERVERS:
        fhir_client.OBSERVERS.append(observe_fetch_record)
