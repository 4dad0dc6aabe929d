"""The per-request summary line and request id: the fields operators search logs by."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_hooks.logging import configure_logging
from tests.conftest import load_json

EVELYN = "requests/sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json"
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def lines(app: Flask) -> Iterator[io.StringIO]:
    del app  # built first: create_app configures logging to stderr
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        yield stream
    finally:
        configure_logging("INFO")


def summaries(stream: io.StringIO) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in parsed if line["message"] == "request handled"]


def test_a_hook_call_logs_one_summary_with_every_field(
    client: FlaskClient, lines: io.StringIO
) -> None:
    capture = load_json(EVELYN)
    response = client.post("/cds-services/baclofen-order-sign", json=capture["body"])
    assert response.status_code == 200
    (summary,) = summaries(lines)
    assert list(summary) == [
        "level",
        "logger",
        "message",
        "knowledge_version",
        "method",
        "endpoint",
        "status",
        "duration_ms",
        "service",
        "hook",
        "hook_instance",
        "topics",
        "card_count",
        "request_id",
        "timestamp",
    ]
    assert summary["level"] == "INFO" and summary["logger"] == "cds_hooks.request"
    assert summary["method"] == "POST" and summary["endpoint"] == "cds.call_service"
    assert summary["status"] == 200 and summary["service"] == "baclofen-order-sign"
    assert summary["hook"] == "order-sign"
    assert summary["hook_instance"] == capture["body"]["hookInstance"]
    assert summary["card_count"] == len(response.get_json()["cards"])
    assert summary["request_id"] == response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(summary["request_id"])


@pytest.mark.parametrize(
    ("inbound", "kept"),
    [
        ("ehr-7f3a:91.b_2", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ("", False),
    ],
)
def test_a_safe_inbound_request_id_is_echoed_and_logged_else_replaced(
    client: FlaskClient, lines: io.StringIO, inbound: str, kept: bool
) -> None:
    response = client.get("/cds-services", headers={"X-Request-ID": inbound})
    (summary,) = summaries(lines)
    echoed = response.headers["X-Request-ID"]
    assert summary["request_id"] == echoed
    if kept:
        assert echoed == inbound
    else:
        assert HEX_ID.fullmatch(echoed)


@pytest.mark.parametrize(
    "hook_instance",
    ["x" * 129, "Mrs Edna Testperson, MRN 4411", "line\nbreak", "a" * 100_000],
)
def test_a_hook_instance_that_is_not_a_plain_id_is_not_logged(
    client: FlaskClient, lines: io.StringIO, hook_instance: str
) -> None:
    body = load_json(EVELYN)["body"]
    body["hookInstance"] = hook_instance
    assert client.post("/cds-services/baclofen-order-sign", json=body).status_code == 200
    (summary,) = summaries(lines)
    assert summary["hook_instance"] == "(withheld: not a plain id)"
    assert hook_instance not in lines.getvalue()
    assert max(len(line) for line in lines.getvalue().splitlines()) < 5000
