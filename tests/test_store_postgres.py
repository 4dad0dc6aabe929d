"""The store on a real PostgreSQL server, as several app instances share it in production.

The server and a fresh database per test come from ``tests/postgres.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic.script import ScriptDirectory
from flask import Flask
from prometheus_client import REGISTRY
from pytest_postgresql.executors import PostgreSQLExecutor
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import ProgrammingError

from cds_hooks.app import create_app
from cds_hooks.store import (
    VERSION_TABLE,
    Store,
    alembic_config,
    create_store_engine,
    get_store,
    upgrade_database,
)
from tests.concurrency import upgrade_together
from tests.conftest import load_json, upgraded
from tests.future_release import FUTURE_REVISION, upgrade_as_future_release
from tests.security.tokens import Client, bearer
from tests.served import serve

pytestmark = pytest.mark.postgres

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
CARD = "6a4a3b55-2b1e-4f0e-9a53-0d1c1f0c0a01"
SUGGESTION = "6a4a3b55-2b1e-4f0e-9a53-0d1c1f0c0a02"


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[[], Flask]]:
    """Builds app instances on the shared database, as separate workers or pods would."""
    apps: list[Flask] = []

    upgraded(database_url)

    def build() -> Flask:
        app = create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": database_url})
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_store(app).dispose()


def _accepted(card: str = CARD) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": SUGGESTION}],
        "outcomeTimestamp": "2026-11-22T10:05:31.123Z",
    }


def test_alembic_migrates_an_empty_database_to_head(database_url: str) -> None:
    store = Store(create_store_engine(database_url))
    try:
        store.upgrade()
        store.upgrade()
        tables = set(inspect(store.engine).get_table_names())
        with store.engine.connect() as connection:
            version = connection.execute(
                text(f"SELECT version_num FROM {VERSION_TABLE}")
            ).scalar_one()
            head = ScriptDirectory.from_config(alembic_config(connection)).get_current_head()
    finally:
        store.dispose()
    assert {"feedback", "jwt_replay", VERSION_TABLE} <= tables
    assert version == head


def test_upgrades_starting_together_migrate_once_without_error(database_url: str) -> None:
    stores = [Store(create_store_engine(database_url)) for _ in range(4)]
    errors = upgrade_together(stores)
    try:
        assert errors == []
        assert all(store.ping() for store in stores)
        assert stores[0].remember_jti(
            "https://ehr.example", "first", datetime.now(UTC) + timedelta(minutes=5)
        )
    finally:
        for store in stores:
            store.dispose()


def test_feedback_written_by_one_instance_is_read_by_another(make_app: Callable[[], Flask]) -> None:
    first, second = make_app(), make_app()
    response = first.test_client().post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": [_accepted()]}
    )
    assert response.status_code == 200

    records = get_store(second).feedback_for_card(CARD)
    assert [(r.service_id, r.outcome, r.accepted_suggestions) for r in records] == [
        ("baclofen-order-sign", "accepted", (SUGGESTION,))
    ]
    assert records[0].outcome_timestamp == datetime(2026, 11, 22, 10, 5, 31, 123000, tzinfo=UTC)

    again = second.test_client().post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": [_accepted()]}
    )
    assert again.status_code == 200
    assert [(c.outcome, c.count) for c in get_store(first).feedback_summary()] == [("accepted", 1)]


def test_a_jwt_id_seen_by_one_instance_is_refused_by_another(make_app: Callable[[], Flask]) -> None:
    first, second = get_store(make_app()), get_store(make_app())
    expires = datetime.now(UTC) + timedelta(minutes=5)

    assert first.remember_jti("https://sandbox.cds-hooks.org", "jti-1", expires) is True
    assert second.remember_jti("https://sandbox.cds-hooks.org", "jti-1", expires) is False
    assert second.remember_jti("https://other-ehr.example", "jti-1", expires) is True


def test_concurrent_replays_across_instances_are_accepted_exactly_once(
    make_app: Callable[[], Flask],
) -> None:
    stores = [get_store(make_app()) for _ in range(2)]
    expires = datetime.now(UTC) + timedelta(minutes=5)
    attempts = 8
    barrier = threading.Barrier(attempts)
    results: list[bool] = []

    def present(store: Store) -> None:
        barrier.wait()
        results.append(store.remember_jti("https://sandbox.cds-hooks.org", "raced", expires))

    threads = [threading.Thread(target=present, args=(stores[i % 2],)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * (attempts - 1) + [True]


def test_readiness_reports_the_shared_database(make_app: Callable[[], Flask]) -> None:
    response = make_app().test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["store"] is True


PUBLIC = "https://cds.example.org"
ORDER_SIGN = "/cds-services/baclofen-order-sign"
CAPTURED_ORDER_SIGN = (
    Path(__file__).parent / "data" / "requests" / ("sandbox-order-sign-baclofen10-3tab-daily.json")
)


def test_hook_calls_go_on_while_postgresql_is_down(
    postgresql_server: PostgreSQLExecutor, database_url: str
) -> None:
    """Issue 16 item 11: the server is stopped mid-service and started again. Hook calls
    are answered throughout (replay protection in the worker's memory, counted), /readyz
    stays ready for them and reports the database, feedback answers 503."""
    issuer = Client()
    app = create_app(
        {
            "TESTING": True,
            "ENV": "development",
            "AUTH_MODE": "enforce",
            "PUBLIC_BASE_URL": PUBLIC,
            "TRUSTED_ISSUERS": [issuer.issuer_config()],
            "DATABASE_URL": upgraded(database_url),
        }
    )
    client = app.test_client()
    body = json.loads(CAPTURED_ORDER_SIGN.read_text(encoding="utf-8"))["body"]

    def sign(token: str) -> Any:
        return client.post(ORDER_SIGN, json=body, headers=bearer(token))

    assert sign(issuer.token(PUBLIC + ORDER_SIGN)).status_code == 200
    fallbacks = REGISTRY.get_sample_value("cds_jwt_replay_fallbacks_total") or 0.0
    postgresql_server.stop()
    try:
        token = issuer.token(PUBLIC + ORDER_SIGN)
        during = sign(token)
        replayed = sign(token)
        ready = client.get("/readyz")
        feedback = client.post(
            ORDER_SIGN + "/feedback",
            json={"feedback": [_accepted()]},
            headers=bearer(issuer.token(PUBLIC + ORDER_SIGN + "/feedback")),
        )
    finally:
        postgresql_server.start()
    assert during.status_code == 200 and during.get_json()["cards"]
    assert replayed.status_code == 401, "a replay to this worker is still refused"
    counted = REGISTRY.get_sample_value("cds_jwt_replay_fallbacks_total")
    assert counted == fallbacks + 2, "the hook call's token and the feedback call's"
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "degraded",
        "checks": {"configuration": True, "trusted_issuers": True, "store": False},
    }
    assert feedback.status_code == 503

    assert client.get("/readyz").get_json()["status"] == "ready"
    assert sign(issuer.token(PUBLIC + ORDER_SIGN)).status_code == 200
    assert sign(token).status_code == 401, "nor after the database is back"


def test_a_rollback_across_a_migration_serves_on_the_newer_schema(
    database_url: str, tmp_path: Path
) -> None:
    """`kubectl rollout undo` after a release that migrated: two instances of the release
    before it start (each runs its own `db upgrade` first, as the init container does)
    and serve hook calls and feedback on the schema they do not know. Before, every
    instance crash-looped: "Can't locate revision"."""
    upgrade_as_future_release(database_url, tmp_path)  # the newer release's upgrade step
    hook = load_json("requests/sandbox-order-sign-baclofen10-3tab-daily.json")["body"]
    feedback = {"feedback": [_accepted()]}
    env = {"CDS_DATABASE_URL": database_url}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with (
        serve(tmp_path / "first", workers=1, env=env) as (first, first_log, _),
        serve(tmp_path / "second", workers=1, env=env) as (second, _, _),
    ):
        for base in (first, second):
            assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
            answer = requests.post(
                f"{base}/cds-services/baclofen-order-sign", json=hook, timeout=30
            )
            assert answer.status_code == 200 and "cards" in answer.json()
            stored = requests.post(
                f"{base}/cds-services/baclofen-order-sign/feedback", json=feedback, timeout=30
            )
            assert stored.status_code == 200
        assert "newer than this release" in first_log.read_text()

    store = Store(create_store_engine(database_url))
    try:
        assert store.schema().unknown == (FUTURE_REVISION,)
        assert [(c.outcome, c.count) for c in store.feedback_summary()] == [("accepted", 1)]
        # Rolling forward again finds its own head and keeps what the old release stored.
        upgrade_as_future_release(database_url, tmp_path)
        assert [(c.outcome, c.count) for c in store.feedback_summary()] == [("accepted", 1)]
    finally:
        store.dispose()


def _documented_role_sql() -> tuple[list[str], list[str]]:
    """The SQL of docs/operations.md, "Database roles": the statements run on the server,
    then those run in the new database (after psql's ``\\c``)."""
    section = OPERATIONS.read_text(encoding="utf-8").split("### Database roles", 1)[1]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    on_server, in_database = block.split("\\c baclofen_cds")

    def statements(sql: str) -> list[str]:
        without_comments = "\n".join(line.split("--")[0] for line in sql.splitlines())
        return [part.strip() for part in without_comments.split(";") if part.strip()]

    return statements(on_server), statements(in_database)


def test_the_service_needs_only_row_rights_on_a_schema_its_owner_upgraded(
    postgresql_server: PostgreSQLExecutor,
) -> None:
    """The documented roles: the init container's (owner) upgrades, the service's can read
    and write rows and nothing more, so it can neither migrate nor drop a table."""
    server = f"postgresql+psycopg://{postgresql_server.user}@{postgresql_server.host}:{postgresql_server.port}"
    on_server, in_database = _documented_role_sql()
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for statement in on_server:
            connection.exec_driver_sql(statement)
    owner_db = create_engine(f"{server}/baclofen_cds", isolation_level="AUTOCOMMIT")
    app: Flask | None = None
    try:
        with owner_db.connect() as connection:
            for statement in in_database:
                connection.exec_driver_sql(statement)
        where = f"{postgresql_server.host}:{postgresql_server.port}/baclofen_cds"
        upgrade_database(f"postgresql://baclofen_cds_owner@{where}")

        app = create_app(
            {
                "TESTING": True,
                "ENV": "development",
                "DATABASE_URL": f"postgresql://baclofen_cds@{where}",
            }
        )
        response = app.test_client().post(
            "/cds-services/baclofen-order-sign/feedback", json={"feedback": [_accepted()]}
        )
        assert response.status_code == 200
        store = get_store(app)
        assert store.remember_jti(
            "https://ehr.example", "j", datetime.now(UTC) + timedelta(minutes=5)
        )
        assert store.prune_expired_jti(datetime.now(UTC) + timedelta(hours=1)) == 1
        with (
            pytest.raises(ProgrammingError, match="InsufficientPrivilege"),
            store.engine.begin() as connection,
        ):
            connection.execute(text("DROP TABLE feedback"))
    finally:
        if app is not None:
            get_store(app).dispose()
        owner_db.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql("DROP DATABASE IF EXISTS baclofen_cds")
            connection.exec_driver_sql("DROP ROLE IF EXISTS baclofen_cds")
            connection.exec_driver_sql("DROP ROLE IF EXISTS baclofen_cds_owner")
        admin.dispose()


def test_the_console_reads_feedback_from_postgresql(make_app: Callable[[], Flask]) -> None:
    """The console's queries on PostgreSQL: days counted in UTC (an outcome just before
    midnight UTC stays on its day whatever the session's time zone), comments paged,
    knowledge versions listed, a password user shared by every instance."""
    from cds_hooks.store import FeedbackFilter
    from cds_hooks.store.console import (
        comments_page,
        daily_counts,
        knowledge_versions,
        password_hash_of,
        set_console_user,
    )

    first, second = make_app(), make_app()
    late = {
        **_accepted(),
        "outcomeTimestamp": "2026-11-22T23:59:00-00:00",
    }
    commented = {
        "card": CARD,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T00:30:00+02:00",
        "overrideReason": {"userComment": "seen by the pharmacist"},
    }
    client = first.test_client()
    response = client.post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": [late, commented]}
    )
    assert response.status_code == 200
    store = get_store(second)
    with store.engine.begin() as connection:
        connection.execute(text("SET TIME ZONE 'Pacific/Kiritimati'"))
    days = {
        (row.day.isoformat(), row.outcome, row.count)
        for row in daily_counts(store, FeedbackFilter())
    }
    assert days == {("2026-11-22", "accepted", 1), ("2026-11-22", "overridden", 1)}
    shown, total = comments_page(store, FeedbackFilter(), 1, 20)
    assert total == 1 and shown[0].text == "seen by the pharmacist"
    version = first.extensions["baclofen_knowledge"].version
    assert knowledge_versions(store) == [version]
    assert set_console_user(get_store(first), "pharmacist", "$argon2id$stand-in")
    assert password_hash_of(store, "pharmacist") == "$argon2id$stand-in"
