"""Intrathecal pump orders written as a rate, through the real service.

A pump is often ordered as "50 mcg/h" with no dose or frequency. The rate is a daily dose
(× 24 h) and must meet the intrathecal daily limit, not be called "dose not computable".
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask.testing import FlaskClient

from tests.scenario_requests import build_request, post

PUMP_DRAFT = {
    "id": "pump",
    "rxnorm": "1047437",
    "name": "baclofen 0.05 MG/ML Injectable Solution",
    "route": "intrathecal",
}
NORMAL_EGFR = {"loinc": "98979-8", "value": 95, "unit": "mL/min/{1.73_m2}", "days_ago": 5}


def rate_request(micrograms_per_hour: float) -> dict[str, Any]:
    scenario = {
        "patient": {"age": 45, "sex": "male"},
        "labs": [NORMAL_EGFR],
        "drafts": [PUMP_DRAFT],
    }
    request = build_request(scenario, date.today())
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    (dosage,) = draft["dosageInstruction"]
    rate = {"value": micrograms_per_hour, "unit": "ug/h", "system": "http://unitsofmeasure.org"}
    dosage["doseAndRate"] = [{"rateQuantity": rate | {"code": "ug/h"}}]
    return request


def by_topic(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["source"]["topic"]["code"]: c for c in cards}


def test_pump_rate_above_the_daily_limit_is_flagged(client: FlaskClient) -> None:
    cards = by_topic(post(client, rate_request(50)))  # 50 mcg/h × 24 h = 1200 mcg/day
    card = cards["intrathecal-dose"]
    assert card["indicator"] == "warning"
    assert "1200" in card["summary"]
    assert "dose-unknown" not in cards


def test_pump_rate_within_the_daily_limit_gives_no_dose_card(client: FlaskClient) -> None:
    cards = by_topic(post(client, rate_request(20)))  # 480 mcg/day
    assert "intrathecal-dose" not in cards
    assert "dose-unknown" not in cards
