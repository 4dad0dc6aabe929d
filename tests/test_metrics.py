"""``/metrics``: what operators see after real calls, in one process and across workers.

The counters are process-wide, so single-process tests compare values before and after
their own calls instead of expecting zeros.
"""

from __future__ import annotations

import copy
import importlib.metadata
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from cds_hooks import metrics
from cds_hooks.app import create_app
from cds_hooks.knowledge import KNOWLEDGE_VERSION
from tests.conftest import load_json
from tests.fhir_server import FhirServer, ok, searchset, status
from tests.served import serve

ORDER_SIGN = "baclofen-order-sign"
HOOK_ROUTE = "/cds-services/<service_id>"
EVELYN = "requests/sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json"


def scrape_text(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return scrape_text(response.get_data(as_text=True))


def value(families: Mapping[str, Any], sample_name: str, **labels: str) -> float:
    """Sum of the samples named ``sample_name`` whose labels include ``labels``."""
    family_name = sample_name
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        family_name = family_name.removesuffix(suffix)
    family = families.get(family_name)
    if family is None:
        return 0.0
    return sum(
        sample.value
        for sample in family.samples
        if sample.name == sample_name
        and all(sample.labels.get(key) == wanted for key, wanted in labels.items())
    )


@dataclass(frozen=True)
class Gained:
    """How much a sample grew between two scrapes."""

    before: Mapping[str, Any]
    after: Mapping[str, Any]

    def __call__(self, sample: str, **labels: str) -> float:
        return value(self.after, sample, **labels) - value(self.before, sample, **labels)


def evelyn_request() -> dict[str, Any]:
    return copy.deepcopy(load_json(EVELYN)["body"])


def test_discovery_hook_and_refusals_are_counted_by_route_service_and_status(
    client: FlaskClient,
) -> None:
    before = scrape(client)
    assert client.get("/cds-services").status_code == 200
    assert client.post(f"/cds-services/{ORDER_SIGN}", json=evelyn_request()).status_code == 200
    assert client.post(f"/cds-services/{ORDER_SIGN}", json=evelyn_request()).status_code == 200
    assert client.post("/cds-services/no-such-service", json=evelyn_request()).status_code == 404
    bad_json = client.post(
        f"/cds-services/{ORDER_SIGN}", data=b"{not json", content_type="application/json"
    )
    assert bad_json.status_code == 400
    after = scrape(client)
    gained = Gained(before, after)

    assert gained("cds_requests_total", route="/cds-services", method="GET", status="200") == 1
    hook = {"route": HOOK_ROUTE, "method": "POST", "service": ORDER_SIGN}
    assert gained("cds_requests_total", **hook, status="200") == 2
    assert gained("cds_requests_total", **hook, status="400") == 1
    # An unknown id in the URL must not become a label value of its own.
    assert gained("cds_requests_total", route=HOOK_ROUTE, service="unknown", status="404") == 1
    assert value(after, "cds_requests_total", service="no-such-service") == 0
    # The latency histogram saw both successful hook calls, each in the +Inf bucket.
    assert gained("cds_request_duration_seconds_count", **hook, status="200") == 2
    assert gained("cds_request_duration_seconds_bucket", **hook, status="200", le="+Inf") == 2
    assert gained("cds_request_duration_seconds_sum", **hook, status="200") > 0


def test_cards_are_counted_by_topic_and_indicator_as_returned(client: FlaskClient) -> None:
    """Counts match the response's own cards (the engine decides which ones: an elderly
    patient on oxycodone whose eGFR is decades old gets several)."""
    before = scrape(client)
    response = client.post(f"/cds-services/{ORDER_SIGN}", json=evelyn_request())
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    after = scrape(client)
    gained = Gained(before, after)

    assert cards, "this request is expected to produce cards"
    expected = Counter(
        (card.get("source", {}).get("topic", {}).get("code", "unknown"), card["indicator"])
        for card in cards
    )
    for (topic, indicator), count in expected.items():
        labels = {"service": ORDER_SIGN, "topic": topic, "indicator": indicator}
        assert gained("cds_cards_total", **labels) == count
    assert gained("cds_evaluations_total", service=ORDER_SIGN, result="cards") == 1


def test_fhir_server_fetches_are_timed_and_failures_counted_by_kind(
    app_config: dict[str, Any],
) -> None:
    body = evelyn_request()
    patient = body["prefetch"]["patient"]
    body.pop("prefetch")
    with FhirServer() as server:
        server.route(f"Patient/{patient['id']}", ok(patient))
        server.route("Observation", status(500))
        server.route("MedicationRequest", ok(searchset([])))
        server.route("Condition", ok(searchset([])))
        body["fhirServer"] = server.base_url
        client = create_app({**app_config, "FHIR_ALLOWLIST": [server.base_url]}).test_client()
        before = scrape(client)
        response = client.post(f"/cds-services/{ORDER_SIGN}", json=body)
        after = scrape(client)
        gained = Gained(before, after)
    assert response.status_code == 200

    assert gained("cds_fhir_fetches_total", kind="patient", outcome="ok") == 1
    assert gained("cds_fhir_fetches_total", kind="renalLabs", outcome="http_500") >= 1
    assert gained("cds_fhir_fetches_total", kind="activeMedications", outcome="ok") == 1
    assert gained("cds_fhir_fetch_duration_seconds_count", kind="patient") == 1


def test_refused_tokens_are_counted_by_reason_and_metrics_needs_no_token(
    app_config: dict[str, Any],
) -> None:
    client = create_app({**app_config, "AUTH_MODE": "sandbox"}).test_client()
    before = scrape(client)  # no token: Prometheus cannot sign CDS Hooks JWTs
    assert client.post(f"/cds-services/{ORDER_SIGN}", json=evelyn_request()).status_code == 401
    after = scrape(client)
    gained = Gained(before, after)

    assert gained("cds_requests_total", route=HOOK_ROUTE, service=ORDER_SIGN, status="401") == 1
    assert gained("cds_auth_failures_total", reason="no_bearer_token") == 1


def test_feedback_outcomes_are_counted_per_item(client: FlaskClient) -> None:
    feedback = {
        "feedback": [
            {
                "card": "0b7f5a52-5c7e-4f55-9d0e-3f1f6f2b7a10",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "9a0e3c62-1f1b-4b8e-a0f5-6c2d1e7b8a91"}],
                "outcomeTimestamp": "2026-11-22T10:05:31.123Z",
            },
            {
                "card": "4f3e8c1d-9a0b-4c2d-8e7f-1a2b3c4d5e6f",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-22T10:07:00.000Z",
            },
        ]
    }
    before = scrape(client)
    assert client.post(f"/cds-services/{ORDER_SIGN}/feedback", json=feedback).status_code == 200
    after = scrape(client)
    gained = Gained(before, after)
    for outcome in ("accepted", "overridden"):
        labels = {"service": ORDER_SIGN, "topic": "unknown", "outcome": outcome}
        assert gained("cds_feedback_total", **labels) == 1


