"""The pharmacists' console through the real app and a real SQLite store holding feedback
made by real hook calls (tests/console_data.py). The browser's view is in
tests/test_console_browser.py, the attacks in tests/security/test_console_attacks.py."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds_hooks.app import create_app
from cds_hooks.cli import main
from cds_hooks.config import ConfigError
from cds_hooks.console import _instance_secret_key
from cds_hooks.console.auth import hash_password
from cds_hooks.console.rates import rules_of_card
from cds_hooks.store import FeedbackFilter, get_store
from cds_hooks.store.console import DailyCount, daily_counts, set_console_user
from cds_hooks.store.schema import console_access, console_user
from tests.conftest import load_json
from tests.console_data import (
    COMMENT,
    HTTPS,
    PASSWORD,
    SIGN,
    captured_body,
    csrf_token,
    make_feedback,
    post_form,
    sign_in,
)
from tests.identity_provider import CLIENT_ID, CLIENT_SECRET, IdentityProvider


@pytest.fixture
def with_feedback(app: Flask, client: FlaskClient) -> dict[str, int]:
    set_console_user(get_store(app), "pharmacist", hash_password(PASSWORD))

    def post(path: str, body: dict[str, Any]) -> Any:
        response = client.post(path, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    return make_feedback(post)


@pytest.fixture
def signed_in(client: FlaskClient, with_feedback: dict[str, int]) -> FlaskClient:
    response = sign_in(client)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/console/overrides")
    return client


def get(client: FlaskClient, path: str) -> Any:
    return client.get(path, base_url=HTTPS)


def test_pages_need_a_sign_in(client: FlaskClient) -> None:
    for path in ("/console/overrides", "/console/rules", "/console/replay", "/console/export.csv"):
        response = get(client, path)
        assert response.status_code == 302, path
        assert response.headers["Location"].endswith("/console/login")


def test_sign_in_sets_a_secure_http_only_cookie(client: FlaskClient, with_feedback: Any) -> None:
    response = sign_in(client)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("baclofen_console=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/console"):
        assert flag in cookie


def test_a_wrong_password_is_refused(client: FlaskClient, with_feedback: Any) -> None:
    response = sign_in(client, password="not the password at all")
    assert response.status_code == 401
    assert b"Wrong user name or password" in response.data
    assert get(client, "/console/overrides").status_code == 302
    assert sign_in(client, username="nobody").status_code == 401


def test_overrides_per_topic_and_per_rule(signed_in: FlaskClient, app: Flask) -> None:
    page = get(signed_in, "/console/overrides").get_data(as_text=True)
    assert "Override rate" in page
    # The topic table counts every outcome sent.
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td><td>(\d+)</td>", page)
    assert sum(int(a) + int(o) for _, a, o in rows) == 32
    by_rule = get(signed_in, "/console/overrides?by=rule").get_data(as_text=True)
    assert "R4" in by_rule
    # Cards issued by this service count for the rules each one merged, as recorded.
    counts = daily_counts(get_store(app), FeedbackFilter())
    assert counts and all(row.rules for row in counts)
    knowledge = app.extensions["baclofen_knowledge"]
    assert rules_of_card(counts[0], knowledge) == counts[0].rules
    # A card issued before that record was kept counts for every rule of its topic.
    older = DailyCount(
        day=counts[0].day, service_id="s", card_topic="deceased", outcome="overridden", count=1
    )
    assert "R9" in rules_of_card(older, knowledge)
    assert rules_of_card(replace(older, card_topic=None), knowledge) == ()


def test_charts_are_svg_drawn_on_the_server(signed_in: FlaskClient) -> None:
    for path in ("/console/charts/override-rates.svg", "/console/charts/reasons.svg"):
        response = get(signed_in, path + "?by=rule")
        assert response.status_code == 200
        assert response.mimetype == "image/svg+xml"
        svg = response.get_data(as_text=True)
        assert "<svg" in svg
        # pygal's tooltip script, which it loads from the web, is off; and the SVG may run
        # no script of its own (its inline config) even if opened outside an <img>.
        assert "<script" not in svg.replace('<script type="text/javascript">window.pygal', "")
        assert "kozea" not in svg
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert "script" not in response.headers["Content-Security-Policy"]
    reasons = get(signed_in, "/console/charts/reasons.svg").get_data(as_text=True)
    assert "Intended action was performed previously without adverse effect" in reasons


def test_filters_narrow_the_counts(signed_in: FlaskClient, app: Flask) -> None:
    version = app.extensions["baclofen_knowledge"].version
    select_only = get(
        signed_in, f"/console/export.csv?service=baclofen-order-select&version={version}"
    )
    rows = list(csv.DictReader(io.StringIO(select_only.get_data(as_text=True))))
    assert rows and {row["service"] for row in rows} == {"baclofen-order-select"}
    unknown = get(signed_in, "/console/export.csv?version=1999.1.1")
    assert unknown.status_code == 400
    assert unknown.get_data(as_text=True) == "Invalid filter: Knowledge version.\n"
    assert (
        get(signed_in, "/console/export.csv?since=2999-01-01").get_data(as_text=True).count("\n")
        == 1
    )  # the header alone
    future = get(signed_in, "/console/overrides?since=2999-01-01").get_data(as_text=True)
    assert "No feedback for these filters." in future
    bad = get(signed_in, "/console/overrides?since=yesterday").get_data(as_text=True)
    assert "filter ignored" in bad


def test_export_is_the_override_table(signed_in: FlaskClient) -> None:
    response = get(signed_in, "/console/export.csv")
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert sum(int(row["count"]) for row in rows) == 32
    assert COMMENT not in response.get_data(as_text=True)


def test_comments_are_paged_and_every_view_is_logged(
    signed_in: FlaskClient, app: Flask, with_feedback: dict[str, int]
) -> None:
    comments = with_feedback["overridden"]  # every override came with a comment
    assert 20 < comments <= 40
    first = get(signed_in, "/console/comments").get_data(as_text=True)
    assert f"{comments} comment(s); page 1 of 2." in first
    assert first.count(COMMENT) == 20
    second = get(signed_in, "/console/comments?page=2").get_data(as_text=True)
    assert second.count(COMMENT) == comments - 20
    with get_store(app).engine.connect() as connection:
        views = connection.execute(select(console_access)).mappings().all()
    assert [(v["username"], v["page"], v["comments_shown"]) for v in views] == [
        ("pharmacist", 1, 20),
        ("pharmacist", 2, comments - 20),
    ]


def test_comments_past_the_retention_are_not_shown(
    tmp_path: Path, app_config: dict[str, Any]
) -> None:
    app = create_app({**app_config, "FEEDBACK_COMMENT_RETENTION_DAYS": 1})
    client = app.test_client()
    set_console_user(get_store(app), "pharmacist", hash_password(PASSWORD))
    store = get_store(app)
    from datetime import UTC, datetime, timedelta

    from cds_hooks.feedback import parse_feedback_request

    items = parse_feedback_request(
        {
            "feedback": [
                {
                    "card": "0b7f5a52-5c7e-4f55-9d0e-3f1f6f2b7a10",
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-22T10:06:02Z",
                    "overrideReason": {"userComment": "an old comment"},
                }
            ]
        }
    )
    store.record_feedback("baclofen-order-sign", items, datetime.now(UTC) - timedelta(days=2))
    sign_in(client)
    page = get(client, "/console/comments").get_data(as_text=True)
    assert "an old comment" not in page
    assert "0 comment(s)" in page


def test_rules_show_each_rule_with_its_override_rate(signed_in: FlaskClient, app: Flask) -> None:
    page = get(signed_in, "/console/rules").get_data(as_text=True)
    knowledge = app.extensions["baclofen_knowledge"]
    for rule in knowledge.rules:
        assert f"<td>{rule}</td>" in page
    assert re.search(r"<td>R9</td>.*?<td>\d+</td><td>\d+ %</td>", page, re.S)


def test_rules_show_the_policy_applied(tmp_path: Path, app_config: dict[str, Any]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[rules.R9]\nenabled = false\n", encoding="utf-8")
    app = create_app({**app_config, "POLICY_FILE": str(policy)})
    client = app.test_client()
    set_console_user(get_store(app), "pharmacist", hash_password(PASSWORD))
    sign_in(client)
    page = get(client, "/console/rules").get_data(as_text=True)
    assert str(policy) in page
    assert re.search(r'<tr class="disabled"><td>R9</td>', page)


def test_replay_shows_the_cards_as_an_ehr_does(signed_in: FlaskClient, app: Flask) -> None:
    page = get(signed_in, "/console/replay").data
    exchange = (Path(__file__).parent / "data" / "requests" / SIGN).read_text(encoding="utf-8")
    response = post_form(
        signed_in,
        "/console/replay",
        {"csrf_token": csrf_token(page), "request_json": exchange},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert 'class="card indicator-critical"' in html
    assert 'class="card indicator-warning"' in html
    assert "<strong>" in html or "<p>" in html  # the detail's Markdown, rendered
    assert '<button type="button" class="suggestion' in html
    assert "Finding:" in html and "rules R" in html


def test_replay_takes_an_uploaded_file_and_stores_nothing(
    signed_in: FlaskClient, app: Flask
) -> None:
    before = get(signed_in, "/console/export.csv").data
    page = get(signed_in, "/console/replay").data
    body = (Path(__file__).parent / "data" / "requests" / SIGN).read_bytes()
    response = post_form(
        signed_in,
        "/console/replay",
        {"csrf_token": csrf_token(page), "upload": (io.BytesIO(body), "case.json")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert b"indicator-critical" in response.data
    assert get(signed_in, "/console/export.csv").data == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", b"Paste a hook request"),
        ("{not json", b"not valid JSON"),
        ("[1, 2]", b"A hook request is a JSON object"),
        ('{"hook": "appointment-book"}', b"none of order-select"),
        ('{"hook": "order-sign", "context": 5}', b"would refuse this request"),
    ],
)
def test_replay_of_a_bad_request_says_why(
    signed_in: FlaskClient, text: str, message: bytes
) -> None:
    page = get(signed_in, "/console/replay").data
    response = post_form(
        signed_in,
        "/console/replay",
        {"csrf_token": csrf_token(page), "request_json": text},
    )
    assert response.status_code == 400
    assert message in response.data


def test_replay_never_calls_the_fhir_server(signed_in: FlaskClient) -> None:
    body = captured_body(SIGN)
    body["prefetch"] = {}
    body["fhirServer"] = "http://127.0.0.1:9/fhir"
    body["fhirAuthorization"] = {
        "access_token": "lent",
        "token_type": "Bearer",
        "scope": "x",
        "subject": "y",
        "expires_in": 300,
    }
    page = get(signed_in, "/console/replay").data
    import json

    response = post_form(
        signed_in,
        "/console/replay",
        {"csrf_token": csrf_token(page), "request_json": json.dumps(body)},
    )
    # Without prefetch or a server the patient is unobtainable: the service's own answer.
    assert response.status_code == 400
    assert b"would refuse this request" in response.data


def test_sign_out(signed_in: FlaskClient) -> None:
    page = get(signed_in, "/console/overrides").data
    response = post_form(signed_in, "/console/logout", {"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert get(signed_in, "/console/overrides").status_code == 302


def test_the_console_can_be_switched_off(app_config: dict[str, Any]) -> None:
    client = create_app({**app_config, "CONSOLE": "off"}).test_client()
    assert get(client, "/console/login").status_code == 404


def test_add_user_command(
    tmp_path: Path, app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("CDS_DATABASE_URL", app_config["DATABASE_URL"])
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["console", "add-user", "pharmacist", "--password-stdin"]) == 0
    assert "console user 'pharmacist' added" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "add-user", "pharmacist", "--password-stdin"]) == 2
    app = create_app(app_config)
    with get_store(app).engine.connect() as connection:
        stored = connection.execute(select(console_user.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    client = app.test_client()
    assert sign_in(client).status_code == 302
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + " changed\n"))
    assert main(["console", "add-user", "pharmacist", "--password-stdin"]) == 0
    assert "given a new password" in capsys.readouterr().out
    # A changed password ends the sessions signed in with the old one.
    assert get(client, "/console/overrides").status_code == 302
    assert sign_in(client, password=PASSWORD + " changed").status_code == 302
    assert main(["console", "remove-user", "pharmacist"]) == 0
    assert main(["console", "remove-user", "pharmacist"]) == 1
    assert get(client, "/console/overrides").status_code == 302  # so does removing the user
    assert sign_in(client, password=PASSWORD + " changed").status_code == 401


def test_captured_request_fixture_is_a_sandbox_exchange() -> None:
    assert load_json(f"requests/{SIGN}")["body"]["hook"] == "order-sign"


@pytest.fixture
def identity_provider() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


def oidc_app(app_config: dict[str, Any], provider: IdentityProvider, **more: Any) -> Flask:
    return create_app(
        {
            **app_config,
            "AUTH_MODE": "enforce",
            "PUBLIC_BASE_URL": "https://cds.example.org",
            "CONSOLE_OIDC_METADATA_URL": provider.metadata_url,
            "CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
            "CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            **more,
        }
    )


def through_the_provider(client: FlaskClient) -> Any:
    """Start the sign-in, let the provider answer as a browser would follow it, and
    come back to the console with its code."""
    start = get(client, "/console/oidc/login")
    assert start.status_code == 302
    at_provider = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)
    assert at_provider.status_code == 302
    back = urlsplit(at_provider.headers["Location"])
    assert back.path == "/console/oidc/callback"
    return get(client, f"{back.path}?{back.query}")


def test_sign_in_through_the_identity_provider(
    app_config: dict[str, Any], identity_provider: IdentityProvider
) -> None:
    # With OpenID Connect set up, the console is on in enforce mode with no password user.
    client = oidc_app(app_config, identity_provider).test_client()
    login = get(client, "/console/login")
    assert b"identity provider" in login.data
    signed_in = through_the_provider(client)
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"].endswith("/console/overrides")
    page = get(client, "/console/overrides")
    assert page.status_code == 200 and b"pharmacist@hospital.example" in page.data


def test_the_identity_provider_s_users_can_be_narrowed(
    app_config: dict[str, Any], identity_provider: IdentityProvider
) -> None:
    app = oidc_app(app_config, identity_provider, CONSOLE_OIDC_USERS="chief.pharmacist")
    client = app.test_client()
    refused = through_the_provider(client)
    assert refused.headers["Location"].endswith("/console/login")
    assert get(client, "/console/overrides").status_code == 302
    # A callback made up without going through the provider signs no one in either.
    forged = get(client, "/console/oidc/callback?code=made-up&state=made-up")
    assert forged.headers["Location"].endswith("/console/login")
    assert get(client, "/console/overrides").status_code == 302


def test_half_an_oidc_configuration_stops_start_up(app_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="CDS_CONSOLE_OIDC_CLIENT_ID"):
        create_app({**app_config, "CONSOLE_OIDC_METADATA_URL": "https://idp.example/.well-known"})


def test_the_session_key_is_kept_in_the_instance_folder(tmp_path: Path) -> None:
    """Made once, owner-only, the same for every worker; None where the folder cannot be
    written (a read-only container without CDS_SECRET_KEY: the console then stays off and
    the hooks still start)."""
    key = _instance_secret_key(str(tmp_path))
    assert key and len(key) >= 64
    assert _instance_secret_key(str(tmp_path)) == key
    assert (tmp_path / "console-secret-key").stat().st_mode & 0o777 == 0o600
    not_a_folder = tmp_path / "console-secret-key"
    assert _instance_secret_key(str(not_a_folder)) is None


def test_a_database_outage_is_a_page_not_a_500(
    signed_in: FlaskClient, app: Flask, tmp_path: Path
) -> None:
    """The feedback table dropped under the running app (a real broken database, no mock):
    the console says the database did not answer (503), and quotes nothing."""
    with get_store(app).engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE feedback")
    for path in ("/console/overrides", "/console/comments", "/console/export.csv"):
        response = get(signed_in, path)
        assert response.status_code == 503, path
        assert b"The database did not answer" in response.data
        assert COMMENT.encode() not in response.data
