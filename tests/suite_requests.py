"""Every hook request the test suite posts from its data: the captured sandbox requests,
the scenario table and the Synthea patients (as recorded and as if alive).

Tests that assert a property of all responses (card length, wording meant for prescribers)
and the card-rendering script (tests/ehr_view.py) read the same list, so a request added
to any of those sources is covered everywhere.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from tests.scenario_requests import build_request

DATA = Path(__file__).parent / "data"


def scenarios() -> list[dict[str, Any]]:
    text = (DATA / "scenarios" / "scenarios.toml").read_text("utf-8")
    rows: list[dict[str, Any]] = tomllib.loads(text)["scenario"]
    return rows


def suite_requests(today: date) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, hook request body) for every request of the suite's data."""
    # Imported here: tests.test_synthea is a test module, and only this function needs it.
    from tests.test_synthea import EVELYN, HARTMANN, MAGGIO, request_with_baclofen

    for path in sorted((DATA / "requests").glob("*.json")):
        exchange = json.loads(path.read_text("utf-8"))
        if isinstance(exchange.get("body"), dict) and "hook" in exchange["body"]:
            yield f"captured/{path.stem}", exchange["body"]
    for scenario in scenarios():
        yield f"scenario/{scenario['id']}", build_request(scenario, today)
    for name in (EVELYN, HARTMANN, MAGGIO):
        yield f"synthea/{name.split('_')[0]}", request_with_baclofen(name)
    yield "synthea/Evelyn-as-recorded", request_with_baclofen(EVELYN, as_recorded=True)
