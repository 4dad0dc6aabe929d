"""The knowledge data: rule table, sources, versions, and drug / condition recognition."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from cds_hooks.fhir import medication_concept
from cds_hooks.knowledge import (
    KNOWLEDGE_VERSION,
    Knowledge,
    load_knowledge,
    observation_codes,
    read_data,
)
from cds_hooks.knowledge.conditions import condition_index
from cds_hooks.knowledge.drugs import (
    MedicationTriage,
    drug_index,
    triage_medication,
)
from cds_hooks.model import (
    ICD10CM,
    RXNORM,
    SNOMED,
    Coding,
    Concept,
    Indicator,
    MedicationProduct,
    Quantity,
    Ratio,
    Topic,
)

CONTRACT_RULES = [
    "R1a",
    "R1b",
    "R2a",
    "R2b",
    "R2c",
    "R2d",
    "R3a",
    "R3b",
    "R3c",
    "R3d",
    "R4a",
    "R4b",
    "R4c",
    "R4d",
    "R4e",
    "R4f",
    "R5a",
    "R5b",
    "R5c",
    "R6a",
    "R6b",
    "R6c",
    "R6d",
    "R6e",
    "R6f",
    "R6g",
    "R6h",
    "R7a",
    "R7b",
    "R7c",
    "R7d",
    "R8",
]
CONTRACT_CLASSES = [
    "opioid",
    "benzodiazepine",
    "z-drug",
    "barbiturate",
    "gabapentinoid",
    "muscle-relaxant",
    "oxybate",
    "sedating-antihistamine",
    "antipsychotic",
    "tricyclic",
    "maoi",
    "levodopa",
    "antihypertensive",
]
DATA = resources.files("cds_hooks.knowledge").joinpath("data")


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return load_knowledge()


def rx(code: str, display: str | None = None) -> Concept:
    return Concept(codings=(Coding(RXNORM, code, display),))


def text(value: str) -> Concept:
    return Concept(text=value)


# --- rule table -------------------------------------------------------------------------


def test_every_contract_rule_is_in_the_table_with_cited_sources(knowledge: Knowledge) -> None:
    assert set(CONTRACT_RULES) <= set(knowledge.rules)
    for spec in knowledge.rules.values():
        assert spec.trigger and spec.source_ids, spec.id
        assert isinstance(spec.topic, Topic) and isinstance(spec.tier, Indicator)
        for source in spec.source_ids:
            assert source in knowledge.sources
        for threshold in spec.thresholds.values():
            assert threshold.note and threshold.source_ids, (spec.id, threshold.name)
            assert all(s in knowledge.sources for s in threshold.source_ids)


def test_source_scopes_name_known_classes_and_ages(knowledge: Knowledge) -> None:
    """A scope that names no real class would hide the source from every card."""
    for source in knowledge.sources.values():
        for class_id in source.with_classes:
            assert knowledge.drug_class(class_id), (source.id, class_id)
        assert source.from_age is None or 0 < source.from_age < 130
    assert knowledge.unsupported_sources(64, frozenset({"opioid"})) == {
        "BEERS23",
        "BEERS19",
        "FDA-2019",
    }
    assert knowledge.unsupported_sources(None, frozenset()) >= {"BEERS23", "FDA-2019"}
    assert knowledge.unsupported_sources(65, frozenset({"gabapentinoid"})) == frozenset()


def test_tiers_follow_the_product_decision(knowledge: Knowledge) -> None:
    critical = {"R1a", "R2d", "R4a", "R4b", "R3b", "R6b", "R7b"}
    warning = {
        "R4c",
        "R3a",
        "R5a",
        "R5b",
        "R4e",
        "R6a",
        "R6c",
        "R6h",
        "R6d",
        "R6e",
        "R2a",
        "R2b",
        "R2c",
        "R7a",
        "R7c",
        "R8f",
    }
    info = {"R3d", "R4d", "R4i", "R5c", "R6f", "R0", "R4f", "R8", "R8c", "R8d", "R8e", "R6j"}
    assert {r for r in critical if knowledge.rules[r].tier is Indicator.CRITICAL} == critical
    assert {r for r in warning if knowledge.rules[r].tier is Indicator.WARNING} == warning
    assert {r for r in info if knowledge.rules[r].tier is Indicator.INFO} == info
    assert knowledge.rules["R6g"].enabled is False
    assert all(knowledge.rules[r].enabled for r in CONTRACT_RULES if r != "R6g")


def test_issue_thresholds(knowledge: Knowledge) -> None:
    def t(rule_id: str, name: str) -> float:
        return knowledge.thresholds[rule_id, name]

    assert (t("R4b", "ceiling"), t("R4c", "ceiling"), t("R4d", "ceiling")) == (20, 40, 50)
    assert (t("R4a", "esrd_limit"), t("R4b", "severe_limit"), t("R4c", "crcl_limit")) == (
        15,
        30,
        50,
    )
    assert (t("R4c", "egfr_limit"), t("R4d", "crcl_limit"), t("R4e", "egfr_limit")) == (60, 80, 60)
    assert (t("R3a", "max_daily"), t("R3b", "max_daily"), t("R3c", "max_single_dose")) == (
        80,
        120,
        20,
    )
    assert (t("R2a", "max_bolus"), t("R2b", "max_daily")) == (100, 1000)
    assert (t("R2c", "max_increase_spinal"), t("R2c", "max_increase_cerebral")) == (30, 15)
    assert (t("R5a", "min_age"), t("R5b", "min_age"), t("R4e", "age")) == (12, 4, 65)
    assert (t("R3d", "start_daily"), t("R3d", "step_increase"), t("R3d", "step_days")) == (
        15,
        15,
        3,
    )
    assert (t("R4f", "lookback"), t("R4f", "lookback_high_risk")) == (365, 90)
    assert t("R5c", "start_daily") == 15
    assert 0 < t("R7a", "sharp_cut") <= 100
    assert "Muanda" in knowledge.sources["MUANDA"].citation
    assert "MUANDA" in knowledge.rules["R4b"].thresholds["ceiling"].source_ids


def test_kidney_readings_cite_known_sources_and_name_egfr_codes(knowledge: Knowledge) -> None:
    codes = observation_codes()
    assert codes.cystatin_c_egfr <= set(codes.egfr)
    rise = codes.creatinine_rise
    assert (rise.rise_mg_dl, rise.rise_window, rise.ratio, rise.ratio_window) == (
        0.3,
        timedelta(hours=48),
        1.5,
        timedelta(days=7),
    )
    assert rise.history_days == 7
    cited = [*codes.cystatin_c_sources, *rise.source_ids]
    cited += tomllib.loads(DATA.joinpath("observations.toml").read_text("utf-8"))["egfr"]["sources"]
    assert cited and all(source in knowledge.sources for source in cited)


def test_one_version_for_every_data_file() -> None:
    manifest = tomllib.loads(DATA.joinpath("manifest.toml").read_text(encoding="utf-8"))
    assert manifest["version"] == KNOWLEDGE_VERSION == observation_codes().version
    for name in manifest["files"]:
        raw = DATA.joinpath(name).read_text(encoding="utf-8")
        data = json.loads(raw) if name.endswith(".json") else tomllib.loads(raw)
        assert data["version"] == KNOWLEDGE_VERSION, name


def test_the_changelog_says_what_the_current_knowledge_version_changed() -> None:
    """Cards carry the knowledge version; CHANGELOG.md is where a reader looks it up."""
    changelog = (Path(__file__).parent.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"\n| {KNOWLEDGE_VERSION} | " in changelog


def test_vendored_value_sets_are_verbatim_and_documented() -> None:
    readme = DATA.joinpath("valuesets", "README.md").read_text(encoding="utf-8")
    assert "b29bdcbf6db6f3de26486dbc3820572ee9a78b89" in readme and "CC0" in readme
    for entry in DATA.joinpath("valuesets").iterdir():
        if entry.name.endswith(".json"):
            assert entry.name in readme
            assert json.loads(entry.read_text(encoding="utf-8"))["resourceType"] == "ValueSet"


def test_every_cns_depressant_member_is_classified_or_deliberately_skipped() -> None:
    assert drug_index().unclassified == {}


# --- baclofen products --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concept", "route", "form", "strength", "unit", "matched_by"),
    [
        (rx("197391"), "oral", "tablet", 10, "mg", "rxnorm"),
        (rx("617299"), "oral", "odt", 10, "mg", "rxnorm"),
        (rx("430902"), "oral", "tablet", 5, "mg", "rxnorm"),
        (rx("2593376"), "oral", "suspension", 5, "mg/mL", "rxnorm"),
        (rx("1047437"), "intrathecal", "injection", 50, "mcg/mL", "rxnorm"),
        (text("Baclofen 10mg tab"), "oral", "tablet", 10, "mg", "name"),
    ],
)
def test_baclofen_products_are_recognised(
    knowledge: Knowledge,
    concept: Concept,
    route: str,
    form: str,
    strength: float,
    unit: str,
    matched_by: str,
) -> None:
    product = knowledge.baclofen_product(concept)
    assert product is not None
    assert (product.route, product.dose_form, product.strength, product.strength_unit) == (
        route,
        form,
        strength,
        unit,
    )
    assert product.matched_by == matched_by


def test_brand_codes(knowledge: Knowledge) -> None:
    lioresal = knowledge.baclofen_product(rx("202109"))
    kemstro = knowledge.baclofen_product(rx("664144"))
    assert lioresal is not None and (lioresal.brand, lioresal.strength) == ("Lioresal", 10)
    assert kemstro is not None and (kemstro.brand, kemstro.dose_form, kemstro.strength) == (
        "Kemstro",
        "odt",
        20,
    )


def test_intrathecal_code_takes_its_strength_from_the_display(knowledge: Knowledge) -> None:
    product = knowledge.baclofen_product(rx("1369783", "baclofen 2 MG/ML Injection"))
    assert product is not None
    assert (product.route, product.strength, product.strength_unit) == (
        "intrathecal",
        2000,
        "mcg/mL",
    )
    unknown = knowledge.baclofen_product(rx("1369783"))
    assert unknown is not None and unknown.route == "intrathecal" and unknown.strength is None


def test_local_code_with_a_contained_medication(knowledge: Knowledge) -> None:
    local = Concept(codings=(Coding("urn:local:formulary", "BAC-10", None),))
    medication = MedicationProduct(
        code=Concept(text="BACLOFEN"),
        form=Concept(text="Tablet"),
        strength=Ratio(Quantity(10, "mg"), Quantity(1, "TAB")),
    )
    product = knowledge.baclofen_product(local, medication)
    assert product is not None
    assert (product.dose_form, product.strength, product.strength_unit) == ("tablet", 10, "mg")


def test_ingredient_code_alone_is_baclofen_with_unknown_strength(knowledge: Knowledge) -> None:
    product = knowledge.baclofen_product(rx("1292", "baclofen"))
    assert product is not None and product.strength is None and product.matched_by == "rxnorm"


@pytest.mark.parametrize(
    "name", ["oxycodone 5 MG Oral Tablet", "Tizanidine 4 mg", "baclofenol", "acetaminophen"]
)
def test_other_drugs_are_not_baclofen(knowledge: Knowledge, name: str) -> None:
    assert knowledge.baclofen_product(text(name)) is None


# --- drug classes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concept", "expected"),
    [
        (rx("1049621", "oxycodone hydrochloride 5 MG Oral Tablet"), "opioid"),
        (rx("1049621"), "opioid"),  # the code alone, from the CDC value set
        (text("LORazepam 1 mg tablet"), "benzodiazepine"),
        (rx("854873"), "z-drug"),  # zolpidem tartrate 10 MG Oral Tablet, split from cns-depressant
        (text("zolpidem 5 mg at bedtime"), "z-drug"),
        (text("gabapentin 300 MG Oral Capsule"), "gabapentinoid"),
        (text("Lyrica 75 mg"), "gabapentinoid"),
        (text("tizanidine 4 MG Oral Tablet"), "muscle-relaxant"),
        (text("Carbidopa 25 MG / Levodopa 100 MG Oral Tablet"), "levodopa"),
        (rx("352257"), "oxybate"),  # Xyrem
        (text("phenobarbital 30 mg"), "barbiturate"),
        (text("diphenhydramine 25 mg"), "sedating-antihistamine"),
        (text("quetiapine 25 mg"), "antipsychotic"),
        (text("amitriptyline 10 mg"), "tricyclic"),
        (text("phenelzine 15 mg"), "maoi"),
        (text("lisinopril 10 mg"), "antihypertensive"),
        (text("methadone 10 mg"), "opioid"),
    ],
)
def test_drug_classes(knowledge: Knowledge, concept: Concept, expected: str) -> None:
    assert expected in knowledge.drug_classes(concept)


def test_every_contract_class_exists(knowledge: Knowledge) -> None:
    for class_id in CONTRACT_CLASSES:
        assert knowledge.drug_class(class_id).label


def test_cns_depressant_value_set_is_split_not_lumped(knowledge: Knowledge) -> None:
    assert knowledge.drug_classes(rx("803350")) == frozenset()  # phentermine: a stimulant
    assert knowledge.drug_classes(rx("995666")) == {"sedating-antihistamine"}  # meclizine
    assert knowledge.drug_classes(rx("313761")) == {"z-drug"}  # zaleplon


def test_combination_products_get_every_class(knowledge: Knowledge) -> None:
    classes = knowledge.drug_classes(
        text("butalbital 50 MG / acetaminophen 325 MG / codeine 30 MG")
    )
    assert {"barbiturate", "opioid"} <= classes


@pytest.mark.parametrize("name", ["apomorphine", "sodium chloride 0.9%", "Morphinan", "Somatropin"])
def test_names_match_whole_words_only(knowledge: Knowledge, name: str) -> None:
    assert knowledge.drug_classes(text(name)) == frozenset()


def test_a_name_inside_another_is_its_own_drug(knowledge: Knowledge) -> None:
    assert knowledge.drug_classes(text("hydromorphone 2 mg")) == {"opioid"}


def test_baclofen_is_not_in_any_class(knowledge: Knowledge) -> None:
    assert knowledge.drug_classes(rx("197391", "baclofen 10 MG Oral Tablet")) == frozenset()


# --- triage of a medication's drug --------------------------------------------------------


def _request(concept: dict) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "medicationCodeableConcept": concept,
    }


def _triage(resource: dict) -> MedicationTriage:
    """The judgement on an order's drug, read as the snapshot reads it."""
    return triage_medication(medication_concept(resource))


