"""Shared fixtures: the real app (flaskr style) on a temporary SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings

from cds_hooks.app import create_app
from cds_hooks.store import upgrade_database

DATA = Path(__file__).parent / "data"

# The PostgreSQL server fixtures (``postgresql_server``, ``database_url``), for every test
# module that shares a database between app instances.
pytest_plugins = ("tests.postgres",)

# Property tests assert behaviour, never speed: no per-example deadline (CI machines are
# shared and noisy).
settings.register_profile("project", deadline=None)
settings.load_profile("project")


def load_json(relative: str) -> Any:
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


def as_if_alive(patient: dict[str, Any]) -> dict[str, Any]:
    """``patient`` without ``deceased[x]``. Synthea's Evelyn McCullough died in 1985, so her
    record gets the deceased card alone (R9); tests of how her real, messy data is read
    use her record as if it did not say so."""
    return {k: v for k, v in patient.items() if not k.startswith("deceased")}


def upgraded(database_url: str) -> str:
    """``database_url`` after ``baclofen-cds db upgrade``, which runs before the service
    starts (the app itself never changes the schema)."""
    upgrade_database(database_url)
    return database_url


def sqlite_url(tmp_path: Path, name: str = "feedback.sqlite3") -> str:
    """A new SQLite database in ``tmp_path``, upgraded to this release's schema."""
    return upgraded(f"sqlite:///{tmp_path / name}")


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    """Settings for a test app; tests override keys before ``app`` is built."""
    return {"TESTING": True, "ENV": "development", "DATABASE_URL": sqlite_url(tmp_path)}


@pytest.fixture
def app(app_config: dict[str, Any]) -> Flask:
    return create_app(app_config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
