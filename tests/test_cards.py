"""Card content through the real service: numbers in the summary, inputs and sources in the
detail, one-click fixes in the draft's own FHIR shape, coded override reasons, the card cap."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards import topic_of_card
from cards.card_uuid import topic_tail, with_topic
from cards.render import EXTENSION, _uuid_texts, catalogue, updated_resource
from cds_hooks.app import create_app
from cds_hooks.engine.findings import ProposedRegimen
from cds_hooks.knowledge import KNOWLEDGE_VERSION, load_knowledge
from cds_hooks.model import (
    FhirVersion,
    MedicationOrder,
    Topic,
)
from tests.scenario_requests import build_request, post

VOCABULARY = json.loads(
    (Path(__file__).parents[1] / "cards" / "non-adherence-reason-codes.json").read_text("utf-8")
)
KNOWLEDGE = load_knowledge()
EGFR_24 = {"loinc": "98979-8", "value": 24, "unit": "mL/min/{1.73_m2}", "days_ago": 50}


def scenario(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "patient": {"age": 50, "sex": "female"},
        "labs": [EGFR_24],
        "drafts": [
            {
                "id": "d1",
                "rxnorm": "197391",
                "name": "Baclofen 10 MG Oral Tablet",
                "dose": 2,
                "unit": "{pill}",
                "frequency": 3,
            }
        ],
    }
    return base | overrides


def by_topic(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["source"]["topic"]["code"]: c for c in cards}


def codes(concepts: list[dict[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for concept in concepts:
        found[concept["code"]] = concept["display"]
        found |= codes(concept.get("concept", []))
    return found


def test_renal_card_states_dose_ceiling_and_dated_egfr(client: FlaskClient) -> None:
    card = by_topic(post(client, build_request(scenario(), date.today())))["renal-dose"]
    lab_date = (date.today() - timedelta(days=50)).isoformat()
    assert card["indicator"] == "critical"
    assert card["summary"] == f"Baclofen 60 mg/day exceeds 20 mg/day for eGFR 24 ({lab_date})"
    detail = card["detail"]
    assert "2 × 10 mg tablet" in detail and "= 60 mg/day" in detail  # how the dose was computed
    assert f"eGFR 24 ({lab_date})" in detail
    assert "Age 50 years" in detail
    # The source as a link, its full citation and the knowledge version for machines.
    assert "Muanda" in detail and "JAMA. 2019" not in detail
    assert {"label": "Muanda 2019", "url": "https://pubmed.ncbi.nlm.nih.gov/31705755/"} in [
        {k: link[k] for k in ("label", "url")} for link in card["links"]
    ]
    provenance = card["extension"][EXTENSION]
    assert any("JAMA. 2019" in c["citation"] for c in provenance["citations"])
    assert provenance["knowledgeVersion"] == KNOWLEDGE_VERSION
    assert KNOWLEDGE_VERSION in card["source"]["label"]
    assert card["source"]["topic"]["display"]


def test_renal_card_offers_the_renal_start_in_the_same_tablet(client: FlaskClient) -> None:
    """A new start at eGFR 24: the severe band's 5 mg/day start (half a scored 10 mg tablet
    once a day), not the 20 mg/day ceiling."""
    card = by_topic(post(client, build_request(scenario(), date.today())))["renal-dose"]
    assert card["selectionBehavior"] == "at-most-one"
    update, delete = card["suggestions"]
    assert update["isRecommended"] is True and "isRecommended" not in delete
    action = update["actions"][0]
    assert action["type"] == "update" and action["description"]
    resource = action["resource"]
    assert resource["id"] == "d1" and resource["resourceType"] == "MedicationRequest"
    assert resource["medicationCodeableConcept"]["coding"][0]["code"] == "197391"
    dosage = resource["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 0.5
    assert dosage["timing"]["repeat"] == {"frequency": 1, "period": 1, "periodUnit": "d"}
    assert dosage["text"] == "½ tablet (5 mg) once a day = 5 mg/day"
    assert delete["actions"] == [
        {
            "type": "delete",
            "description": delete["actions"][0]["description"],
            "resourceId": "MedicationRequest/d1",
        }
    ]
    for suggestion in card["suggestions"]:
        assert uuid.UUID(suggestion["uuid"]).version == 4


def test_liquid_proposal_is_in_millilitres(client: FlaskClient) -> None:
    solution = {
        "id": "d1",
        "rxnorm": "2667941",
        "name": "Baclofen 2 MG/ML Oral Solution",
        "dose": 15,
        "unit": "mL",
        "frequency": 3,
    }
    egfr_40 = EGFR_24 | {"value": 40}
    card = by_topic(
        post(client, build_request(scenario(drafts=[solution], labs=[egfr_40]), date.today()))
    )["renal-dose"]
    assert card["summary"].startswith("Baclofen 90 mg/day exceeds 40 mg/day")
    dose = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]
    quantity = dose["doseAndRate"][0]["doseQuantity"]
    assert quantity["code"] == "mL"
    assert quantity["value"] * 2 * dose["timing"]["repeat"]["frequency"] <= 40


def test_missing_kidney_function_offers_a_creatinine_order(client: FlaskClient) -> None:
    card = by_topic(post(client, build_request(scenario(labs=[]), date.today())))[
        "renal-function-unknown"
    ]
    (suggestion,) = card["suggestions"]
    create = suggestion["actions"][0]
    assert create["type"] == "create" and create["description"]
    order = create["resource"]
    assert order["resourceType"] == "ServiceRequest"
    assert (order["status"], order["intent"]) == ("draft", "order")
    assert order["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "2160-0",
        "display": "Creatinine [Mass/volume] in Serum or Plasma",
    }
    assert order["subject"]["reference"] == "Patient/scenario-patient"


def test_stale_low_egfr_still_flags_a_dose_above_its_ceiling(client: FlaskClient) -> None:
    stale = EGFR_24 | {"days_ago": 400}
    card = by_topic(post(client, build_request(scenario(labs=[stale]), date.today())))[
        "renal-function-unknown"
    ]
    lab_date = (date.today() - timedelta(days=400)).isoformat()
    assert card["indicator"] == "warning"
    assert "60 mg/day exceeds 20 mg/day" in card["summary"] and lab_date in card["summary"]
    labels = [s["label"] for s in card["suggestions"]]
    assert any("creatinine" in label.lower() for label in labels)
    (update,) = [s for s in card["suggestions"] if s["actions"][0]["type"] == "update"]
    dosage = update["actions"][0]["resource"]["dosageInstruction"][0]
    assert dosage["text"] == "½ tablet (5 mg) once a day = 5 mg/day"  # the renal start
    # The warning comes from the dose, not from age: a 50-year-old is not called older.
    assert "Age 50 years" in card["detail"]
    assert "or over" not in card["detail"]


def test_a_stale_result_in_kidney_failure_is_held_to_the_kidney_failure_ceiling(
    client: FlaskClient,
) -> None:
    """The stale, current and no-birth-date readings band kidney function alike: R4a first."""
    stale = EGFR_24 | {"value": 10, "days_ago": 400}
    card = by_topic(post(client, build_request(scenario(labs=[stale]), date.today())))[
        "renal-function-unknown"
    ]
    assert "60 mg/day exceeds 5 mg/day" in card["summary"]
    # Half a scored 10 mg tablet once a day: the kidney-failure most, never the severe band's 20.
    update, create = card["suggestions"]
    assert create["actions"][0]["type"] == "create"
    dosage = update["actions"][0]["resource"]["dosageInstruction"][0]
    assert dosage["text"] == "½ tablet (5 mg) once a day = 5 mg/day"


@pytest.mark.parametrize(
    ("patient", "reason"),
    [
        ({"age": 70, "sex": "female"}, "because the patient is 65 or over"),
        ({"sex": "female"}, "because the age is unknown and may be 65 or over"),
    ],
)
def test_missing_kidney_function_is_a_warning_for_older_or_unknown_age(
    client: FlaskClient, patient: dict[str, Any], reason: str
) -> None:
    request = build_request(scenario(patient=patient, labs=[]), date.today())
    card = by_topic(post(client, request))["renal-function-unknown"]
    assert card["indicator"] == "warning"
    assert reason in card["detail"]


def test_without_birth_date_a_high_creatinine_is_not_read_as_missing(
    client: FlaskClient,
) -> None:
    creatinine = {"loinc": "2160-0", "value": 3.5, "unit": "mg/dL", "days_ago": 10}
    request = build_request(scenario(patient={"sex": "female"}, labs=[creatinine]), date.today())
    card = by_topic(post(client, request))["renal-function-unknown"]
    assert card["indicator"] == "critical"
    assert "60 mg/day exceeds 20 mg/day even for the youngest adult" in card["summary"]
    assert any("creatinine 3.50 mg/dL" in line for line in card["extension"][EXTENSION]["inputs"])
    assert "No eGFR, creatinine clearance or serum creatinine was found" not in card["detail"]
    # A new start is offered the severe band's 5 mg/day start, which holds at any age, or
    # removal; never the youngest adult's ceiling, since the patient's own may be lower.
    assert [s["label"] for s in card["suggestions"]] == [
        "Change to ½ tablet (5 mg) once a day = 5 mg/day",
        "Remove this baclofen order",
    ]


def test_missing_problem_list_is_said_when_no_kidney_card_would(client: FlaskClient) -> None:
    request = build_request(scenario(labs=[EGFR_24 | {"value": 95}]), date.today())
    del request["prefetch"]["conditions"]
    card = by_topic(post(client, request))["dialysis"]
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Problem list could not be retrieved")
    assert "dialysis, end-stage kidney disease and the label precautions" in card["detail"]
    assert "5 mg/day on dialysis; ordered: 60 mg/day" in card["detail"]


def test_missing_problem_list_names_the_unchecked_precautions_for_intrathecal_orders(
    client: FlaskClient,
) -> None:
    pump = {
        "id": "d1",
        "rxnorm": "1047437",
        "name": "Baclofen 0.05 MG/ML Injection",
        "dose": 50,
        "unit": "ug",
        "count": 1,
        "route": "intrathecal",
    }
    request = build_request(scenario(drafts=[pump]), date.today())
    del request["prefetch"]["conditions"]
    card = by_topic(post(client, request))["condition-caution"]
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Problem list could not be retrieved")
    assert "epilepsy, psychosis, autonomic dysreflexia, stroke, pregnancy" in card["detail"]
    assert "Problem list could not be obtained" in card["detail"]


def test_kidney_cards_list_the_unchecked_precautions_with_the_missing_problem_list(
    client: FlaskClient,
) -> None:
    request = build_request(scenario(), date.today())
    del request["prefetch"]["conditions"]
    cards = by_topic(post(client, request))
    assert "condition-caution" not in cards
    detail = cards["renal-dose"]["detail"]
    assert "dialysis, ESRD and label precautions were not checked" in detail


def test_missing_medication_list_is_said_not_silenced(client: FlaskClient) -> None:
    request = build_request(scenario(labs=[EGFR_24 | {"value": 95}]), date.today())
    del request["prefetch"]["activeMedications"]
    card = by_topic(post(client, request))["cns-depressant"]
    assert card["indicator"] == "info"
    assert "could not be retrieved" in card["summary"]
    assert "only the orders in this session were checked" in card["detail"]


def test_missing_birth_date_is_said_not_read_as_an_adults_age(client: FlaskClient) -> None:
    request = build_request(scenario(patient={"sex": "female"}), date.today())
    assert "birthDate" not in request["prefetch"]["patient"]
    cards = by_topic(post(client, request))
    card = cards["age-unknown"]
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Patient age unknown (no birth date)")
    detail = card["detail"]
    assert "oral baclofen under age 12" in detail
    assert "intrathecal baclofen under age 4" in detail
    assert "from age 65" in detail
    assert "suggestions" not in card  # nothing to click: the fix is a birth date in the record
    # The other cards still run and list the missing age among their inputs.
    assert cards["renal-dose"]["indicator"] == "critical"
    assert "Age unknown (no birth date)" in cards["renal-dose"]["detail"]


def test_age_unknown_card_quotes_the_institutions_age_limits(
    tmp_path: Path, app_config: dict[str, Any]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[rules.R5a.thresholds]\nmin_age = 14\n", encoding="utf-8")
    client = create_app({**app_config, "POLICY_FILE": str(policy)}).test_client()
    request = build_request(scenario(patient={"sex": "female"}), date.today())
    card = by_topic(post(client, request))["age-unknown"]
    assert "oral baclofen under age 14" in card["detail"]


def test_intrathecal_order_whose_dose_cannot_be_read_is_not_silent(client: FlaskClient) -> None:
    pump = {
        "id": "d1",
        "rxnorm": "1047437",
        "name": "baclofen 0.05 MG/ML Injectable Solution",
        "dose": 1,
        "unit": "ug",
        "frequency": 1,
        "route": "intrathecal",
    }
    request = build_request(scenario(drafts=[pump], labs=[EGFR_24 | {"value": 95}]), date.today())
    dosage = request["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"][0]
    dosage.pop("timing")
    dosage["doseAndRate"] = [{"rateQuantity": {"value": 1, "unit": "ug/kg/h", "code": "ug/kg/h"}}]
    card = by_topic(post(client, request))["dose-unknown"]
    assert card["indicator"] == "info"


def test_one_cns_card_names_every_depressant(client: FlaskClient) -> None:
    active = [
        {
            "id": "a1",
            "rxnorm": "1049221",
            "name": "Acetaminophen 325 MG / oxyCODONE 5 MG Oral Tablet",
        },
        {"id": "a2", "name": "Gabapentin 300 MG Oral Capsule"},
        {"id": "a3", "name": "Zolpidem Tartrate 5 MG Oral Tablet"},
    ]
    cards = post(client, build_request(scenario(active=active), date.today()))
    cns = [c for c in cards if c["source"]["topic"]["code"] == "cns-depressant"]
    assert len(cns) == 1 and cns[0]["indicator"] == "critical"
    for name in ("oxyCODONE", "Gabapentin", "Zolpidem"):
        assert name in cns[0]["detail"]
    (suggestion,) = cns[0]["suggestions"]  # offered, not pressed: the other drug may go instead
    assert suggestion["actions"][0]["type"] == "delete" and "isRecommended" not in suggestion


def test_cards_come_most_severe_first_with_coded_override_reasons(client: FlaskClient) -> None:
    active = [{"id": "a1", "name": "Hydroxyzine Hydrochloride 25 MG Oral Tablet"}]
    cards = post(client, build_request(scenario(active=active), date.today()))
    ranks = {"critical": 2, "warning": 1, "info": 0}
    assert [ranks[c["indicator"]] for c in cards] == sorted(
        (ranks[c["indicator"]] for c in cards), reverse=True
    )
    known = codes(VOCABULARY["concept"])
    for card in cards:
        assert card["overrideReasons"]
        for reason in card["overrideReasons"]:
            assert reason["system"] == VOCABULARY["url"]
            assert reason["display"] == known[reason["code"]]
        for link in card["links"]:
            assert link["type"] == "absolute" and link["url"].startswith("https://")
        # RFC 9562 version 8, the topic in the last byte (cards/card_uuid.py).
        assert uuid.UUID(card["uuid"]).version == 8
        assert uuid.UUID(card["uuid"]).variant == uuid.RFC_4122
        assert topic_of_card(card["uuid"]) == card["source"]["topic"]["code"]
    assert len({c["uuid"] for c in cards}) == len(cards)


def test_ehr_text_cannot_inject_html_into_the_detail(client: FlaskClient) -> None:
    active = [{"id": "a1", "name": "<img src=x onerror=alert(1)> oxycodone 5 MG Oral Tablet"}]
    card = by_topic(post(client, build_request(scenario(active=active), date.today())))[
        "cns-depressant"
    ]
    assert "<img" not in card["detail"]
    assert "&lt;img" in card["detail"]


@pytest.fixture
def capped_client(app_config: dict[str, Any]) -> FlaskClient:
    app_config["MAX_CARDS"] = 2
    return create_app(app_config).test_client()


def test_card_cap_says_how_many_were_left_out(capped_client: FlaskClient) -> None:
    active = [
        {"id": "a1", "name": "Morphine Sulfate 15 MG Oral Tablet"},
        {"id": "a2", "name": "Hydroxyzine Hydrochloride 25 MG Oral Tablet"},
    ]
    conditions = [{"snomed": "84757009", "text": "Epilepsy"}]
    request = build_request(scenario(active=active, conditions=conditions), date.today())
    cards = post(capped_client, request)
    assert [c["indicator"] for c in cards] == ["critical", "warning"]
    assert "more baclofen alert(s) not shown" in cards[-1]["detail"]
    assert "Baclofen label precautions" in cards[-1]["detail"]


def _order(version: FhirVersion, raw: dict[str, Any]) -> MedicationOrder:
    return MedicationOrder(
        reference=f"{raw['resourceType']}/{raw['id']}",
        resource_type=raw["resourceType"],
        fhir_version=version,
        raw=raw,
    )


REGIMEN = ProposedRegimen(
    dose_value=1,
    dose_unit="tablet",
    dose_code="{tbl}",
    frequency=2,
    period=1,
    period_unit="d",
    daily_dose=20,
    daily_unit="mg",
    text="1 tablet (10 mg) twice a day = 20 mg/day",
)


def test_update_keeps_dstu2_shape() -> None:
    raw = {
        "resourceType": "MedicationOrder",
        "id": "legacy-1",
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnits": "d"}},
                "doseQuantity": {"value": 2, "unit": "tab"},
            }
        ],
    }
    updated = updated_resource(_order(FhirVersion.DSTU2, raw), REGIMEN)
    assert updated is not None and updated["id"] == "legacy-1"
    dosage = updated["dosageInstruction"][0]
    assert dosage["timing"]["repeat"] == {"frequency": 2, "period": 1, "periodUnits": "d"}
    assert dosage["doseQuantity"]["value"] == 1 and "doseAndRate" not in dosage
    assert raw["dosageInstruction"][0]["doseQuantity"]["value"] == 2  # draft itself untouched


def test_update_keeps_stu3_shape() -> None:
    raw = {
        "resourceType": "MedicationRequest",
        "id": "stu3-1",
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
                "doseQuantity": {"value": 2, "unit": "tab"},
                "route": {"text": "oral"},
            }
        ],
    }
    updated = updated_resource(_order(FhirVersion.STU3, raw), REGIMEN)
    assert updated is not None
    dosage = updated["dosageInstruction"][0]
    assert dosage["timing"]["repeat"] == {"frequency": 2, "period": 1, "periodUnit": "d"}
    assert dosage["doseQuantity"]["code"] == "{tbl}" and dosage["route"] == {"text": "oral"}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    age=st.integers(min_value=0, max_value=110),
    egfr=st.floats(min_value=1, max_value=150, allow_nan=False),
    tablets=st.integers(min_value=1, max_value=8),
    frequency=st.integers(min_value=1, max_value=6),
    strength=st.sampled_from([("430902", 5), ("197391", 10), ("197392", 20)]),
)
def test_any_oral_regimen_gives_wellformed_cards_and_never_misses_severe_impairment(
    client: FlaskClient,
    age: int,
    egfr: float,
    tablets: int,
    frequency: int,
    strength: tuple[str, int],
) -> None:
    rxcui, mg = strength
    draft = {
        "id": "d1",
        "rxnorm": rxcui,
        "name": f"Baclofen {mg} MG Oral Tablet",
        "dose": tablets,
        "unit": "{pill}",
        "frequency": frequency,
    }
    lab = EGFR_24 | {"value": round(egfr, 1), "days_ago": 5}
    request = build_request(
        scenario(patient={"age": age, "sex": "male"}, labs=[lab], drafts=[draft]), date.today()
    )
    cards = post(client, request)  # checks summary length and no empty optional fields
    got = {(c["source"]["topic"]["code"], c["indicator"]) for c in cards}
    daily = tablets * mg * frequency
    if round(egfr, 1) < 15:
        assert ("dialysis", "critical") in got
    elif round(egfr, 1) < 30 and daily > 20:
        assert ("renal-dose", "critical") in got
    if daily > 120:
        assert ("max-daily-dose", "critical") in got
    for card in cards:
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if action["type"] == "update":
                    assert "= " in action["resource"]["dosageInstruction"][0]["text"]


@given(
    st.integers(min_value=0, max_value=12).flatmap(
        lambda n: st.binary(min_size=16 * n, max_size=16 * n)
    )
)
def test_uuid_texts_are_the_stdlibs_version_4_uuids(random: bytes) -> None:
    """The one-mask fast path writes exactly what ``uuid.UUID(bytes=..., version=4)`` does."""
    expected = [
        str(uuid.UUID(bytes=random[i : i + 16], version=4)) for i in range(0, len(random), 16)
    ]
    assert _uuid_texts(random) == expected


def test_uuid_texts_cover_the_extreme_bits() -> None:
    for random in (bytes(48), b"\xff" * 48, bytes(16) + b"\xff" * 16 + bytes(16)):
        expected = [str(uuid.UUID(bytes=random[i : i + 16], version=4)) for i in (0, 16, 32)]
        assert _uuid_texts(random) == expected


def test_every_topic_has_its_own_code_for_card_uuids() -> None:
    topics = catalogue().topics
    assert set(topics) == {t.value for t in Topic}
    codes_ = [entry["code"] for entry in topics.values()]
    assert all(isinstance(c, int) and 1 <= c <= 255 for c in codes_)
    assert len(set(codes_)) == len(codes_)


def test_a_card_uuid_names_its_topic_and_no_other_uuid_does() -> None:
    random = str(uuid.uuid4())
    for name, entry in catalogue().topics.items():
        card = with_topic(random, topic_tail(entry["code"]))
        assert str(uuid.UUID(card)) == card  # canonical text, as clients echo it
        assert topic_of_card(card) == name
        assert topic_of_card(card.upper()) == name
        assert card[:14] == random[:14] and card[15:32] == random[15:32]
    assert topic_of_card(random) is None  # version 4: a suggestion's, or another service's
    other_v8 = str(uuid.UUID(int=(uuid.UUID(random).int & ~(0xF << 76)) | (8 << 76)))
    assert topic_of_card(other_v8[:32] + "00" + other_v8[34:]) is None
    assert topic_of_card(with_topic(random, topic_tail(250))) is None  # a code no topic has
    with pytest.raises(ValueError):
        topic_tail(256)
    assert topic_of_card("not a uuid") is None


def test_the_beers_kidney_statement_is_said_on_the_kidney_card(client: FlaskClient) -> None:
    """Age 85 at eGFR 24 starting 60 mg/day: one kidney card says both the ceiling and the
    Beers advice to avoid baclofen, citing Beers; the older-adult start stays on its own card."""
    request = build_request(scenario(patient={"age": 85, "sex": "female"}), date.today())
    cards = by_topic(post(client, request))
    renal = cards["renal-dose"]
    assert renal["indicator"] == "critical"
    assert "AGS Beers 2023 says avoid baclofen" in renal["detail"]
    assert [r["rule"] for r in renal["extension"][EXTENSION]["rules"]] == ["R4b", "R4e"]
    assert "AGS Beers 2023" in [link["label"] for link in renal["links"]]
    geriatric = cards["geriatric"]
    assert [r["rule"] for r in geriatric["extension"][EXTENSION]["rules"]] == ["R5c"]
    assert "Beers" not in geriatric["detail"]


def test_a_reason_another_reason_says_is_not_repeated(client: FlaskClient) -> None:
    """An opioid with a benzodiazepine: the combination's reason names both drugs, so the
    opioid's and the benzodiazepine's own reasons are not said again beneath it."""
    active = [
        {"id": "a1", "name": "Morphine Sulfate 15 MG Oral Tablet"},
        {"id": "a2", "name": "Lorazepam 1 MG Oral Tablet"},
    ]
    request = build_request(scenario(labs=[], active=active), date.today())
    cns = by_topic(post(client, request))["cns-depressant"]
    rules = [r["rule"] for r in cns["extension"][EXTENSION]["rules"]]
    assert rules[0] == "R6b" and {"R6a", "R6c"} <= set(rules)
    assert "\n- " not in cns["detail"]
    assert cns["detail"].count("Morphine") == 1
