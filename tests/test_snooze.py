"""Snooze kept by the service, and the PDDI-CDS order-select → order-sign de-duplication.

The calls are the CDS Hooks sandbox's own (tests/data/requests, captured from it): an
order-select on every change of the order form, an order-sign at the end, feedback when
the prescriber dismisses a card with a reason. The store is a real SQLite file here, and
a real PostgreSQL server shared by two app instances in the ``postgres`` tests.
"""

from __future__ import annotations

import copy
import json
import tomllib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text, update

from cards import same_advice
from cards.render import EXTENSION, catalogue
from cds_hooks.app import create_app
from cds_hooks.config import ConfigError
from cds_hooks.model import Topic
from cds_hooks.store import get_store
from cds_hooks.store.schema import card_issue
from cds_hooks.store.schema import snooze as snooze_table
from tests.conftest import load_json, sqlite_url, upgraded
from tests.scenario_requests import build_request
from tests.test_cli import run_cli

KEY = "pseudonym-key-for-tests-0123456789abcdef"
NEW_KEY = "a-newer-pseudonym-key-for-tests-fedcba9876543210"
SNOOZE_SYSTEM = "https://baclofen-cds.org/CodeSystem/override-reason"
SELECT = "/cds-services/baclofen-order-select"
SIGN = "/cds-services/baclofen-order-sign"
SCENARIOS = Path(__file__).parent / "data" / "scenarios" / "scenarios.toml"


def sandbox_select(tablets: int = 2) -> dict[str, Any]:
    """The sandbox's order-select for baclofen 10 mg, ``tablets`` three times a day."""
    body: dict[str, Any] = copy.deepcopy(
        load_json("requests/sandbox-order-select-baclofen10-2tab-tid-spasticity.json")["body"]
    )
    body["hookInstance"] = str(uuid.uuid4())
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = tablets
    return body


def sandbox_sign(tablets: int = 2) -> dict[str, Any]:
    """The order-sign the sandbox sends for the same draft when the prescriber signs."""
    body = sandbox_select(tablets)
    body["hook"] = "order-sign"
    del body["context"]["selections"]
    return body


def with_pddi(body: dict[str, Any], **items: bool) -> dict[str, Any]:
    body["extension"] = {
        "pddi-configuration-items": {name.replace("_", "-"): on for name, on in items.items()}
    }
    return body


def call(client: FlaskClient, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(url, json=body)
    assert response.status_code == 200, response.get_json()
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def topics(cards: list[dict[str, Any]]) -> list[str]:
    return [card["source"]["topic"]["code"] for card in cards]


def card_of(cards: list[dict[str, Any]], topic: str) -> dict[str, Any]:
    [card] = [c for c in cards if c["source"]["topic"]["code"] == topic]
    return card


def overridden(
    client: FlaskClient, card: dict[str, Any], code: str = "snooze-3-months", url: str = SIGN
) -> Any:
    """The feedback the sandbox posts when the prescriber dismisses ``card`` with ``code``."""
    entry = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "overrideReason": {"reason": {"code": code, "system": SNOOZE_SYSTEM}},
    }
    response = client.post(f"{url}/feedback", json={"feedback": [entry]})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "TESTING": True,
        "ENV": "development",
        "DATABASE_URL": sqlite_url(tmp_path),
        "PSEUDONYM_KEY": KEY,
    }


def test_a_snoozed_card_stays_away_through_the_sandbox_flow(client: FlaskClient) -> None:
    for tablets in (1, 2, 2):  # the prescriber changes the form: one order-select each time
        selected = call(client, SELECT, sandbox_select(tablets))
    signed = call(client, SIGN, sandbox_sign())
    assert "geriatric" in topics(signed)
    geriatric = card_of(signed, "geriatric")
    offered = {r["code"] for r in geriatric["overrideReasons"] if r["system"] == SNOOZE_SYSTEM}
    assert offered == {"snooze-1-week", "snooze-3-months"}

    assert overridden(client, geriatric) == {"received": 1, "stored": 1, "snoozed": 1}

    again = call(client, SELECT, sandbox_select())
    assert "geriatric" not in topics(again)
    # Only the snoozed advice: the other cards of the same call still come.
    assert sorted(topics(again)) == sorted(t for t in topics(selected) if t != "geriatric")
    assert "geriatric" not in topics(call(client, SIGN, sandbox_sign()))
    # A lower dose is still the same advice; a higher one is not.
    assert "geriatric" not in topics(call(client, SELECT, sandbox_select(1)))
    assert "geriatric" in topics(call(client, SELECT, sandbox_select(3)))


