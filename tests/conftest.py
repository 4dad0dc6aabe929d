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

DATA = Path(__file__).parent / "data"

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


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    """Settings for a test app; tests override keys before ``app`` is built."""
    return {
        "TESTING": True,
        "ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
    }


@pytest.fixture
def app(app_config: dict[str, Any]) -> Flask:
    return create_app(app_config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
