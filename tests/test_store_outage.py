"""A database that stops answering mid-service: feedback gets 503 with an OperationOutcome
(never a 500), hook calls go on.

The outage is real: the SQLite file is moved away and a directory put in its place, so
every new connection fails to open, as when a volume is lost or PostgreSQL is down.
Feedback clients are told to retry, and a retry after the database returns succeeds.
Hook calls are advisory and time-critical: they are answered throughout, JWT replay
protection falling back to the worker's memory (tests/test_store_postgres.py does the
same against a PostgreSQL server that is stopped and started again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_hooks.app import create_app
from cds_hooks.store import get_store
from tests.conftest import sqlite_url
from tests.security.tokens import Client, bearer

FEEDBACK_URL = "/cds-services/baclofen-order-sign/feedback"
COMMENT = "Mrs Outage-Marker tolerates 80 mg"
FEEDBACK = {
    "feedback": [
        {
            "card": "0b7f5a52-5c7e-4f55-9d0e-3f1f6f2b7a10",
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-22T10:06:02.456Z",
            "overrideReason": {
                "reason": {"code": "patient-tolerating-dose", "system": "urn:example:reason"},
                "userComment": COMMENT,
            },
        }
    ]
}


def _app(tmp_path: Path, **extra: Any) -> Flask:
    return create_app(
        {"TESTING": True, "DATABASE_URL": sqlite_url(tmp_path, "store.sqlite3"), **extra}
    )


@contextmanager
def database_down(app: Flask, tmp_path: Path) -> Iterator[None]:
    database = tmp_path / "store.sqlite3"
    aside = tmp_path / "store.sqlite3.aside"
    with app.app_context():
        engine = get_store().engine
    engine.dispose()
    database.rename(aside)
    database.mkdir()
    try:
        yield
    finally:
        database.rmdir()
        aside.rename(database)
        engine.dispose()


def _assert_retry_outcome(response: Any) -> None:
    assert response.status_code == 503
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"
    assert "unavailable" in body["issue"][0]["diagnostics"]


def test_feedback_during_an_outage_is_refused_with_503_and_stored_when_resent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(tmp_path, ENV="development", AUTH_MODE="off")
    client = app.test_client()
    with database_down(app, tmp_path), caplog.at_level(logging.DEBUG):
        refused = client.post(FEEDBACK_URL, json=FEEDBACK)
        ready = client.get("/readyz")
    _assert_retry_outcome(refused)
    assert "nothing was stored" in refused.get_json()["issue"][0]["diagnostics"]
    assert ready.status_code == 200, "hook calls do not need the database"
    assert ready.get_json()["status"] == "degraded"
    assert ready.get_json()["checks"]["store"] is False
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "database unavailable" in logged
    assert "Outage-Marker" not in logged, "SQL parameters (the comment) reached the log"

    resent = client.post(FEEDBACK_URL, json=FEEDBACK)
    assert resent.status_code == 200
    assert resent.get_json() == {"received": 1, "stored": 1}
    with app.app_context():
        stored = get_store().feedback_for_card(FEEDBACK["feedback"][0]["card"])
    assert [item.override_reason and item.override_reason.user_comment for item in stored] == [
        COMMENT
    ]


def test_a_valid_token_during_an_outage_is_accepted_and_its_replay_refused(
    tmp_path: Path,
) -> None:
    issuer = Client(kind="EC")
    app = _app(
        tmp_path,
        ENV="development",
        AUTH_MODE="enforce",
        PUBLIC_BASE_URL="https://cds.example.org",
        TRUSTED_ISSUERS=[issuer.issuer_config()],
    )
    client = app.test_client()
    url = "https://cds.example.org/cds-services"
    token = issuer.token(url)
    with database_down(app, tmp_path):
        during = client.get("/cds-services", headers=bearer(token))
        replayed = client.get("/cds-services", headers=bearer(token))
    assert during.status_code == 200
    assert replayed.status_code == 401, "the worker's memory still catches a replay"
    assert client.get("/cds-services", headers=bearer(token)).status_code == 401
    assert client.get("/cds-services", headers=bearer(issuer.token(url))).status_code == 200