def test_snooze_reasons_are_offered_only_on_topics_that_may_be_snoozed(
    client: FlaskClient,
) -> None:
    cards = call(client, SIGN, sandbox_sign())
    for card in cards:
        codes = {r["code"] for r in card["overrideReasons"]}
        snoozable = bool(same_advice(Topic(card["source"]["topic"]["code"])))
        assert codes & {"snooze-1-week", "snooze-3-months"} == (
            {"snooze-1-week", "snooze-3-months"} if snoozable else set()
        )


def test_critical_topics_are_never_snoozed_by_the_catalogue() -> None:
    # Intravenous or otherwise wrong route, dialysis, an intrathecal pump stopped: a card
    # that can kill within hours comes back on every call.
    for topic in (Topic.ROUTE, Topic.DIALYSIS, Topic.WITHDRAWAL, Topic.INTRATHECAL_DOSE):
        assert not same_advice(topic)
        assert "same_advice" not in catalogue().topics[topic.value]


def _scenario(scenario_id: str) -> dict[str, Any]:
    rows = tomllib.loads(SCENARIOS.read_text(encoding="utf-8"))["scenario"]
    [row] = [r for r in rows if r["id"] == scenario_id]
    return dict(row)


@pytest.mark.parametrize(
    ("scenario", "topic"),
    [
        ("stop-intrathecal", "withdrawal"),
        ("intrathecal-product-iv", "route"),
        ("dialysis-on-record", "dialysis"),
    ],
)
def test_a_critical_card_comes_back_whatever_the_feedback(
    client: FlaskClient, scenario: str, topic: str
) -> None:
    cards = call(client, SIGN, build_request(_scenario(scenario), date.today()))
    card = card_of(cards, topic)
    assert card["indicator"] == "critical"
    assert not any(r["system"] == SNOOZE_SYSTEM for r in card["overrideReasons"])

    # An EHR may send any code it likes: the service still does not snooze this advice.
    assert overridden(client, card)["snoozed"] == 0
    again = call(client, SIGN, build_request(_scenario(scenario), date.today()))
    assert card_of(again, topic)["indicator"] == "critical"


def test_a_snooze_is_for_one_patient(client: FlaskClient) -> None:
    geriatric = card_of(call(client, SIGN, sandbox_sign()), "geriatric")
    overridden(client, geriatric)
    other = json.loads(json.dumps(sandbox_select()).replace("baclofen-pt-1", "another-patient"))
    assert "geriatric" in topics(call(client, SELECT, other))