def _of_interest(resource: dict) -> bool:
    return _triage(resource).of_interest


def test__of_interest() -> None:
    assert _of_interest(_request({"coding": [{"system": RXNORM, "code": "197391"}]}))
    assert _of_interest(_request({"coding": [{"system": RXNORM, "code": "1049621"}]}))
    assert _of_interest(_request({"text": "Baclofen 10mg tab"}))
    assert _of_interest(_request({"text": "Gabapentin 300 mg"}))
    assert _of_interest(
        {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/1"}}
    )
    assert not _of_interest(
        _request({"coding": [{"system": RXNORM, "code": "161", "display": "acetaminophen"}]})
    )
    # A code we do not know, with no name: cannot be ruled out (e.g. a gabapentin SCD).
    assert _of_interest(_request({"coding": [{"system": RXNORM, "code": "310431"}]}))
    contained = {
        "resourceType": "MedicationRequest",
        "medicationReference": {"reference": "#m"},
        "contained": [{"resourceType": "Medication", "id": "m", "code": {"text": "Lioresal"}}],
    }
    assert _of_interest(contained)


@pytest.mark.parametrize(
    ("concept", "of_interest", "baclofen"),
    [
        ({"coding": [{"system": RXNORM, "code": "197391"}]}, True, True),
        (
            {"coding": [{"system": RXNORM, "code": "1049621"}], "text": "oxycodone 5 MG"},
            True,
            False,
        ),
        ({"text": "Lioresal Intrathecal 2000 mcg/mL"}, True, True),
        ({"text": "BACLOFENO 10 mg comprimido"}, True, True),
        ({"text": "lorazepam 1 MG Oral Tablet"}, True, False),
        ({"coding": [{"system": RXNORM, "code": "310431"}]}, True, True),
        ({"coding": [{"system": RXNORM, "code": "161", "display": "acetaminophen"}]}, False, False),
    ],
)
def test_triage_says_what_a_raw_medication_could_be(
    concept: dict, of_interest: bool, baclofen: bool
) -> None:
    triage = _triage(_request(concept))
    assert (triage.of_interest, triage.could_be_baclofen) == (of_interest, baclofen)


def test_triage_never_rules_out_what_the_engine_calls_baclofen(knowledge: Knowledge) -> None:
    index = drug_index()
    for name in (*index.brands, "Baclofen", "baclofene"):
        label = f"{name.upper()} 10 mg tablet"
        assert knowledge.baclofen_product(text(label)) is not None, name
        assert _triage(_request({"text": label})).could_be_baclofen, name
    for code in (*index.products, index.ingredient_rxcui):
        concept = {"coding": [{"system": RXNORM, "code": code}], "text": "tablet"}
        assert knowledge.baclofen_product(rx(code, "tablet")) is not None, code
        assert _triage(_request(concept)).could_be_baclofen, code


# --- conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concept", "flag"),
    [
        (Concept(codings=(Coding(ICD10CM, "N18.6"),)), "esrd"),
        (Concept(codings=(Coding(ICD10CM, "Z99.2"),)), "dialysis"),
        (Concept(codings=(Coding(ICD10CM, "F10.20"),)), "alcohol-use-disorder"),
        (Concept(codings=(Coding(ICD10CM, "G40.909"),)), "epilepsy"),
        (Concept(codings=(Coding(ICD10CM, "F20.9"),)), "psychosis"),
        (Concept(codings=(Coding(ICD10CM, "G90.4"),)), "autonomic-dysreflexia"),
        (Concept(codings=(Coding(ICD10CM, "I63.9"),)), "stroke"),
        (Concept(codings=(Coding(ICD10CM, "O09.90"),)), "pregnancy"),
        (Concept(codings=(Coding(ICD10CM, "Z331"),)), "pregnancy"),
        (Concept(codings=(Coding(SNOMED, "46177005"),)), "esrd"),
        (Concept(codings=(Coding(SNOMED, "265764009"),)), "dialysis"),
        (Concept(codings=(Coding("urn:local", "X1", "Hemodialysis dependent"),)), "dialysis"),
        (text("Autonomic dysreflexia"), "autonomic-dysreflexia"),
        (text("History of CVA"), "stroke"),
        (Concept(codings=(Coding(ICD10CM, "J44.1"),)), "respiratory-impairment"),
        (Concept(codings=(Coding(ICD10CM, "G47.33"),)), "respiratory-impairment"),
        (Concept(codings=(Coding(ICD10CM, "J96.11"),)), "respiratory-impairment"),
        (Concept(codings=(Coding(SNOMED, "78275009"),)), "respiratory-impairment"),
        (text("Severe OSA on CPAP"), "respiratory-impairment"),
        (Concept(codings=(Coding(ICD10CM, "K74.60"),)), "hepatic-impairment"),
        (Concept(codings=(Coding(ICD10CM, "K70.30"),)), "hepatic-impairment"),
        (Concept(codings=(Coding(SNOMED, "59927004"),)), "hepatic-impairment"),
        (Concept(codings=(Coding(ICD10CM, "Z39.1"),)), "breastfeeding"),
        (text("Currently breast-feeding"), "breastfeeding"),
        (Concept(codings=(Coding(ICD10CM, "T85.735A"),)), "intrathecal-site-infection"),
        (text("Baclofen pump pocket infection"), "intrathecal-site-infection"),
    ],
)
def test_condition_flags(knowledge: Knowledge, concept: Concept, flag: str) -> None:
    assert flag in knowledge.condition_flags(concept)
    assert condition_index().may_flag(concept)  # the snapshot's triage never drops it


