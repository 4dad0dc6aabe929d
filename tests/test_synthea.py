"""Synthea patients (tests/data/synthea/) with a baclofen draft, through the real service.

Expectations are derived from each bundle (age, newest eGFR and its date, active drugs), so
the test checks that the service reads real, messy EHR data the way a pharmacist would.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cards.render import EXTENSION
from cds_hooks.knowledge import observation_codes
from cds_hooks.model import RXNORM, UCUM
from tests.conftest import as_if_alive
from tests.scenario_requests import post

SYNTHEA = Path(__file__).parent / "data" / "synthea"
EVELYN = "Evelyn_McCullough_b3e8d121-f742-438c-92e3-02135e4543d5.json"
HARTMANN = "Adalberto_Hartmann_44ec4447-9e2c-4eb9-bd4f-0bdb416b806e.json"
MAGGIO = "Louis_Maggio_2e275d4b-855a-4eb2-9021-5410aa8acd4f.json"


@cache
def resources(name: str) -> tuple[dict[str, Any], ...]:
    bundle = json.loads((SYNTHEA / name).read_text("utf-8"))
    return tuple(entry["resource"] for entry in bundle["entry"])


def of_type(name: str, resource_type: str) -> list[dict[str, Any]]:
    return [r for r in resources(name) if r["resourceType"] == resource_type]


def loinc(resource: dict[str, Any]) -> set[str]:
    return {c.get("code") for c in resource.get("code", {}).get("coding", [])}


def newest(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(observations, key=lambda o: o.get("effectiveDateTime", ""), reverse=True)


def searchset(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(items),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in items],
    }


def age_today(name: str) -> int:
    born = date.fromisoformat(of_type(name, "Patient")[0]["birthDate"])
    today = date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def request_with_baclofen(name: str, *, as_recorded: bool = False) -> dict[str, Any]:
    """What an EHR would send for this patient while ordering baclofen 10 mg three times a
    day; unless ``as_recorded``, the record does not say the patient died (see as_if_alive)."""
    codes = observation_codes()
    recorded = of_type(name, "Patient")[0]
    patient = recorded if as_recorded else as_if_alive(recorded)
    observations = of_type(name, "Observation")
    draft = {
        "resourceType": "MedicationRequest",
        "id": "baclofen-draft",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient['id']}"},
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "197391", "display": "Baclofen 10 MG Oral Tablet"}
            ],
            "text": "Baclofen 10 MG Oral Tablet",
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "system": UCUM, "code": "{pill}"}}],
            }
        ],
    }
    return {
        "hookInstance": str(uuid.uuid4()),
        "hook": "order-sign",
        "context": {
            "patientId": patient["id"],
            "userId": "Practitioner/synthea-test",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft}],
            },
        },
        "prefetch": {
            "patient": patient,
            "renalLabs": searchset(
                newest([o for o in observations if loinc(o) & set(codes.renal)])[:20]
            ),
            "weight": searchset(
                newest([o for o in observations if loinc(o) & set(codes.body_weight)])[:1]
            ),
            "activeMedications": searchset(
                [m for m in of_type(name, "MedicationRequest") if m.get("status") == "active"]
            ),
            "conditions": searchset(of_type(name, "Condition")),
        },
    }


def latest_egfr(name: str) -> dict[str, Any]:
    egfrs = [o for o in of_type(name, "Observation") if loinc(o) & set(observation_codes().egfr)]
    return newest(egfrs)[0]


def cards_by_topic(client: FlaskClient, name: str) -> dict[str, dict[str, Any]]:
    cards = post(client, request_with_baclofen(name))
    by_topic = {c["source"]["topic"]["code"]: c for c in cards}
    assert len(by_topic) == len(cards), "one card per topic"
    return by_topic


@pytest.mark.parametrize("name", [EVELYN, HARTMANN, MAGGIO])
def test_old_egfr_is_reported_as_stale_with_its_value_and_date(
    client: FlaskClient, name: str
) -> None:
    """Every Synthea eGFR here is years old: kidney function is unknown, never normal."""
    egfr = latest_egfr(name)
    when = egfr["effectiveDateTime"][:10]
    assert date.fromisoformat(when) < date(2026, 1, 1)
    card = cards_by_topic(client, name)["renal-function-unknown"]
    assert when in card["summary"]
    assert f"{round(egfr['valueQuantity']['value'], 1):g}" in card["summary"]
    older = age_today(name) >= 65
    assert card["indicator"] == ("warning" if older else "info")
    # Why the tier is what it is: for pharmacists, in the card's extension.
    inputs = "\n".join(card["extension"][EXTENSION]["inputs"])
    assert ("Shown as a warning because the patient is 65 or over" in inputs) is older
    assert f"Age {age_today(name)} years" in card["detail"]


def test_a_record_that_says_the_patient_died_gets_that_card_alone(client: FlaskClient) -> None:
    """Evelyn's record says she died in 1985: not "Age 104" with dose advice, but one card."""
    (card,) = post(client, request_with_baclofen(EVELYN, as_recorded=True))
    assert card["source"]["topic"]["code"] == "deceased" and card["indicator"] == "warning"
    assert "deceased on 1985-01-28" in card["summary"]
    assert all(len(cards_by_topic(client, name)) > 1 for name in (HARTMANN, MAGGIO))


def test_evelyn_active_oxycodone_is_named_on_the_cns_card(client: FlaskClient) -> None:
    cards = cards_by_topic(client, EVELYN)
    assert cards["cns-depressant"]["indicator"] == "warning"
    assert "oxyCODONE" in cards["cns-depressant"]["detail"]
    # A 30 mg/day new start over 75: the older-adult start (10 mg/day), not the adult one.
    assert "titration" not in cards
    assert cards["geriatric"]["indicator"] == "info"
    assert "at most 10 mg/day" in cards["geriatric"]["summary"]


def test_hartmann_diazepam_and_epilepsy(client: FlaskClient) -> None:
    cards = cards_by_topic(client, HARTMANN)
    assert cards["cns-depressant"]["indicator"] == "warning"
    assert "Diazepam" in cards["cns-depressant"]["detail"]
    assert cards["condition-caution"]["indicator"] == "info"
    assert "epilepsy" in cards["condition-caution"]["summary"].lower()


def test_maggio_diazepam_and_sedating_antihistamine(client: FlaskClient) -> None:
    cards = cards_by_topic(client, MAGGIO)
    assert age_today(MAGGIO) < 65
    assert cards["cns-depressant"]["indicator"] == "warning"
    assert cards["interaction"]["indicator"] == "info"
    assert "chlorpheniramine" in cards["interaction"]["detail"].lower()
