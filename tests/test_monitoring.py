"""The alerts and the dashboard in ``deploy/monitoring`` query what the service exports.

A PrometheusRule is a custom resource the Kubernetes schemas do not know, so its structure
is checked here: every alert has a query that parses, a duration, a severity and a runbook
section that exists in docs/operations.md. Every query, alert and dashboard alike, is
parsed (promql-parser) and may only read metrics ``cds_hooks.metrics`` exports, labels those
metrics carry or the scrape adds, and ``route`` values the app serves: a renamed metric or
a misspelt label would otherwise leave an alert that never fires.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from flask import Flask
from prometheus_client.metrics import MetricWrapperBase

from cds_hooks import metrics

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
OPERATIONS = ROOT / "docs" / "operations.md"
# Labels the scrape adds to every series (Prometheus Operator's PodMonitor).
TARGET_LABELS = frozenset({"namespace", "pod", "container", "job", "instance"})
REQUIRED_ALERTS = {
    "BaclofenCdsHighErrorRate",  # 5xx rate
    "BaclofenCdsHighLatency",  # p99 latency
    "BaclofenCdsJwtFailures",
    "BaclofenCdsFhirFetchFailures",
    "BaclofenCdsReadinessFlapping",
    # Hook calls go on without the database (issue 16 item 11), so only this shows it.
    "BaclofenCdsDatabaseUnreachable",
}
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
_GRAFANA_VARIABLES = {"$__rate_interval": "5m"}


def exported() -> dict[str, frozenset[str]]:
    """Sample name -> label names, for every metric ``cds_hooks.metrics`` defines."""
    samples: dict[str, frozenset[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = frozenset(metric._labelnames)  # prometheus_client keeps them only there
        for family in metric.describe():
            for suffix in _SAMPLE_SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                samples[family.name + suffix] = labels | extra
    return samples


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8"))
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def selectors(expr: str) -> Iterator[promql_parser.VectorSelector]:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    yield from found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by (...)``, ``on (...)`` and ``ignoring (...)`` clauses."""
    return {
        label.strip()
        for clause in re.findall(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)", expr)
        for label in clause.split(",")
        if label.strip()
    }


def problems(expr: str, routes: set[str]) -> list[str]:
    """What in ``expr`` the service does not export; empty when all of it does."""
    names = exported()
    found = []
    used_labels: set[str] = set(TARGET_LABELS)
    for selector in selectors(expr):
        if selector.name not in names:
            found.append(f"metric {selector.name} is not exported")
            continue
        used_labels |= names[selector.name]
        for matcher in selector.matchers.matchers:
            if matcher.name not in names[selector.name] | TARGET_LABELS:
                found.append(f"{selector.name} has no label {matcher.name}")
            if matcher.name == "route" and not _matches_a_route(matcher, routes):
                found.append(f"no route {matcher.value!r}")
    found += [f"no label {label}" for label in grouping_labels(expr) - used_labels]
    if not any(True for _ in selectors(expr)):
        found.append("reads no metric")
    return found


def _matches_a_route(matcher: promql_parser.Matcher, routes: set[str]) -> bool:
    if matcher.op == promql_parser.MatchOp.Equal:
        return matcher.value in routes
    if matcher.op == promql_parser.MatchOp.Re:
        return any(re.fullmatch(matcher.value, route) for route in routes)
    return True  # a negative matcher cannot name a missing route


@pytest.fixture
def routes(app: Flask) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_the_prometheus_rule_is_well_formed() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["name"] and rule["metadata"]["labels"]
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"]
    prose = re.sub(r"^```.*?^```", "", OPERATIONS.read_text(encoding="utf-8"), flags=re.M | re.S)
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", prose, re.M)
    }
    for alert in alert_rules():
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, alert
        assert re.fullmatch(r"BaclofenCds[A-Z][A-Za-z]+", alert["alert"])
        promql_parser.parse(alert["expr"])
        assert promql_parser.parse_duration(alert["for"]).total_seconds() > 0
        assert alert["labels"]["severity"] in ("critical", "warning")
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page.endswith("/operations.md") and anchor == alert["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section for {alert['alert']}"


def test_the_alerts_cover_what_an_sre_asked_for() -> None:
    assert {alert["alert"] for alert in alert_rules()} >= REQUIRED_ALERTS


def test_every_alert_reads_only_what_the_service_exports(routes: set[str]) -> None:
    for alert in alert_rules():
        assert problems(alert["expr"], routes) == [], alert["alert"]


def test_every_dashboard_query_reads_only_what_the_service_exports(routes: set[str]) -> None:
    queries = dashboard_queries()
    assert queries
    for query in queries:
        assert problems(query, routes) == [], query


def test_the_dashboard_is_grafana_json_with_a_data_source_choice() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()


def test_the_checks_catch_a_renamed_metric_a_misspelt_label_and_a_missing_route(
    routes: set[str],
) -> None:
    """Guards the guard."""
    assert problems('sum(rate(cds_request_total{route="/readyz"}[5m]))', routes)
    assert problems('sum(rate(cds_requests_total{rout="/readyz"}[5m]))', routes)
    assert problems('sum(rate(cds_requests_total{route="/ready"}[5m]))', routes)
    assert problems("sum by (servce) (rate(cds_requests_total[5m]))", routes)
    assert problems('sum(rate(cds_requests_total{route="/readyz"}[5m]))', routes) == []


def test_the_monitoring_kustomization_applies_every_file() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"]) | {
        file for generator in kustomization["configMapGenerator"] for file in generator["files"]
    }
    assert listed == {p.name for p in MONITORING.iterdir()} - {"kustomization.yaml"}