def test_condition_triage_keeps_every_phrase_and_code_that_raises_a_flag(
    knowledge: Knowledge,
) -> None:
    data = read_data("conditions.toml")
    for flag in data["flags"].values():
        concepts = [text(f"History of {phrase}") for phrase in flag["text"]]
        concepts += [Concept(codings=(Coding(SNOMED, code),)) for code in flag["snomed"]]
        concepts += [Concept(codings=(Coding(ICD10CM, code),)) for code in flag["icd10"]]
        for concept in concepts:
            if knowledge.condition_flags(concept):
                assert condition_index().may_flag(concept), concept


def test_condition_triage_rules_out_conditions_without_flags() -> None:
    assert not condition_index().may_flag(text("Essential hypertension"))
    assert not condition_index().may_flag(Concept(codings=(Coding(SNOMED, "47693006"),)))


@pytest.mark.parametrize(
    "concept",
    [
        Concept(codings=(Coding(ICD10CM, "N18.3"),)),
        Concept(codings=(Coding(ICD10CM, "F10.929"),)),
        text("Acute kidney failure"),
        text("Essential hypertension"),
        text("Heat stroke"),
        text("Not breastfeeding"),
        text("Fatty liver"),
        text("Central venous catheter site infection"),
        Concept(codings=(Coding(ICD10CM, "K76.0"),)),
        Concept(codings=(Coding(ICD10CM, "J45.909"),)),
    ],
)
def test_conditions_without_flags(knowledge: Knowledge, concept: Concept) -> None:
    flags = knowledge.condition_flags(concept) - {"ckd"}
    assert flags == frozenset()