def test_a_snooze_ends_when_its_period_does(app: Flask, client: FlaskClient) -> None:
    geriatric = card_of(call(client, SIGN, sandbox_sign()), "geriatric")
    assert overridden(client, geriatric, "snooze-1-week")["snoozed"] == 1
    store = get_store(app)
    with store.engine.begin() as connection:
        connection.execute(
            update(snooze_table).values(until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert "geriatric" in topics(call(client, SELECT, sandbox_select()))
    store.purge_subjects()
    with store.engine.connect() as connection:
        assert connection.execute(select(snooze_table)).all() == []


def test_other_override_reasons_do_not_snooze(client: FlaskClient) -> None:
    geriatric = card_of(call(client, SIGN, sandbox_sign()), "geriatric")
    entry = {
        "card": geriatric["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-12-07T10:00:00Z",
        "overrideReason": {
            "reason": {
                "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                "code": "risk-benefit-ratio",
            }
        },
    }
    assert client.post(f"{SIGN}/feedback", json={"feedback": [entry]}).status_code == 200
    assert "geriatric" in topics(call(client, SELECT, sandbox_select()))


def test_without_a_pseudonym_key_nothing_is_snoozed_or_offered(
    app_config: dict[str, Any],
) -> None:
    del app_config["PSEUDONYM_KEY"]
    client = create_app(app_config).test_client()
    cards = call(client, SIGN, sandbox_sign())
    assert not any(
        r["code"].startswith("snooze") for card in cards for r in card["overrideReasons"]
    )
    assert overridden(client, card_of(cards, "geriatric"))["snoozed"] == 0
    assert "geriatric" in topics(call(client, SELECT, sandbox_select()))


def test_the_issuance_record_names_every_rule_a_card_merges(
    app: Flask, client: FlaskClient
) -> None:
    cards = call(client, SIGN, sandbox_sign())
    with get_store(app).engine.connect() as connection:
        rows = {row.card_uuid: row for row in connection.execute(select(card_issue)).all()}
    assert set(rows) == {card["uuid"] for card in cards}
    for card in cards:
        provenance = card["extension"][EXTENSION]
        card_rules = list(dict.fromkeys(reason["rule"] for reason in provenance["rules"]))
        assert rows[card["uuid"]].rules == card_rules
        assert rows[card["uuid"]].topic == card["source"]["topic"]["code"]
        snoozable = same_advice(Topic(card["source"]["topic"]["code"]))
        assert (rows[card["uuid"]].subject_key is not None) == bool(snoozable)


def test_a_rotated_key_keeps_running_snoozes_and_a_dropped_key_ends_them(
    app_config: dict[str, Any],
) -> None:
    client = create_app(app_config).test_client()
    overridden(client, card_of(call(client, SIGN, sandbox_sign()), "geriatric"))

    rotated = create_app(
        app_config | {"PSEUDONYM_KEY": NEW_KEY, "PSEUDONYM_PREVIOUS_KEYS": KEY}
    ).test_client()
    assert "geriatric" not in topics(call(rotated, SELECT, sandbox_select()))

    dropped = create_app(app_config | {"PSEUDONYM_KEY": NEW_KEY}).test_client()
    assert "geriatric" in topics(call(dropped, SELECT, sandbox_select()))


@pytest.mark.parametrize("key", ["short", "x" * 31])
def test_a_short_pseudonym_key_stops_start_up_without_quoting_it(
    app_config: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        create_app(app_config | {"PSEUDONYM_KEY": key})
    assert key not in str(refused.value)


# --- PDDI-CDS: order-select cards left out of the order-sign, when the EHR asks ------------


def test_order_sign_leaves_out_what_order_select_showed_when_asked(client: FlaskClient) -> None:
    shown = call(client, SELECT, with_pddi(sandbox_select(), cache_for_order_sign_filtering=True))
    assert shown
    signed = call(client, SIGN, with_pddi(sandbox_sign(), filter_out_repeated_alerts=True))
    # Kidney function unknown is never held back (missing data is never read as normal).
    assert set(topics(signed)) == {t for t in topics(shown) if not same_advice(Topic(t))}


def test_order_sign_keeps_a_card_whose_advice_changed_since_order_select(
    client: FlaskClient,
) -> None:
    call(client, SELECT, with_pddi(sandbox_select(1), cache_for_order_sign_filtering=True))
    signed = call(client, SIGN, with_pddi(sandbox_sign(3), filter_out_repeated_alerts=True))
    assert "geriatric" in topics(signed)


@pytest.mark.parametrize(
    ("select_items", "sign_items"),
    [
        ({}, {}),
        ({}, {"filter_out_repeated_alerts": True}),
        ({"cache_for_order_sign_filtering": True}, {}),
        ({"cache_for_order_sign_filtering": False}, {"filter_out_repeated_alerts": True}),
    ],
)
def test_nothing_is_left_out_unless_both_calls_ask(
    client: FlaskClient, select_items: dict[str, bool], sign_items: dict[str, bool]
) -> None:
    shown = call(client, SELECT, with_pddi(sandbox_select(), **select_items))
    signed = call(client, SIGN, with_pddi(sandbox_sign(), **sign_items))
    assert sorted(topics(signed)) == sorted(
        {*topics(shown), *topics(call(client, SIGN, sandbox_sign()))}
    )


def test_a_malformed_pddi_item_is_refused(client: FlaskClient) -> None:
    body = sandbox_sign()
    body["extension"] = {"pddi-configuration-items": {"filter-out-repeated-alerts": "yes"}}
    response = client.post(SIGN, json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == [
        "extension.pddi-configuration-items.filter-out-repeated-alerts"
    ]


# --- several instances sharing PostgreSQL ----------------------------------------------------


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[[], Flask]]:
    apps: list[Flask] = []
    upgraded(database_url)

    def build() -> Flask:
        app = create_app(
            {
                "TESTING": True,
                "ENV": "development",
                "DATABASE_URL": database_url,
                "PSEUDONYM_KEY": KEY,
            }
        )
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_store(app).dispose()


@pytest.mark.postgres
def test_a_snooze_made_on_one_instance_holds_on_another(make_app: Callable[[], Flask]) -> None:
    first, second = make_app().test_client(), make_app().test_client()
    for _ in range(3):
        call(first, SELECT, sandbox_select())
    geriatric = card_of(call(first, SIGN, sandbox_sign()), "geriatric")
    assert overridden(first, geriatric)["snoozed"] == 1

    assert "geriatric" not in topics(call(second, SELECT, sandbox_select()))
    assert "geriatric" not in topics(call(first, SELECT, sandbox_select()))

    withdrawal = card_of(
        call(second, SIGN, build_request(_scenario("stop-intrathecal"), date.today())),
        "withdrawal",
    )
    assert overridden(second, withdrawal)["snoozed"] == 0
    again = build_request(_scenario("stop-intrathecal"), date.today())
    assert card_of(call(first, SIGN, again), "withdrawal")["indicator"] == "critical"


@pytest.mark.postgres
def test_order_sign_on_another_instance_leaves_out_order_select_cards(
    make_app: Callable[[], Flask],
) -> None:
    first, second = make_app().test_client(), make_app().test_client()
    shown = call(first, SELECT, with_pddi(sandbox_select(), cache_for_order_sign_filtering=True))
    signed = call(second, SIGN, with_pddi(sandbox_sign(), filter_out_repeated_alerts=True))
    assert set(topics(signed)) == {t for t in topics(shown) if not same_advice(Topic(t))}


def test_snooze_purge_forgets_old_pseudonyms_and_purge_all_forgets_everything(
    app: Flask, client: FlaskClient, app_config: dict[str, Any], tmp_path: Path
) -> None:
    overridden(client, card_of(call(client, SIGN, sandbox_sign()), "geriatric"))
    database = app_config["DATABASE_URL"]

    def pseudonyms() -> tuple[int, int]:
        with get_store(app).engine.connect() as connection:
            kept = connection.execute(
                select(card_issue.c.card_uuid).where(card_issue.c.subject_key.is_not(None))
            ).all()
            return len(kept), len(connection.execute(select(snooze_table)).all())

    before = pseudonyms()
    assert before[0] > 0 and before[1] == 1
    result = run_cli("snooze", "purge", tmp_path=tmp_path, database_url=database)
    assert result.returncode == 0, result.stderr
    assert pseudonyms() == before, "nothing is old enough yet"

    result = run_cli("snooze", "purge", "--all", tmp_path=tmp_path, database_url=database)
    assert result.returncode == 0, result.stderr
    assert "every snooze and pseudonym" in result.stdout
    assert pseudonyms() == (0, 0)
    assert "geriatric" in topics(call(client, SELECT, sandbox_select()))
    with get_store(app).engine.connect() as connection:
        kept = connection.execute(select(card_issue.c.rules)).all()
    assert kept, "topics and rules of issued cards stay for the override rates"


def test_pseudonyms_are_erased_by_the_service_after_their_retention(
    app: Flask, client: FlaskClient
) -> None:
    call(client, SIGN, sandbox_sign())
    store = get_store(app)
    store.purge_subjects(datetime.now(UTC) + timedelta(days=8))
    with store.engine.connect() as connection:
        rows = connection.execute(select(card_issue)).all()
    assert rows and all(row.subject_key is None and row.daily_dose is None for row in rows)


def with_gabapentin(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with an active gabapentin order besides the lorazepam and oxycodone."""
    entries = body["prefetch"]["activeMeds"]["entry"]
    added = copy.deepcopy(entries[0])
    added["fullUrl"] = added["fullUrl"].replace("medrx-lzp-1", "medrx-gbp-1")
    added["resource"]["id"] = "medrx-gbp-1"
    added["resource"]["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "310431",
                "display": "gabapentin 300 MG Oral Capsule",
            }
        ],
        "text": "gabapentin 300 MG Oral Capsule",
    }
    entries.append(added)
    body["prefetch"]["activeMeds"]["total"] = len(entries)
    return body


def test_a_new_interacting_drug_brings_a_snoozed_interaction_card_back(
    client: FlaskClient,
) -> None:
    depressant = card_of(call(client, SIGN, sandbox_sign()), "cns-depressant")
    assert overridden(client, depressant)["snoozed"] == 1
    assert "cns-depressant" not in topics(call(client, SELECT, sandbox_select()))
    assert "cns-depressant" in topics(call(client, SELECT, with_gabapentin(sandbox_select())))


def test_order_sign_by_another_prescriber_is_not_filtered(client: FlaskClient) -> None:
    call(client, SELECT, with_pddi(sandbox_select(), cache_for_order_sign_filtering=True))
    sign = with_pddi(sandbox_sign(), filter_out_repeated_alerts=True)
    sign["context"]["userId"] = "Practitioner/another"
    assert "geriatric" in topics(call(client, SIGN, sign))


def test_cards_are_answered_when_the_snooze_tables_are_gone(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """No mock: the tables dropped under the running app, a real broken database."""
    overridden(client, card_of(call(client, SIGN, sandbox_sign()), "geriatric"))
    with get_store(app).engine.begin() as connection:
        connection.execute(text("DROP TABLE snooze"))
        connection.execute(text("DROP TABLE card_issue"))
    cards = call(client, SELECT, sandbox_select())
    assert "geriatric" in topics(cards), "a wrong silence is worse than a repeated card"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("snoozes not checked" in message for message in errors)
    assert any("cards not recorded" in message for message in errors)


def test_the_feedback_report_names_snooze_reasons_from_the_catalogue(
    client: FlaskClient, app_config: dict[str, Any], tmp_path: Path
) -> None:
    overridden(client, card_of(call(client, SIGN, sandbox_sign()), "geriatric"), "snooze-1-week")
    result = run_cli("feedback", tmp_path=tmp_path, database_url=app_config["DATABASE_URL"])
    assert result.returncode == 0, result.stderr
    assert catalogue().snooze_displays["snooze-1-week"] in result.stdout


def test_discovery_advertises_the_pddi_items_each_service_honours(client: FlaskClient) -> None:
    services = {s["hook"]: s for s in client.get("/cds-services").get_json()["services"]}
    items = {
        hook: [item["code"] for item in s.get("extension", {}).get("pddi-configuration-items", [])]
        for hook, s in services.items()
    }
    assert items == {
        "order-select": ["cache-for-order-sign-filtering"],
        "order-sign": ["filter-out-repeated-alerts"],
        "medication-prescribe": [],
        "patient-view": [],
    }
    for hook in ("order-select", "order-sign"):
        [item] = services[hook]["extension"]["pddi-configuration-items"]
        assert item["type"] == "boolean" and item["name"] and item["description"]
