"""The store on a real PostgreSQL server, as several app instances share it in production.

The server is started by pytest-postgresql's executor from Debian's binaries
(/usr/lib/postgresql/*/bin, installed by ``make system-deps``). PostgreSQL refuses to
run as root, so under root (CI containers) pg_ctl runs as the ``postgres`` account.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import port_for
import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from prometheus_client import REGISTRY
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import inspect, text

from cds_hooks.app import create_app
from cds_hooks.store import (
    VERSION_TABLE,
    Store,
    alembic_config,
    create_store_engine,
    get_store,
)
from tests.concurrency import migrate_together
from tests.security.tokens import Client, bearer

pytestmark = pytest.mark.postgres

CARD = "6a4a3b55-2b1e-4f0e-9a53-0d1c1f0c0a01"
SUGGESTION = "6a4a3b55-2b1e-4f0e-9a53-0d1c1f0c0a02"


def _pg_ctl() -> str | None:
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parents[1].name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
    return found[-1] if found else shutil.which("pg_ctl")


def _as_postgres_user(pg_ctl: str, workdir: Path) -> str:
    """A pg_ctl stand-in that drops root to the ``postgres`` account (initdb refuses root)."""
    wrapper = workdir / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\ncd /\nexec runuser -u postgres -- "{pg_ctl}" "$@"\n')
    wrapper.chmod(0o700)
    return str(wrapper)


@pytest.fixture(scope="module")
def postgresql_server() -> Iterator[PostgreSQLExecutor]:
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        pytest.skip(
            "PostgreSQL server binaries not found: run `make system-deps` as root "
            "or install Debian's postgresql package"
        )
    workdir = Path(tempfile.mkdtemp(prefix="baclofen-pg-ctl-"))
    cluster = Path(tempfile.mkdtemp(prefix="baclofen-pg-"))
    executable = pg_ctl
    if os.geteuid() == 0:
        executable = _as_postgres_user(pg_ctl, workdir)
        account = pwd.getpwnam("postgres")
        os.chown(cluster, account.pw_uid, account.pw_gid)
    executor = PostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=port_for.select_random(),
        datadir=str(cluster / "data"),
        unixsocketdir=str(cluster),
        logfile=str(cluster / "postgresql.log"),
        startparams="-w",
        dbname="baclofen_test",
        user="postgres",
    )
    executor.start()
    try:
        yield executor
    finally:
        executor.stop()
        shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def database_url(postgresql_server: PostgreSQLExecutor) -> Iterator[str]:
    """A fresh, empty database per test (created and dropped by pytest-postgresql)."""
    dbname = f"baclofen_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(
        user=postgresql_server.user,
        host=postgresql_server.host,
        port=postgresql_server.port,
        dbname=dbname,
    )
    with janitor:
        yield f"postgresql://{postgresql_server.user}@{postgresql_server.host}:{postgresql_server.port}/{dbname}"


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[[], Flask]]:
    """Builds app instances on the shared database, as separate workers or pods would."""
    apps: list[Flask] = []

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
        store.migrate()
        store.migrate()
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


def test_instances_starting_together_migrate_once_without_error(database_url: str) -> None:
    stores = [Store(create_store_engine(database_url)) for _ in range(4)]
    errors = migrate_together(stores)
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
            "DATABASE_URL": database_url,
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
