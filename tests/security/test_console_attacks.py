"""The attack suite against the pharmacists' console: the real app in ``enforce`` mode
(tests/security/conftest.py), where the console stays hidden until a console user exists.
Each attack is refused, and the console and the hooks serve normally right after it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from cds_hooks.app import create_app
from cds_hooks.console.auth import hash_password
from cds_hooks.store import get_store
from cds_hooks.store.console import set_console_user
from tests.console_data import HTTPS, PASSWORD, csrf_token, overridden, post_form, sign_in
from tests.security.test_attacks import (
    SERVICE_PATH,
    SERVICE_URL,
    assert_still_serving,
    hook_body,
    needs_the_fhir_server,
)
from tests.security.tokens import Client, bearer

PAGES = (
    "/console/",
    "/console/overrides",
    "/console/comments",
    "/console/rules",
    "/console/replay",
    "/console/export.csv",
    "/console/charts/override-rates.svg",
    "/console/charts/reasons.svg",
)


@pytest.fixture
def console(app: Flask) -> Flask:
    set_console_user(get_store(app), "pharmacist", hash_password(PASSWORD))
    return app


@pytest.fixture
def signed_in(console: Flask, client: FlaskClient) -> Iterator[FlaskClient]:
    assert sign_in(client).status_code == 302
    yield client
    # The console still serves the signed-in user after the attack, and the hooks their EHR.
    assert client.get("/console/overrides", base_url=HTTPS).status_code == 200


def get(client: FlaskClient, path: str, **kwargs: Any) -> Any:
    return client.get(path, base_url=HTTPS, **kwargs)


def assert_sent_to_sign_in(response: Any) -> None:
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/console/login")


def test_hidden_in_enforce_mode_until_a_user_exists(
    app: Flask, client: FlaskClient, ec_client: Client
) -> None:
    for path in (*PAGES, "/console/login"):
        assert get(client, path).status_code == 404, path
    set_console_user(get_store(app), "pharmacist", hash_password(PASSWORD))
    assert get(client, "/console/login").status_code == 200
    assert_still_serving(client, ec_client)


def test_switched_off_it_is_not_there_at_all(app_config: dict[str, Any]) -> None:
    app = create_app({**app_config, "CONSOLE": "off"})
    set_console_user(get_store(app), "pharmacist", hash_password(PASSWORD))
    client = app.test_client()
    for path in (*PAGES, "/console/login"):
        # Not the console's 404: no console route exists, so caller authentication answers.
        assert get(client, path).status_code == 401, path


def test_every_page_needs_a_console_sign_in(
    console: Flask, client: FlaskClient, ec_client: Client
) -> None:
    for path in PAGES:
        assert_sent_to_sign_in(get(client, path))
        # An EHR's token for the hooks is no pharmacist's sign-in.
        token = ec_client.token(HTTPS + path)
        assert_sent_to_sign_in(get(client, path, headers=bearer(token)))
    assert_still_serving(client, ec_client)


def test_a_console_session_opens_no_hook(signed_in: FlaskClient, ec_client: Client) -> None:
    response = signed_in.post(SERVICE_PATH, json=hook_body())
    assert response.status_code == 401
    assert_still_serving(signed_in, ec_client)


def test_a_forged_session_cookie_is_not_believed(console: Flask, client: FlaskClient) -> None:
    forged = URLSafeTimedSerializer("guessed-secret", salt="cookie-session").dumps(
        {"console_user": "pharmacist"}
    )
    client.set_cookie("baclofen_console", forged, domain="localhost", path="/console")
    assert_sent_to_sign_in(get(client, "/console/overrides"))


@pytest.mark.parametrize("path", ["/console/login", "/console/replay", "/console/logout"])
def test_forms_need_their_csrf_token(signed_in: FlaskClient, path: str) -> None:
    data = {"username": "pharmacist", "password": PASSWORD, "request_json": "{}"}
    refused = post_form(signed_in, path, data)
    assert refused.status_code == 400 and b"Form refused" in refused.data
    assert post_form(signed_in, path, {**data, "csrf_token": "forged"}).status_code == 400


def test_a_csrf_token_from_another_session_is_refused(
    console: Flask, signed_in: FlaskClient
) -> None:
    stranger = console.test_client()
    their_token = csrf_token(get(stranger, "/console/login").data)
    response = post_form(signed_in, "/console/logout", {"csrf_token": their_token})
    assert response.status_code == 400


def test_a_form_posted_from_another_site_is_refused(signed_in: FlaskClient) -> None:
    token = csrf_token(get(signed_in, "/console/replay").data)
    response = signed_in.post(
        "/console/replay",
        data={"csrf_token": token, "request_json": "{}"},
        base_url=HTTPS,
        headers={"Referer": "https://evil.example/console/replay"},
    )
    assert response.status_code == 400


def test_sign_in_attempts_are_rate_limited(console: Flask, client: FlaskClient) -> None:
    for _ in range(5):
        assert sign_in(client, password="wrong password guess").status_code == 401
    refused = sign_in(client, password="wrong password guess")
    assert refused.status_code == 429 and b"Too many sign-in attempts" in refused.data
    assert sign_in(client).status_code == 429  # even the right one, until the window passes
    # Reading pages is not limited: only attempts to sign in are.
    assert get(client, "/console/login").status_code == 200


def test_the_session_cookie_is_secure_and_http_only(console: Flask, client: FlaskClient) -> None:
    cookie = sign_in(client).headers["Set-Cookie"]
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_pages_forbid_framing_and_foreign_content(signed_in: FlaskClient) -> None:
    for path in ("/console/overrides", "/console/replay", "/console/rules"):
        headers = get(signed_in, path).headers
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "script-src" not in policy  # so no script runs at all
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"


def test_markup_in_a_comment_is_shown_as_text(
    signed_in: FlaskClient, console: Flask, ec_client: Client
) -> None:
    cards = signed_in.post(
        SERVICE_PATH, json=hook_body(), headers=bearer(ec_client.token(SERVICE_URL))
    ).get_json()["cards"]
    feedback_url = SERVICE_URL + "/feedback"
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    sent = signed_in.post(
        SERVICE_PATH + "/feedback",
        json=overridden(cards[0]["uuid"], {"userComment": attack}),
        headers=bearer(ec_client.token(feedback_url)),
    )
    assert sent.status_code == 200
    page = get(signed_in, "/console/comments").get_data(as_text=True)
    assert attack not in page and "&lt;script&gt;" in page


def test_markup_in_a_replayed_request_is_shown_as_text(signed_in: FlaskClient) -> None:
    body = hook_body()
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    attack = "<img src=x onerror=alert(1)>[click](javascript:alert(1))"
    order["dosageInstruction"][0]["text"] = attack
    order["medicationCodeableConcept"]["text"] = attack
    token = csrf_token(get(signed_in, "/console/replay").data)
    response = post_form(
        signed_in, "/console/replay", {"csrf_token": token, "request_json": json.dumps(body)}
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'class="card indicator-' in page
    assert "<img src=x" not in page and 'href="javascript:' not in page


def test_a_replay_never_connects_anywhere(
    signed_in: FlaskClient, connections: list[Any], ec_client: Client
) -> None:
    token = csrf_token(get(signed_in, "/console/replay").data)
    for server in ("http://169.254.169.254/latest", "https://ehr.example.org/fhir"):
        body = needs_the_fhir_server(server)
        response = post_form(
            signed_in, "/console/replay", {"csrf_token": token, "request_json": json.dumps(body)}
        )
        assert response.status_code == 400
    assert connections == []
    assert_still_serving(signed_in, ec_client)


def test_filters_are_choices_not_sql(signed_in: FlaskClient) -> None:
    for query in ("version=' OR 1=1 --", "service=x'; DROP TABLE feedback; --", "since=1' OR '1"):
        assert get(signed_in, f"/console/export.csv?{query}").status_code == 400
    assert get(signed_in, "/console/export.csv").status_code == 200


def test_an_oversized_upload_is_refused(signed_in: FlaskClient, console: Flask) -> None:
    token = csrf_token(get(signed_in, "/console/replay").data)
    too_big = "x" * (console.config["MAX_CONTENT_LENGTH"] + 1)
    response = post_form(
        signed_in, "/console/replay", {"csrf_token": token, "request_json": too_big}
    )
    assert response.status_code == 413