def test_overrides_of_our_cards_are_counted_by_the_cards_topic(client: FlaskClient) -> None:
    response = client.post(f"/cds-services/{ORDER_SIGN}", json=evelyn_request())
    card = response.get_json()["cards"][0]
    override = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-22T10:07:00.000Z",
    }
    before = scrape(client)
    reply = client.post(f"/cds-services/{ORDER_SIGN}/feedback", json={"feedback": [override]})
    assert reply.status_code == 200
    gained = Gained(before, scrape(client))

    topic = card["source"]["topic"]["code"]
    labels = {"service": ORDER_SIGN, "topic": topic, "outcome": "overridden"}
    assert gained("cds_feedback_total", **labels) == 1


def test_free_text_never_becomes_a_label_value(client: FlaskClient) -> None:
    before = scrape(client)
    metrics.count_auth_failure("expired")
    metrics.count_auth_failure("Patient Jane Doe <script>")
    metrics.count_feedback("attacker-chosen-id", "overridden", "Patient Jane Doe")
    metrics.observe_fhir_fetch("Patient/123", 0.1, "GET https://x/Patient/123 failed")
    after = scrape(client)
    gained = Gained(before, after)

    assert gained("cds_auth_failures_total", reason="expired") == 1
    assert gained("cds_auth_failures_total", reason="other") == 1
    assert gained("cds_feedback_total", service="unknown", topic="other", outcome="overridden") == 1
    assert gained("cds_fhir_fetches_total", kind="other", outcome="other") == 1
    exposed = {v for family in after.values() for s in family.samples for v in s.labels.values()}
    assert not any("Jane" in v or "attacker" in v or "123" in v for v in exposed)


# --- several gunicorn workers, one set of numbers -------------------------------------------


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``baclofen-cds serve --workers 2`` with multiprocess metrics in a temporary dir."""
    metrics_dir = tmp_path / "prometheus"
    stale = metrics_dir / "counter_1.db"  # a previous run's file: must be wiped at start
    unrelated = metrics_dir / "notes.txt"  # not a metrics file: must be left alone
    metrics_dir.mkdir()
    stale.write_bytes(b"stale")
    unrelated.write_text("keep")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "GUNICORN_THREADS": "2"}
    with serve(tmp_path, workers=2, env=env) as (base, _, _):
        assert not stale.exists()
        assert unrelated.read_text() == "keep"
        yield base, metrics_dir


def test_counts_add_up_across_gunicorn_workers(gunicorn_server: tuple[str, Path]) -> None:
    base, metrics_dir = gunicorn_server
    batch = 40
    body = evelyn_request()

    def call(_: int) -> int:
        # a new connection each time, so the calls spread over both workers
        return requests.post(
            f"{base}/cds-services/{ORDER_SIGN}",
            json=body,
            headers={"Connection": "close"},
            timeout=30,
        ).status_code

    def writers() -> set[str]:
        return {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}

    # A fast answer lets one worker take a whole batch: send more until both have answered.
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while sent == 0 or (len(writers()) < 2 and sent < 10 * batch):
            assert list(pool.map(call, range(batch))) == [200] * batch
            sent += batch

    assert len(writers()) >= 2, "only one worker recorded anything; the test proves nothing"
    hook = {"route": HOOK_ROUTE, "service": ORDER_SIGN, "status": "200"}
    for _ in range(6):
        scraped = requests.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=5)
        assert scraped.status_code == 200
        families = scrape_text(scraped.text)
        assert value(families, "cds_requests_total", **hook) == sent
        assert value(families, "cds_request_duration_seconds_count", **hook) == sent
        assert value(families, "cds_evaluations_total", service=ORDER_SIGN) == sent
        assert [s.value for s in families["cds_build_info"].samples] == [1]


def test_build_info_names_the_release_and_the_knowledge_version(client: FlaskClient) -> None:
    """During a rollout, operators see which pods serve which release and knowledge."""
    (sample,) = scrape(client)["cds_build_info"].samples
    assert sample.name == "cds_build_info"
    assert sample.labels == {
        "version": importlib.metadata.version("baclofen-cds"),
        "knowledge_version": KNOWLEDGE_VERSION,
    }
    assert sample.value == 1
