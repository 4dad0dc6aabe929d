"""No personal health data or token in any log line, at DEBUG, on success and on errors.

One distinctive patient (name, identifier, birth date, logical id), a distinctive lent
FHIR token and a real JWT go through the real app along every path we can provoke:
success, fetch from a loopback FHIR server, 412, malformed and mis-shaped bodies, bad
prefetch, authentication failures, and a database failure (the replay table dropped under
the app: no mock, a real broken database; SQLAlchemy's message would quote the token id).
Logs are captured three ways: every LogRecord on the root logger (message, arguments and
extra fields), our JSON handler's output, and whatever reached the process's stdout/stderr.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks.app import create_app
from cds_hooks.console.auth import hash_password
from cds_hooks.knowledge import KNOWLEDGE_VERSION
from cds_hooks.logging import configure_logging
from cds_hooks.store import get_store
from cds_hooks.store.console import set_console_user
from tests.conftest import load_json, sqlite_url
from tests.console_data import HTTPS, PASSWORD, csrf_token, overridden, post_form, sign_in
from tests.fhir_server import FhirServer, ok, searchset, status
from tests.security.tokens import PUBLIC_BASE, Client, bearer

PATIENT_ID = "pt-ZQX-4471-phi"
GIVEN, FAMILY = "Zebulonia", "Quixphiwhistle"
MRN = "MRN-77441-PHI"
BIRTH_DATE = "1931-07-13"
LENT_TOKEN = "lent-token-Q9fP2-phi"
SERVICE_PATH = "/cds-services/baclofen-order-select"
SERVICE_URL = PUBLIC_BASE + SERVICE_PATH
SIGN_PATH = "/cds-services/baclofen-order-sign"
PSEUDONYM_KEY = "pseudonym-key-Kq7Zt-0123456789abcdefghij"
SNOOZE_SYSTEM = "https://baclofen-cds.org/CodeSystem/override-reason"


def distinctive_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": MRN}],
        "name": [{"use": "official", "family": FAMILY, "given": [GIVEN]}],
        "gender": "female",
        "birthDate": BIRTH_DATE,
    }


def hook_body() -> dict[str, Any]:
    capture = load_json("requests/sandbox-order-select-baclofen10-2tab-tid-spasticity.json")
    body: dict[str, Any] = json.loads(
        json.dumps(capture["body"]).replace("baclofen-pt-1", PATIENT_ID)
    )
    body["prefetch"]["patient"] = distinctive_patient()
    body["fhirAuthorization"] = {
        "access_token": LENT_TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "baclofen-cds",
    }
    return body


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v for k, v in record.__dict__.items() if k not in ("exc_info", "exc_text")}
        self.texts.append(record.getMessage() + " " + json.dumps(fields, default=repr))


@pytest.fixture
def ehr() -> Iterator[FhirServer]:
    with FhirServer() as server:
        server.route(f"Patient/{PATIENT_ID}", ok(distinctive_patient()))
        server.route("Observation", ok(searchset([])))
        server.route("MedicationRequest", ok(searchset([])))
        server.route("Condition", ok(searchset([])))
        yield server


@pytest.fixture
def ec_client() -> Client:
    return Client()


@pytest.fixture
def captured(
    tmp_path: Path, ehr: FhirServer, ec_client: Client
) -> Iterator[tuple[FlaskClient, Records, io.StringIO]]:
    app = create_app(
        {
            "TESTING": True,
            "ENV": "development",
            "AUTH_MODE": "enforce",
            "LOG_LEVEL": "DEBUG",
            "PUBLIC_BASE_URL": PUBLIC_BASE,
            "FHIR_ALLOWLIST": [ehr.base_url],
            "TRUSTED_ISSUERS": [ec_client.issuer_config()],
            "DATABASE_URL": sqlite_url(tmp_path, "store.sqlite3"),
            "PSEUDONYM_KEY": PSEUDONYM_KEY,
        }
    )
    json_lines = io.StringIO()
    configure_logging("DEBUG", stream=json_lines)
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        yield app.test_client(), records, json_lines
    finally:
        root.removeHandler(records)
        configure_logging("INFO")


def secrets(*jwts: str) -> list[str]:
    values = [PATIENT_ID, GIVEN, FAMILY, MRN, BIRTH_DATE, LENT_TOKEN, PSEUDONYM_KEY]
    for token in jwts:
        values += [part for part in token.split(".") if len(part) > 8]
    return values


def test_no_phi_or_token_in_logs_on_any_path(
    captured: tuple[FlaskClient, Records, io.StringIO],
    ec_client: Client,
    ehr: FhirServer,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    client, records, json_lines = captured
    used: list[str] = []
    refusals: list[str] = []

    def call(body: Any = None, *, raw: str | None = None, token: str | None = None) -> int:
        jwt = token or ec_client.token(SERVICE_URL)
        used.append(jwt)
        headers = {**bearer(jwt), "Content-Type": "application/json"}
        data = raw if raw is not None else json.dumps(body)
        response = client.post(SERVICE_PATH, data=data, headers=headers)
        if response.status_code != 200:
            refusals.append(response.get_data(as_text=True))
        return response.status_code

    statuses: dict[str, int] = {}
    statuses["evaluated from prefetch"] = call(hook_body())

    fetched = hook_body()
    del fetched["prefetch"]
    fetched["fhirServer"] = ehr.base_url
    statuses["evaluated from the FHIR server"] = call(fetched)
    assert ehr.requests and all(LENT_TOKEN in r.headers["Authorization"] for r in ehr.requests)

    ehr.route(f"Patient/{PATIENT_ID}", status(404))
    statuses["patient unobtainable"] = call(fetched)

    statuses["malformed JSON"] = call(raw=json.dumps(hook_body())[:-7] + f'"{FAMILY}" ,,')
    wrong_hook = hook_body()
    wrong_hook["hook"] = f"{GIVEN}-{MRN}"
    statuses["wrong hook"] = call(wrong_hook)
    statuses["not an object"] = call([distinctive_patient()])
    bad_prefetch = hook_body()
    bad_prefetch["prefetch"]["patient"] = {
        **distinctive_patient(),
        "birthDate": f"{BIRTH_DATE}{FAMILY}",
    }
    bad_prefetch["prefetch"]["egfr"] = {"resourceType": "Bundle", "entry": [{"resource": MRN}]}
    bad_prefetch["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"] = GIVEN
    statuses["bad prefetch and draft"] = call(bad_prefetch)
    statuses["authentication failed"] = call(
        hook_body(), token=ec_client.token("https://elsewhere.example", sub=f"{GIVEN} {FAMILY}")
    )
    statuses["replayed token"] = call(hook_body(), token=used[0])
    with sqlite3.connect(tmp_path / "store.sqlite3") as database:
        database.execute("DROP TABLE jwt_replay")
    statuses["store broken: replay check in memory"] = call(hook_body())

    assert statuses["evaluated from prefetch"] == 200
    assert statuses["evaluated from the FHIR server"] == 200
    assert statuses["patient unobtainable"] == 412
    assert statuses["malformed JSON"] == 400
    assert statuses["wrong hook"] == 400
    assert statuses["not an object"] == 400
    assert statuses["bad prefetch and draft"] == 200, "bad prefetch is read as missing data"
    assert statuses["store broken: replay check in memory"] == 200
    assert statuses["authentication failed"] == 401
    assert statuses["replayed token"] == 401

    out, err = capfd.readouterr()
    logged_json = json_lines.getvalue()
    assert records.texts and logged_json, "logs were captured"
    for line in logged_json.splitlines():
        json.loads(line)
    summaries = [json.loads(line) for line in logged_json.splitlines() if "request handled" in line]
    evaluated = [s for s in summaries if s.get("hook") == "order-select"]
    assert evaluated, "a summary line per evaluated call"
    for summary in evaluated:
        assert summary["service"] == "baclofen-order-select"
        assert summary["hook_instance"] == hook_body()["hookInstance"]
        assert summary["status"] == 200 and summary["card_count"] >= 0
        assert isinstance(summary["topics"], list) and summary["request_id"]
        assert summary["issuer"] == ec_client.iss and summary["duration_ms"] >= 0
    everything = {
        "records": "\n".join(records.texts),
        "json": logged_json,
        "stdout+stderr": out + err,
        "error responses": "\n".join(refusals),
    }
    for secret in secrets(*used):
        for where, text in everything.items():
            assert secret not in text, f"{secret!r} leaked into {where}"


def test_snooze_writes_no_phi_to_the_database_or_logs(
    captured: tuple[FlaskClient, Records, io.StringIO],
    ec_client: Client,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Cards recorded, remembered for order-sign (PDDI-CDS), snoozed by feedback and held
    back: the database holds pseudonyms, codes and numbers, never the patient."""
    client, records, json_lines = captured
    used: list[str] = []

    def post(path: str, body: Any) -> Any:
        jwt = ec_client.token(PUBLIC_BASE + path)
        used.append(jwt)
        response = client.post(path, json=body, headers=bearer(jwt))
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    selected = hook_body()
    selected["extension"] = {"pddi-configuration-items": {"cache-for-order-sign-filtering": True}}
    cards = post(SERVICE_PATH, selected)["cards"]
    signed = hook_body()
    signed["hook"] = "order-sign"
    del signed["context"]["selections"]
    signed["extension"] = {"pddi-configuration-items": {"filter-out-repeated-alerts": True}}
    post(SIGN_PATH, signed)
    [snoozable, *_] = [
        card for card in cards if any(r["system"] == SNOOZE_SYSTEM for r in card["overrideReasons"])
    ]
    outcome = {
        "card": snoozable["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-12-07T10:00:00Z",
        "overrideReason": {"reason": {"system": SNOOZE_SYSTEM, "code": "snooze-3-months"}},
    }
    assert post(f"{SERVICE_PATH}/feedback", {"feedback": [outcome]})["snoozed"] == 1
    again = post(SERVICE_PATH, hook_body())["cards"]
    assert snoozable["source"]["topic"] not in [card["source"]["topic"] for card in again]

    with sqlite3.connect(tmp_path / "store.sqlite3") as database:
        dump = "\n".join(database.iterdump())
    assert "card_issue" in dump and "snooze" in dump
    draft = hook_body()["context"]["draftOrders"]["entry"][0]["resource"]
    never_stored = [
        *secrets(),
        hook_body()["context"]["userId"],
        draft["id"],
        draft["medicationCodeableConcept"]["text"],
        '"resourceType"',
    ]
    for value in never_stored:
        assert value not in dump, f"{value!r} stored in the database"
    out, err = capfd.readouterr()
    logs = "\n".join(records.texts) + json_lines.getvalue() + out + err
    assert "held_back" in json_lines.getvalue()
    for secret in secrets(*used):
        assert secret not in logs, f"{secret!r} leaked into the logs"


def test_exceptions_are_logged_without_their_message(
    captured: tuple[FlaskClient, Records, io.StringIO],
) -> None:
    _, _, json_lines = captured
    try:
        raise ValueError(f"invalid birthDate {BIRTH_DATE} for {GIVEN} {FAMILY}")
    except ValueError:
        logging.getLogger("cds_hooks.test").exception("parsing failed")
    line = json.loads(json_lines.getvalue().splitlines()[-1])
    assert line["message"] == "parsing failed"
    assert line["exception"].startswith("ValueError (message withheld) at test_logging_phi.py:")
    assert BIRTH_DATE not in json_lines.getvalue() and GIVEN not in json_lines.getvalue()


def test_every_log_line_names_the_knowledge_version(
    captured: tuple[FlaskClient, Records, io.StringIO],
) -> None:
    client, _, json_lines = captured
    client.get("/healthz")
    logging.getLogger("cds_hooks.test").warning("something to report")
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines() if line.strip()]
    assert lines
    assert {line["knowledge_version"] for line in lines} == {KNOWLEDGE_VERSION}


