"""The scenario table (tests/data/scenarios/scenarios.toml) through the real service.

Each scenario becomes a full CDS Hooks R4 request with every prefetch key filled, posted to
the app like an EHR would; the test compares the cards' (topic, indicator) set with the
table and checks every card against the response rules (no empty optional fields).
"""

from __future__ import annotations

import json
import logging
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cards.render import EXTENSION, catalogue
from cds_hooks.app import create_app
from cds_hooks.knowledge import load_knowledge
from tests.conftest import as_if_alive, load_json
from tests.scenario_requests import build_request, post

KNOWLEDGE = load_knowledge()
SCENARIOS = tomllib.loads(
    (Path(__file__).parent / "data" / "scenarios" / "scenarios.toml").read_text("utf-8")
)["scenario"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario(
    client: FlaskClient, scenario: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cards.render"):
        cards = post(client, build_request(scenario, date.today()))
    assert not caplog.records, "every fact a card template names was provided"
    got = {(c["source"]["topic"]["code"], c["indicator"]) for c in cards}
    expected = {tuple(pair) for pair in scenario["expect"]}
    assert got == expected, [c["summary"] for c in cards]
    assert len(cards) == len(got), "one card per topic"
    _check_words_and_sources(scenario, cards)
    if "proposal" in scenario:
        _check_proposal(scenario["proposal"], cards)


DOSE_TOPICS = frozenset(
    {
        "dose-unknown",
        "intrathecal-dose",
        "max-daily-dose",
        "titration",
        "renal-dose",
        "dialysis",
        "geriatric",
        "pediatric",
        "withdrawal",
        "renal-function-unknown",
    }
)
"""The topics whose cards are about the dose: a row expecting one is a dose scenario."""


def test_every_dose_scenario_names_the_proposal() -> None:
    """Each dose scenario says which dose a pharmacist would propose (or "none"), worked out
    from the rule table, so a change of the planner shows up as a changed expectation."""
    missing = [
        s["id"]
        for s in SCENARIOS
        if {topic for topic, _ in s["expect"]} & DOSE_TOPICS and "proposal" not in s
    ]
    assert not missing


def _check_proposal(expected: str, cards: list[dict[str, Any]]) -> None:
    """The row's ``proposal``: the dosage text of the one update offered (recommended, on the
    first card that carries one), or "none"."""
    updates = [
        (card, suggestion, action)
        for card in cards
        for suggestion in card.get("suggestions", ())
        for action in suggestion["actions"]
        if action["type"] == "update"
    ]
    if expected == "none":
        assert not updates, [a["resource"]["dosageInstruction"][0]["text"] for _, _, a in updates]
        return
    assert len(updates) == 1, len(updates)
    ((card, suggestion, action),) = updates
    assert suggestion.get("isRecommended") is True
    assert action["resource"]["dosageInstruction"][0]["text"] == expected
    assert card["suggestions"][0] is suggestion


KNOWN_SOURCES = KNOWLEDGE.sources


def _cited(card: dict[str, Any]) -> set[str]:
    """The ids of the sources a card cites (its extension lists them all)."""
    return {c["id"] for c in card["extension"][EXTENSION].get("citations", ())}


def _check_words_and_sources(scenario: dict[str, Any], cards: list[dict[str, Any]]) -> None:
    """The row's ``sources`` justify its expectation: each is a source of the knowledge, and
    where cards are expected each is cited on one of them; ``not_cited`` sources are cited on
    none (a source is quoted only where it supports the card). ``mentions`` are words some
    card must say (summary, detail or a suggestion's label), ``not_mentions`` words no card
    may say."""
    text = "\n".join(
        f"{c['summary']}\n{c['detail']}\n" + "\n".join(s["label"] for s in c.get("suggestions", ()))
        for c in cards
    )
    justified = scenario.get("sources", ())
    if isinstance(justified, dict):  # per topic: each cited on that topic's card
        by_topic = {c["source"]["topic"]["code"]: c for c in cards}
        for topic, keys in justified.items():
            for key in keys:
                assert key in _cited(by_topic[topic]), (topic, key)
        justified = ()
    for key in [*justified, *scenario.get("not_cited", ())]:
        assert key in KNOWN_SOURCES, f"unknown source {key}"
    cited = set().union(*map(_cited, cards))
    if cards:
        assert set(justified) <= cited, cited
    assert not cited & set(scenario.get("not_cited", ())), cited
    for words in scenario.get("mentions", ()):
        assert words in text, words
    for words in scenario.get("not_mentions", ()):
        assert words not in text, words


def test_every_rule_of_the_table_is_exercised_by_some_scenario() -> None:
    """A rule family added to the knowledge table without a scenario fails here."""
    topics = {pair[0] for s in SCENARIOS for pair in s["expect"]}
    knowledge = load_knowledge()
    enabled = {spec.topic for spec in knowledge.rules.values() if spec.enabled}
    assert enabled <= topics


EVELYN = "requests/sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json"
CAPTURED = {
    # Requests the public CDS Hooks sandbox really sent (tests/data/requests/README.md).
    # Evelyn died in 1985 (her Synthea record's deceasedDateTime): that card alone.
    "sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json": {("deceased", "warning")},
    # The sandbox patient is over 75: the 60 and 30 mg/day new starts are said on the
    # geriatric card (older-adult start); the Beers count of CNS-active drugs on the
    # CNS-depressant card.
    "sandbox-order-select-baclofen10-2tab-tid-spasticity.json": {
        ("cns-depressant", "critical"),
        ("renal-function-unknown", "warning"),
        ("geriatric", "info"),
    },
    "sandbox-order-sign-baclofen10-3tab-daily.json": {
        ("cns-depressant", "critical"),
        ("renal-function-unknown", "warning"),
        ("geriatric", "info"),
        ("max-daily-dose", "info"),
    },
    "sandbox-order-select-no-medication-yet.json": set(),
    "legacy-medication-prescribe-no-medication-yet.json": set(),
}


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_sandbox_requests(client: FlaskClient, name: str) -> None:
    body = json.loads((Path(__file__).parent / "data" / "requests" / name).read_text("utf-8"))
    cards = post(client, body["body"])
    assert {(c["source"]["topic"]["code"], c["indicator"]) for c in cards} == CAPTURED[name]


def test_evelyn_as_recorded_gets_the_deceased_card_with_her_date_of_death(
    client: FlaskClient,
) -> None:
    (card,) = post(client, load_json(EVELYN)["body"])
    assert card["summary"].startswith("The record marks this patient deceased on 1985-01-28:")
    assert "Patient record: deceased on 1985-01-28" in card["detail"]
    assert "Age" not in card["detail"]  # no "Age 104": nothing is worked out from her age
    (suggestion,) = card["suggestions"]  # removing the draft, offered but not recommended
    assert suggestion["actions"][0]["type"] == "delete" and "isRecommended" not in suggestion


def test_evelyn_cards_name_the_stale_egfr_and_the_opioid(client: FlaskClient) -> None:
    """Her real, messy data, read as for a living patient: eGFR 37.7 is from 1984, so
    stale (age >= 65: warning); the active oxycodone/acetaminophen order is a CNS
    depressant; 3 tablets once daily is a 30 mg single dose and a 30 mg/day new start,
    above the 10 mg/day older-adult start at her age (over 75), which the geriatric card
    says instead of the titration card's adult start."""
    body = load_json(EVELYN)["body"]
    body["prefetch"]["patient"] = as_if_alive(body["prefetch"]["patient"])
    cards = {c["source"]["topic"]["code"]: c for c in post(client, body)}
    assert {(topic, card["indicator"]) for topic, card in cards.items()} == {
        ("renal-function-unknown", "warning"),
        ("cns-depressant", "warning"),
        ("max-daily-dose", "info"),
        ("geriatric", "info"),
    }
    renal = cards["renal-function-unknown"]
    assert "37.7" in renal["summary"] and "1984-10-08" in renal["summary"]
    (creatinine,) = (
        action["resource"]
        for suggestion in renal["suggestions"]
        for action in suggestion["actions"]
        if action["type"] == "create"
    )
    assert creatinine["code"]["coding"][0]["code"] == "2160-0"
    assert creatinine["subject"]["reference"] == "Patient/3e26303e-a72a-4c60-866f-e5b81a9f1989"
    assert "oxyCODONE" in cards["cns-depressant"]["detail"]
    # No conditions prefetch and no reachable FHIR server: the kidney card says so.
    assert "Problem list could not be obtained" in renal["detail"]


def test_stop_order_card_offers_to_cancel_the_stop(client: FlaskClient) -> None:
    stop = next(s for s in SCENARIOS if s["id"] == "stop-intrathecal")
    (card,) = post(client, build_request(stop, date.today()))
    (suggestion,) = card["suggestions"]
    assert suggestion["label"].startswith("Cancel this stop order")
    assert suggestion["actions"][0]["resourceId"] == "MedicationRequest/d1"


def test_every_rule_has_card_wording() -> None:
    wording = catalogue().rules
    for rule_id in load_knowledge().rules:
        assert rule_id in wording or any(key.startswith(f"{rule_id}.") for key in wording)


@pytest.fixture
def policy_client(app_config: dict[str, Any], tmp_path: Path) -> FlaskClient:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[rules.R4b]\nenabled = false\n\n[rules.R3b]\nenabled = false\n\n"
        "[rules.R4d.thresholds]\nceiling = 45\n",
        encoding="utf-8",
    )
    app_config["POLICY_FILE"] = str(policy)
    return create_app(app_config).test_client()


def test_policy_switching_off_a_severe_rule_falls_back_to_the_milder_one(
    policy_client: FlaskClient,
) -> None:
    severe = next(s for s in SCENARIOS if s["id"] == "egfr-29")
    (renal,) = post(policy_client, build_request(severe, date.today()))
    assert (renal["indicator"], renal["summary"][:45]) == (
        "warning",
        "Baclofen 60 mg/day exceeds 40 mg/day for eGFR",
    )
    beyond = next(s for s in SCENARIOS if s["id"] == "oral-121-mg")
    (dose,) = post(policy_client, build_request(beyond, date.today()))
    assert dose["indicator"] == "warning"


def test_policy_thresholds_reach_the_card_text(policy_client: FlaskClient) -> None:
    mild = next(s for s in SCENARIOS if s["id"] == "egfr-80")
    (card,) = post(policy_client, build_request(mild, date.today()))
    assert "exceeds 45 mg/day" in card["summary"]


def test_with_r9_switched_off_a_deceased_record_gets_the_ordinary_checks(
    app_config: dict[str, Any], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[rules.R9]\nenabled = false\n", encoding="utf-8")
    client = create_app({**app_config, "POLICY_FILE": str(policy)}).test_client()
    deceased = next(s for s in SCENARIOS if s["id"] == "deceased-with-a-date")
    topics = {
        c["source"]["topic"]["code"] for c in post(client, build_request(deceased, date.today()))
    }
    assert "deceased" not in topics and {"cns-depressant", "renal-function-unknown"} <= topics


def cards_of(client: FlaskClient, scenario_id: str) -> dict[str, dict[str, Any]]:
    scenario = next(s for s in SCENARIOS if s["id"] == scenario_id)
    return {
        c["source"]["topic"]["code"]: c for c in post(client, build_request(scenario, date.today()))
    }


def test_kidney_cards_name_the_value_used_and_why(client: FlaskClient) -> None:
    newer = cards_of(client, "newer-raised-creatinine-over-older-normal-egfr")["renal-dose"]
    assert "eGFR 27.7" in newer["summary"] and "calculated" in newer["summary"]
    # How the value was worked out is in the card's extension; the detail says which value
    # set the ceiling and why, since the prescriber reads only the detail.
    inputs = newer["extension"][EXTENSION]["inputs"]
    assert any("newer than the reported eGFR 92" in line for line in inputs)
    assert "Used: eGFR 27.7 (" in newer["detail"] and "stricter than eGFR 92" in newer["detail"]
    cystatin = cards_of(client, "cystatin-egfr-preferred-low-muscle-mass")["renal-dose"]
    assert "cystatin C" in cystatin["summary"]
    assert "Not used: eGFR 110" in cystatin["detail"]
    assert "cystatin C-based eGFR is preferred, since creatinine overstates" in cystatin["detail"]
    same_day = cards_of(client, "same-day-egfrs-stricter-wins")["renal-dose"]
    assert "Not used: eGFR 65" in same_day["detail"] and "stricter" in same_day["detail"]


def test_kidney_injury_card_says_function_is_unstable_and_offers_a_creatinine(
    client: FlaskClient,
) -> None:
    within = cards_of(client, "aki-1-5-times-lowest-of-7-days")["renal-dose"]
    assert within["summary"].startswith("Creatinine rising (0.80 to 1.25 mg/dL")
    assert "acute kidney injury (KDIGO" in within["detail"]
    assert "overstate kidney function" in within["detail"]
    # A 15 mg/day new start at eGFR 48.7 is offered the moderate band's 5 mg/day start.
    assert [s["label"] for s in within["suggestions"]] == [
        "Change to 1 tablet (5 mg) once a day = 5 mg/day",
        "Order serum creatinine",
    ]
    over = cards_of(client, "aki-rise-within-48-hours-over-ceiling")["renal-dose"]
    assert over["summary"].startswith("Baclofen 60 mg/day exceeds 50 mg/day for eGFR 64.9")
    assert "creatinine rising" in over["summary"]
    assert "0.40 mg/dL in 36 h" in over["detail"]
    labels = [s["label"] for s in over["suggestions"]]
    assert labels[0].startswith("Change to") and "Order serum creatinine" in labels
