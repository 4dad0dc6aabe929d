"""The schema upgrade is its own step (``baclofen-cds db upgrade``), never the service's.

Before, every worker of every pod ran Alembic at start-up with the rights to change the
schema, and a rolled-back release crash-looped on the revision its successor had written
("Can't locate revision"). Now the service only reads where the schema stands: at its
head or newer, it serves; behind, it refuses to start and names the command. SQLite here;
the rollback with two instances on PostgreSQL is in test_store_postgres.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from alembic import command

from cds_hooks.app import create_app
from cds_hooks.store import (
    StoreError,
    alembic_config,
    create_store_engine,
    get_store,
    upgrade_database,
)
from tests.future_release import FUTURE_REVISION, upgrade_as_future_release
from tests.test_cli import run_cli

ACCEPTED = {
    "card": "6a4a3b55-2b1e-4f0e-9a53-0d1c1f0c0a01",
    "outcome": "accepted",
    "acceptedSuggestions": [{"id": "6a4a3b55-2b1e-4f0e-9a53-0d1c1f0c0a02"}],
    "outcomeTimestamp": "2026-11-22T10:05:31.123Z",
}


def db_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, tmp_path=Path(), database_url=database_url)


def tables(database_url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = create_store_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_service_refuses_an_empty_database_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    with pytest.raises(StoreError, match=r"no schema yet.*baclofen-cds db upgrade"):
        create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": url})

    assert tables(url) == set()


def test_the_service_refuses_a_schema_behind_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_store_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    engine.dispose()

    with pytest.raises(StoreError, match=r"at revision 0001; this release needs .*db upgrade"):
        create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": url})
    assert db_cli("db", "current", database_url=url).returncode == 1


def test_db_upgrade_migrates_once_and_then_has_nothing_to_do(tmp_path: Path) -> None:
    # The default SQLite file sits in a folder that does not exist before the first run.
    url = f"sqlite:///{tmp_path / 'instance' / 'store.sqlite3'}"

    first = db_cli("db", "upgrade", database_url=url)
    again = db_cli("db", "upgrade", database_url=url)
    current = db_cli("db", "current", database_url=url)

    assert (first.returncode, again.returncode, current.returncode) == (0, 0, 0), first.stderr
    assert "Running upgrade" in first.stderr and "Running upgrade" not in again.stderr
    assert "this release's head" in current.stdout
    app = create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": url})
    response = app.test_client().post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": [ACCEPTED]}
    )
    assert response.status_code == 200


def test_a_schema_a_newer_release_migrated_is_served_and_left_alone(tmp_path: Path) -> None:
    """The rolled-back release: its upgrade step succeeds without touching the schema,
    and the service starts and stores feedback in the expanded tables."""
    url = f"sqlite:///{tmp_path / 'newer.sqlite3'}"
    upgrade_as_future_release(url, tmp_path)

    rolled_back_upgrade = db_cli("db", "upgrade", database_url=url)
    current = db_cli("db", "current", database_url=url)
    assert rolled_back_upgrade.returncode == 0, rolled_back_upgrade.stderr
    assert "newer than this release" in rolled_back_upgrade.stderr
    assert current.returncode == 0 and FUTURE_REVISION in current.stdout

    app = create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": url})
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    response = client.post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": [ACCEPTED]}
    )
    assert response.status_code == 200
    [stored] = get_store(app).feedback_for_card(ACCEPTED["card"])
    assert stored.outcome == "accepted"
    get_store(app).dispose()
    assert upgrade_database(url).unknown == (FUTURE_REVISION,)
    assert "card_review" in tables(url)


def test_commands_on_a_schema_behind_say_what_to_run_without_a_traceback(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'never-upgraded.sqlite3'}"
    result = db_cli("feedback", database_url=url)
    assert result.returncode == 1
    assert "baclofen-cds db upgrade" in result.stderr
    assert "Traceback" not in result.stderr