def test_the_console_writes_no_phi_to_logs_or_database(
    captured: tuple[FlaskClient, Records, io.StringIO],
    ec_client: Client,
    ehr: FhirServer,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A pharmacist replays the distinctive patient's request in the console (pasted, as a
    captured exchange, broken, and refused), and reads every page; a clinician's feedback on
    one of its cards comes in through the hook path. Nothing of the patient reaches a log,
    stdout/stderr or any table of the database; the lent token neither, nor the FHIR server
    (the replay never calls it)."""
    client, records, json_lines = captured
    set_console_user(get_store(client.application), "pharmacist", hash_password(PASSWORD))
    assert sign_in(client).status_code == 302

    def replay(text: str) -> Any:
        page = client.get("/console/replay", base_url=HTTPS).data
        return post_form(
            client, "/console/replay", {"csrf_token": csrf_token(page), "request_json": text}
        )

    body = hook_body()
    body["fhirServer"] = ehr.base_url
    answered = replay(json.dumps(body))
    assert answered.status_code == 200 and b'class="card' in answered.data
    exchange = {"path": SERVICE_PATH, "headers": {}, "body": body}
    assert replay(json.dumps(exchange)).status_code == 200
    assert replay(json.dumps(body)[:-9] + f'"{FAMILY}",,').status_code == 400
    refused = hook_body()
    del refused["prefetch"]
    refused["fhirServer"] = ehr.base_url
    assert replay(json.dumps(refused)).status_code == 400
    assert not ehr.requests, "the replay never calls a FHIR server"

    jwt = ec_client.token(SERVICE_URL)
    cards = client.post(SERVICE_PATH, json=hook_body(), headers=bear(jwt)).get_json()["cards"]
    feedback_url = SERVICE_URL + "/feedback"
    feedback_jwt = ec_client.token(feedback_url)
    sent = client.post(
        SERVICE_PATH + "/feedback",
        json=overridden(cards[0]["uuid"], {"reason": cards[0]["overrideReasons"][0]}),
        headers=bear(feedback_jwt),
    )
    assert sent.status_code == 200
    for path in ("overrides", "comments", "rules", "export.csv", "charts/override-rates.svg"):
        assert client.get(f"/console/{path}?by=rule", base_url=HTTPS).status_code == 200

    out, err = capfd.readouterr()
    with sqlite3.connect(tmp_path / "store.sqlite3") as database:
        stored = "\n".join(database.iterdump())
    assert "console_access" in stored and "feedback" in stored
    everything = {
        "records": "\n".join(records.texts),
        "json": json_lines.getvalue(),
        "stdout+stderr": out + err,
        "database": stored,
    }
    for secret in secrets(jwt, feedback_jwt):
        for where, text in everything.items():
            assert secret not in text, f"{secret!r} leaked into {where}"


def bear(jwt: str) -> dict[str, str]:
    return {**bearer(jwt), "Content-Type": "application/json"}