def test_every_known_name_makes_a__of_interest() -> None:
    index = drug_index()
    for name in (*index.brands, *index.class_names, "Baclofen"):
        assert _of_interest(_request({"text": f"{name.upper()} 10 mg tablet"})), name


@pytest.mark.parametrize(
    "resource",
    [
        {
            "resourceType": "MedicationRequest",
            "contained": 5,
            "medicationCodeableConcept": {"coding": "x"},
        },
        {
            "resourceType": "MedicationRequest",
            "medicationCodeableConcept": {"coding": [None, 3, {"code": []}]},
        },
        {
            "resourceType": "MedicationRequest",
            "medication": {"concept": 7, "reference": "Medication/1"},
        },
        {
            "resourceType": "MedicationRequest",
            "contained": [{"resourceType": "Medication", "ingredient": 1}],
        },
    ],
)
def test_triage_survives_malformed_resources(resource: dict) -> None:
    assert _of_interest(resource) is True  # names no drug: never ruled out


def test_every_condition_flag_names_existing_rules(knowledge: Knowledge) -> None:
    for flag in ("dialysis", "esrd", "alcohol-use-disorder", "epilepsy", "psychosis", "stroke"):
        spec = knowledge.condition_flag(flag)
        assert spec.label and all(r in knowledge.rules for r in spec.rule_ids)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HYDROcodone-acetaminophen 5-325 MG tablet", "opioid"),
        ("hydrOXYzine HCl 25 mg", "sedating-antihistamine"),
        ("Chlor-Trimeton 4 mg", "sedating-antihistamine"),
        ("traMADol/APAP", "opioid"),
    ],
)
def test_ehr_spellings(knowledge: Knowledge, name: str, expected: str) -> None:
    assert expected in knowledge.drug_classes(text(name))
    assert _of_interest(_request({"text": name}))
