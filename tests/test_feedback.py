"""The feedback endpoint end to end: real app, real SQLite file, Alembic-migrated schema."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import port_for
import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from cds_hooks.app import create_app
from cds_hooks.config import ConfigError
from cds_hooks.feedback import OverrideReason, parse_feedback_request, parse_rfc3339
from cds_hooks.store import (
    FeedbackCount,
    Store,
    StoreError,
    alembic_config,
    create_store_engine,
    get_store,
    normalise_database_url,
)
from cds_hooks.store.schema import feedback as feedback_table
from cds_hooks.store.schema import jwt_replay
from tests.concurrency import upgrade_together
from tests.conftest import as_if_alive, load_json, upgraded

URL = "/cds-services/baclofen-order-sign/feedback"
CARD = "0b7f5a52-5c7e-4f55-9d0e-3f1f6f2b7a10"
OTHER_CARD = "4f3e8c1d-9a0b-4c2d-8e7f-1a2b3c4d5e6f"
SUGGESTION = "9a0e3c62-1f1b-4b8e-a0f5-6c2d1e7b8a91"
REASON_SYSTEM = "https://baclofen-cds.example/override-reason"

# Exactly what the CDS Hooks sandbox posts (cds-hooks-protocol.md §4.3): ISO timestamps
# with milliseconds, a reason Coding without display, no userComment.
SANDBOX_ACCEPT = {
    "card": CARD,
    "outcome": "accepted",
    "acceptedSuggestions": [{"id": SUGGESTION}],
    "outcomeTimestamp": "2026-11-22T10:05:31.123Z",
}
SANDBOX_DISMISS_WITH_REASON = {
    "card": CARD,
    "outcome": "overridden",
    "outcomeTimestamp": "2026-11-22T10:06:02.456Z",
    "overrideReason": {"reason": {"code": "patient-tolerating-dose", "system": REASON_SYSTEM}},
}
SANDBOX_DISMISS = {
    "card": OTHER_CARD,
    "outcome": "overridden",
    "outcomeTimestamp": "2026-11-22T10:07:00.000Z",
}


def post(client: FlaskClient, *items: dict[str, Any], url: str = URL) -> Any:
    return client.post(url, json={"feedback": list(items)})


def store_of(app: Flask) -> Store:
    return get_store(app)


def assert_outcome(response: Any, status: int, expression: str | None = None) -> None:
    assert response.status_code == status
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert body["issue"][0]["expression"] == [expression]


def test_accepted_suggestion_is_stored(app: Flask, client: FlaskClient) -> None:
    response = post(client, SANDBOX_ACCEPT)

    assert response.status_code == 200
    assert response.get_json() == {"received": 1, "stored": 1}
    [record] = store_of(app).feedback_for_card(CARD)
    assert record.service_id == "baclofen-order-sign"
    assert record.outcome == "accepted"
    assert record.accepted_suggestions == (SUGGESTION,)
    assert record.override_reason is None
    assert record.outcome_timestamp == datetime(2026, 11, 22, 10, 5, 31, 123000, tzinfo=UTC)
    assert record.received_at.tzinfo is not None


def test_override_with_reason_and_comment_is_stored(app: Flask, client: FlaskClient) -> None:
    item = {
        "card": CARD.upper(),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-22T11:05:31+01:00",
        "overrideReason": {
            "reason": {
                "system": REASON_SYSTEM,
                "code": "specialist-advice",
                "display": "Specialist advice",
            },
            "userComment": "Discussed with the renal team.",
        },
    }

    assert post(client, item).status_code == 200

    [record] = store_of(app).feedback_for_card(CARD)
    assert record.card == CARD
    assert record.accepted_suggestions == ()
    assert record.outcome_timestamp == datetime(2026, 11, 22, 10, 5, 31, tzinfo=UTC)
    assert record.override_reason == OverrideReason(
        system=REASON_SYSTEM,
        code="specialist-advice",
        display="Specialist advice",
        user_comment="Discussed with the renal team.",
    )


def test_override_with_only_a_comment_is_stored(app: Flask, client: FlaskClient) -> None:
    item = {**SANDBOX_DISMISS, "overrideReason": {"userComment": "Dose agreed with neurology."}}

    assert post(client, item).status_code == 200

    [record] = store_of(app).feedback_for_card(OTHER_CARD)
    assert record.override_reason == OverrideReason(user_comment="Dose agreed with neurology.")


def test_the_sandbox_shapes_are_accepted_as_one_batch(app: Flask, client: FlaskClient) -> None:
    response = post(client, SANDBOX_ACCEPT, SANDBOX_DISMISS_WITH_REASON, SANDBOX_DISMISS)

    assert response.get_json() == {"received": 3, "stored": 3}
    assert [r.outcome for r in store_of(app).feedback_for_card(CARD)] == ["accepted", "overridden"]
    reason = store_of(app).feedback_for_card(CARD)[1].override_reason
    assert reason == OverrideReason(system=REASON_SYSTEM, code="patient-tolerating-dose")
    assert sorted(
        store_of(app).feedback_summary(), key=lambda c: (c.outcome, c.reason_code or "")
    ) == [
        # Made-up version 4 uuids: no topic, as for cards sent before topics were carried.
        FeedbackCount("baclofen-order-sign", None, "accepted", None, None, 1),
        FeedbackCount("baclofen-order-sign", None, "overridden", None, None, 1),
        FeedbackCount(
            "baclofen-order-sign", None, "overridden", REASON_SYSTEM, "patient-tolerating-dose", 1
        ),
    ]


def test_feedback_on_our_cards_is_counted_under_each_cards_topic(
    app: Flask, client: FlaskClient
) -> None:
    # A captured sandbox call: a Synthea patient with eGFR 37 on oxycodone gets several cards.
    body = load_json("requests/sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json")["body"]
    body["prefetch"]["patient"] = as_if_alive(body["prefetch"]["patient"])
    hook = client.post("/cds-services/baclofen-order-sign", json=body)
    cards = hook.get_json()["cards"]
    accepted = next(card for card in cards if "suggestions" in card)
    overridden = next(card for card in cards if card is not accepted)
    topics = [card["source"]["topic"]["code"] for card in (overridden, accepted)]
    assert topics[0] != topics[1]
    suggestion = {"id": accepted["suggestions"][0]["uuid"]}
    assert post(
        client,
        {**SANDBOX_DISMISS, "card": overridden["uuid"]},
        {**SANDBOX_ACCEPT, "card": accepted["uuid"], "acceptedSuggestions": [suggestion]},
    ).get_json() == {"received": 2, "stored": 2}

    [record] = store_of(app).feedback_for_card(overridden["uuid"])
    assert record.card_topic == topics[0]
    assert {(c.card_topic, c.outcome, c.count) for c in store_of(app).feedback_summary()} == {
        (topics[0], "overridden", 1),
        (topics[1], "accepted", 1),
    }


def test_feedback_stored_before_topics_keeps_its_rows_with_no_topic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_store_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            insert(feedback_table).values(
                dedup_key="k" * 64,
                service_id="baclofen-order-sign",
                card_uuid=CARD,
                outcome="overridden",
                accepted_suggestions=[],
                outcome_timestamp=datetime(2026, 11, 1, tzinfo=UTC),
                received_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
        )
    engine.dispose()

    app = create_app({"ENV": "development", "DATABASE_URL": upgraded(url)})

    [record] = store_of(app).feedback_for_card(CARD)
    assert record.outcome == "overridden" and record.card_topic is None
    assert [(c.card_topic, c.count) for c in store_of(app).feedback_summary()] == [(None, 1)]


def test_summary_counts_per_service(app: Flask, client: FlaskClient) -> None:
    post(client, SANDBOX_ACCEPT)
    post(client, SANDBOX_DISMISS, url="/cds-services/baclofen-order-select/feedback")

    assert {(c.service_id, c.outcome, c.count) for c in store_of(app).feedback_summary()} == {
        ("baclofen-order-sign", "accepted", 1),
        ("baclofen-order-select", "overridden", 1),
    }


def test_resent_feedback_is_stored_once(app: Flask, client: FlaskClient) -> None:
    assert post(client, SANDBOX_ACCEPT, SANDBOX_DISMISS).get_json() == {"received": 2, "stored": 2}
    assert post(client, SANDBOX_ACCEPT, SANDBOX_DISMISS).get_json() == {"received": 2, "stored": 0}
    same_instant_other_offset = {
        **SANDBOX_ACCEPT,
        "outcomeTimestamp": "2026-11-22T11:05:31.123+01:00",
    }
    assert post(client, same_instant_other_offset, SANDBOX_ACCEPT).get_json() == {
        "received": 2,
        "stored": 0,
    }

    assert len(store_of(app).feedback_for_card(CARD)) == 1
    assert len(store_of(app).feedback_for_card(OTHER_CARD)) == 1


def test_a_later_action_on_the_same_card_is_a_new_record(app: Flask, client: FlaskClient) -> None:
    later = {**SANDBOX_ACCEPT, "outcomeTimestamp": "2026-11-22T10:15:00Z"}

    assert post(client, SANDBOX_ACCEPT, later).get_json() == {"received": 2, "stored": 2}
    assert len(store_of(app).feedback_for_card(CARD)) == 2


def _without(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != key}


def _with(item: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(item)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


INVALID_ITEMS = {
    "missing card": (_without(SANDBOX_ACCEPT, "card"), "card"),
    "card not a uuid": (_with(SANDBOX_ACCEPT, ("card",), "card-1"), "card"),
    "card not a string": (_with(SANDBOX_ACCEPT, ("card",), 7), "card"),
    "missing outcome": (_without(SANDBOX_ACCEPT, "outcome"), "outcome"),
    "unknown outcome": (_with(SANDBOX_ACCEPT, ("outcome",), "ignored"), "outcome"),
    "outcome in capitals": (_with(SANDBOX_ACCEPT, ("outcome",), "Accepted"), "outcome"),
    "accepted without suggestions": (
        _without(SANDBOX_ACCEPT, "acceptedSuggestions"),
        "acceptedSuggestions",
    ),
    "accepted with empty suggestions": (
        _with(SANDBOX_ACCEPT, ("acceptedSuggestions",), []),
        "acceptedSuggestions",
    ),
    "suggestion without id": (
        _with(SANDBOX_ACCEPT, ("acceptedSuggestions",), [{}]),
        "acceptedSuggestions[0].id",
    ),
    "suggestion as bare string": (
        _with(SANDBOX_ACCEPT, ("acceptedSuggestions",), [SUGGESTION]),
        "acceptedSuggestions[0].id",
    ),
    "overridden with suggestions": (
        _with(SANDBOX_DISMISS, ("acceptedSuggestions",), [{"id": SUGGESTION}]),
        "acceptedSuggestions",
    ),
    "accepted with override reason": (
        _with(SANDBOX_ACCEPT, ("overrideReason",), {"userComment": "x"}),
        "overrideReason",
    ),
    "empty override reason": (_with(SANDBOX_DISMISS, ("overrideReason",), {}), "overrideReason"),
    "blank comment only": (
        _with(SANDBOX_DISMISS, ("overrideReason",), {"userComment": "  "}),
        "overrideReason",
    ),
    "comment not a string": (
        _with(SANDBOX_DISMISS, ("overrideReason",), {"userComment": 5}),
        "overrideReason.userComment",
    ),
    "comment too long": (
        _with(SANDBOX_DISMISS, ("overrideReason",), {"userComment": "x" * 2001}),
        "overrideReason.userComment",
    ),
    "reason without code": (
        _with(SANDBOX_DISMISS_WITH_REASON, ("overrideReason", "reason", "code"), None),
        "overrideReason.reason.code",
    ),
    "reason without system": (
        _with(SANDBOX_DISMISS_WITH_REASON, ("overrideReason", "reason", "system"), ""),
        "overrideReason.reason.system",
    ),
    "reason not a coding": (
        _with(SANDBOX_DISMISS_WITH_REASON, ("overrideReason", "reason"), "patient-tolerating-dose"),
        "overrideReason.reason",
    ),
    "missing timestamp": (_without(SANDBOX_ACCEPT, "outcomeTimestamp"), "outcomeTimestamp"),
    "timestamp without offset": (
        _with(SANDBOX_ACCEPT, ("outcomeTimestamp",), "2026-11-22T10:05:31"),
        "outcomeTimestamp",
    ),
    "date only": (_with(SANDBOX_ACCEPT, ("outcomeTimestamp",), "2026-11-22"), "outcomeTimestamp"),
    "impossible date": (
        _with(SANDBOX_ACCEPT, ("outcomeTimestamp",), "2026-02-30T10:05:31Z"),
        "outcomeTimestamp",
    ),
    "epoch number": (_with(SANDBOX_ACCEPT, ("outcomeTimestamp",), 1795860331), "outcomeTimestamp"),
}


@pytest.mark.parametrize(("item", "field"), INVALID_ITEMS.values(), ids=INVALID_ITEMS.keys())
def test_an_invalid_entry_is_refused_and_nothing_is_stored(
    app: Flask, client: FlaskClient, item: dict[str, Any], field: str
) -> None:
    response = post(client, SANDBOX_DISMISS, item)

    assert_outcome(response, 400, f"feedback[1].{field}")
    assert store_of(app).feedback_summary() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"feedback": []},
        {"feedback": "accepted"},
        {"feedback": SANDBOX_ACCEPT},
        [SANDBOX_ACCEPT],
    ],
    ids=["no feedback", "empty", "string", "object not array", "bare array"],
)
def test_a_malformed_body_is_refused(app: Flask, client: FlaskClient, body: Any) -> None:
    response = client.post(URL, json=body)

    assert_outcome(response, 400)
    assert store_of(app).feedback_summary() == []


def test_an_entry_that_is_not_an_object_is_refused(client: FlaskClient) -> None:
    assert_outcome(
        client.post(URL, json={"feedback": [SANDBOX_ACCEPT, "accepted"]}), 400, "feedback[1]"
    )


def test_too_many_entries_are_refused(app: Flask, client: FlaskClient) -> None:
    response = post(client, *[SANDBOX_ACCEPT] * 101)

    assert_outcome(response, 400, "feedback")
    assert store_of(app).feedback_summary() == []


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    response = client.post(URL, data='{"feedback": []}', content_type="text/plain")

    assert_outcome(response, 415)


def test_invalid_json_is_400(app: Flask, client: FlaskClient) -> None:
    response = client.post(URL, data='{"feedback": [', content_type="application/json")

    assert_outcome(response, 400)
    assert store_of(app).feedback_summary() == []


def test_unknown_service_is_404_and_nothing_is_stored(app: Flask, client: FlaskClient) -> None:
    response = post(client, SANDBOX_ACCEPT, url="/cds-services/warfarin-order-sign/feedback")

    assert_outcome(response, 404)
    assert store_of(app).feedback_summary() == []


def test_feedback_survives_a_restart(app_config: dict[str, Any]) -> None:
    before = create_app(app_config)
    assert (
        post(before.test_client(), SANDBOX_ACCEPT, SANDBOX_DISMISS_WITH_REASON).status_code == 200
    )
    store_of(before).dispose()

    after = create_app(app_config)

    assert [r.outcome for r in store_of(after).feedback_for_card(CARD)] == [
        "accepted",
        "overridden",
    ]
    assert post(after.test_client(), SANDBOX_ACCEPT).get_json() == {"received": 1, "stored": 0}


def test_readiness_includes_the_store(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["checks"]["store"] is True


def test_replayed_jwt_id_is_refused_until_it_expires(app: Flask) -> None:
    store = store_of(app)
    live = datetime.now(UTC) + timedelta(minutes=5)

    assert store.remember_jti("https://sandbox.cds-hooks.org", "abc", live) is True
    assert store.remember_jti("https://sandbox.cds-hooks.org", "abc", live) is False
    assert store.remember_jti("https://another-ehr.example", "abc", live) is True


def test_an_expired_jwt_id_is_forgotten(app: Flask) -> None:
    store = store_of(app)
    past = datetime.now(UTC) - timedelta(seconds=1)
    live = datetime.now(UTC) + timedelta(minutes=5)

    assert store.remember_jti("https://sandbox.cds-hooks.org", "stale", past) is True
    assert store.remember_jti("https://sandbox.cds-hooks.org", "stale", live) is True
    assert store.remember_jti("https://sandbox.cds-hooks.org", "stale", live) is False
    assert store.prune_expired_jti(live + timedelta(seconds=1)) == 1


def test_expired_jwt_ids_are_pruned_as_tokens_arrive(app: Flask) -> None:
    store = store_of(app)
    with store.engine.begin() as connection:
        connection.execute(
            jwt_replay.insert(),
            [
                {
                    "token_key": f"{n:064x}",
                    "issuer": "x",
                    "expires_at": datetime(2020, 1, 1, tzinfo=UTC),
                }
                for n in range(3)
            ],
        )

    store.remember_jti(
        "https://sandbox.cds-hooks.org", "new", datetime.now(UTC) + timedelta(minutes=5)
    )

    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(jwt_replay)).scalar_one() == 1


def _unreachable_postgres_url() -> str:
    return f"postgresql://cds:secret@127.0.0.1:{port_for.select_random()}/baclofen"


def test_ping_is_false_when_the_database_is_unreachable() -> None:
    store = Store(create_store_engine(_unreachable_postgres_url()))

    assert store.ping() is False


def test_start_up_fails_clearly_without_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="Cannot open the database") as error:
        create_app(
            {"TESTING": True, "ENV": "development", "DATABASE_URL": _unreachable_postgres_url()}
        )

    assert "secret" not in str(error.value)


def test_postgres_urls_use_psycopg_3() -> None:
    assert normalise_database_url("postgresql://u@db/cds").drivername == "postgresql+psycopg"
    assert normalise_database_url("postgres://u@db/cds").drivername == "postgresql+psycopg"
    assert normalise_database_url("sqlite:////var/lib/cds.sqlite3").drivername == "sqlite"


@pytest.mark.parametrize("url", ["mysql://u@db/cds", "postgresql+psycopg2://u@db/cds", "not a url"])
def test_unsupported_database_urls_fail_at_start_up(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": url})


@given(st.datetimes(timezones=st.just(UTC)), st.sampled_from(["Z", "+00:00", "z"]))
def test_any_utc_instant_round_trips_through_rfc3339(moment: datetime, suffix: str) -> None:
    text = moment.replace(tzinfo=None).isoformat() + suffix

    assert parse_rfc3339(text) == moment


def test_upgrades_starting_together_on_one_sqlite_file_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    stores = [Store(create_store_engine(url)) for _ in range(4)]
    errors = upgrade_together(stores)
    try:
        assert errors == []
        assert all(store.ping() for store in stores)
    finally:
        for store in stores:
            store.dispose()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = [
    "card",
    "outcome",
    "acceptedSuggestions",
    "overrideReason",
    "outcomeTimestamp",
    "id",
    "reason",
]


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=150
)
@given(
    base=st.sampled_from([SANDBOX_ACCEPT, SANDBOX_DISMISS_WITH_REASON, SANDBOX_DISMISS]),
    changes=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=3),
)
def test_mutated_feedback_is_stored_or_refused_never_an_error(
    client: FlaskClient, base: dict[str, Any], changes: dict[str, Any]
) -> None:
    response = post(client, {**base, **changes})

    assert response.status_code in (200, 400), response.get_data(as_text=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def on_each_database(request: pytest.FixtureRequest, app_config: dict[str, Any]) -> dict[str, Any]:
    """``app_config`` on SQLite, then on a real PostgreSQL server (tests/postgres.py): for
    store statements whose SQL differs between the two."""
    if request.param == "sqlite":
        return app_config
    return {**app_config, "DATABASE_URL": upgraded(request.getfixturevalue("database_url"))}


def test_override_comments_are_erased_after_the_retention_period(
    on_each_database: dict[str, Any],
) -> None:
    """Comments are free text and may name the patient: CDS_FEEDBACK_COMMENT_RETENTION_DAYS
    erases them (the write of new feedback does it); the outcome and reason stay counted."""
    app = create_app({**on_each_database, "FEEDBACK_COMMENT_RETENTION_DAYS": 30})
    old = {
        **SANDBOX_DISMISS_WITH_REASON,
        "overrideReason": {
            **SANDBOX_DISMISS_WITH_REASON["overrideReason"],
            "userComment": "Mrs Example-Patient tolerates it",
        },
    }
    # Written 40 days ago, by an instance that keeps comments (as before the setting).
    keeper = Store(get_store(app).engine)
    keeper.record_feedback(
        "baclofen-order-sign",
        parse_feedback_request({"feedback": [old]}),
        received_at=datetime.now(UTC) - timedelta(days=40),
    )
    fresh = {**SANDBOX_DISMISS, "overrideReason": {"userComment": "Agreed with neurology."}}

    assert post(app.test_client(), fresh).status_code == 200

    [erased] = store_of(app).feedback_for_card(CARD)
    assert erased.override_reason is not None
    assert erased.override_reason.user_comment is None
    assert erased.override_reason.code == "patient-tolerating-dose"
    [kept] = store_of(app).feedback_for_card(OTHER_CARD)
    assert kept.override_reason is not None
    assert kept.override_reason.user_comment == "Agreed with neurology."
    assert sum(row.count for row in store_of(app).feedback_summary()) == 2
    store_of(app).dispose()


def test_comment_retention_must_be_a_positive_number_of_days(
    app_config: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError, match="FEEDBACK_COMMENT_RETENTION_DAYS"):
        create_app({**app_config, "FEEDBACK_COMMENT_RETENTION_DAYS": 0})
