"""Reading a baclofen product from its name (``product_text.toml``), as the engine gets it.

The cases are data (tests/data/product_text_cases.toml); every product and brand of the
knowledge files is read from its own name too. Properties check what no list of cases can:
an intrathecal word or strength is never read as oral, and no route is guessed.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.knowledge import Knowledge, load_knowledge, read_data
from cds_hooks.knowledge.drugs import BaclofenProduct, ProductText, Strength, parse_strength
from cds_hooks.model import RXNORM, Coding, Concept, MedicationProduct, Quantity, Ratio

CASES = tomllib.loads(
    (Path(__file__).parent / "data" / "product_text_cases.toml").read_text("utf-8")
)
DATA = resources.files("cds_hooks.knowledge").joinpath("data")
PRODUCTS = json.loads(DATA.joinpath("baclofen_products.json").read_text("utf-8"))["products"]
VOCABULARY = read_data("product_text.toml")
KNOWLEDGE = load_knowledge()


def read(name: str) -> BaclofenProduct:
    product = KNOWLEDGE.baclofen_product(Concept(text=name))
    assert product is not None, name
    return product


def reading(product: BaclofenProduct) -> dict[str, Any]:
    return {
        "route": product.route,
        "form": product.dose_form,
        "strength": product.strength,
        "unit": product.strength_unit,
        "brand": product.brand,
    }


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return KNOWLEDGE


# --- tables -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["case"], ids=[c["text"] for c in CASES["case"]])
def test_names_as_ehrs_write_them(case: dict[str, Any]) -> None:
    expected = {
        "route": case["route"],
        "form": case["form"],
        "strength": case.get("strength"),
        "unit": case.get("unit"),
        "brand": case.get("brand"),
    }
    assert reading(read(case["text"])) == pytest.approx(expected), case["why"]


@pytest.mark.parametrize("product", PRODUCTS, ids=[p["rxcui"] for p in PRODUCTS])
def test_every_known_product_reads_as_itself_from_its_name_alone(product: dict[str, Any]) -> None:
    assert reading(read(product["name"])) == {
        "route": product["route"],
        "form": product["dose_form"],
        "strength": product["strength"],
        "unit": product["strength_unit"],
        "brand": product["brand"],
    }


@pytest.mark.parametrize("name", sorted(VOCABULARY["brands"]))
def test_every_brand_alone_says_what_its_entry_says(name: str) -> None:
    brand = VOCABULARY["brands"][name]
    route = brand.get("route", "unknown")
    strength = brand.get("strength")
    assert reading(read(name)) == {
        "route": route,
        "form": brand.get("dose_form", "injection" if route == "intrathecal" else "unknown"),
        "strength": strength,
        "unit": brand.get("strength_unit"),
        "brand": name,
    }
    assert read(name.upper()).brand == name


@pytest.mark.parametrize("case", CASES["strength"], ids=[c["text"] for c in CASES["strength"]])
def test_strengths(case: dict[str, Any]) -> None:
    expected = (
        Strength(case["mg"], case["per_ml"], case.get("micrograms", False))
        if "mg" in case
        else None
    )
    assert parse_strength(case["text"]) == expected


def test_the_route_precedence_is_the_one_the_data_states() -> None:
    assert VOCABULARY["route_precedence"] == [
        "route-words",
        "intrathecal-strength",
        "brand",
        "dose-form",
        "oral-strength",
    ]
    assert [entry["route"] for entry in VOCABULARY["route_words"]] == ["intrathecal", "oral"]


def test_a_precedence_naming_an_unknown_kind_of_evidence_is_refused() -> None:
    data = {**VOCABULARY, "route_precedence": ["route-words", "brand", "hunch"]}
    with pytest.raises(ValueError, match="route_precedence"):
        ProductText(data, read_data("dosing.toml")["units"])


def test_every_entry_cites_known_sources() -> None:
    sources = set(read_data("sources.toml")["sources"])
    entries = [
        *VOCABULARY["route_words"],
        *VOCABULARY["dose_forms"],
        VOCABULARY["strength"]["intrathecal"],
        VOCABULARY["strength"]["oral"],
        *VOCABULARY["brands"].values(),
    ]
    for entry in entries:
        assert entry["sources"] and set(entry["sources"]) <= sources, entry


# --- a Medication's form and strength -----------------------------------------------------


def _medication(form: Concept | None = None, strength: Ratio | None = None) -> MedicationProduct:
    return MedicationProduct(code=Concept(text="baclofen"), form=form, strength=strength)


@pytest.mark.parametrize(
    ("medication", "route", "form", "strength", "unit"),
    [
        (_medication(Concept(text="Intrathecal Solution")), "intrathecal", "injection", None, None),
        (
            _medication(Concept(codings=(Coding(RXNORM, "316949", "Injectable Solution"),))),
            "intrathecal",
            "injection",
            None,
            None,
        ),
        (
            _medication(Concept(codings=(Coding(RXNORM, "316968"),))),
            "oral",
            "solution",
            None,
            None,
        ),
        (
            _medication(strength=Ratio(Quantity(2000, "ug"), Quantity(1, "mL"))),
            "intrathecal",
            "injection",
            2000,
            "mcg/mL",
        ),
        (
            _medication(Concept(text="Solution"), Ratio(Quantity(10, "mg"), Quantity(5, "mL"))),
            "unknown",
            "solution",
            2,
            "mg/mL",
        ),
        (
            _medication(strength=Ratio(Quantity(10, "mg"), Quantity(1, "TAB"))),
            "oral",
            "unknown",
            10,
            "mg",
        ),
    ],
)
def test_a_medications_form_and_strength(
    knowledge: Knowledge,
    medication: MedicationProduct,
    route: str,
    form: str,
    strength: float | None,
    unit: str | None,
) -> None:
    local = Concept(codings=(Coding("urn:local:formulary", "BAC", None),))
    product = knowledge.baclofen_product(local, medication)
    assert product is not None
    expected = {"route": route, "form": form, "strength": strength, "unit": unit, "brand": None}
    assert reading(product) == expected


# --- properties ---------------------------------------------------------------------------


def _all_words(entries: list[dict[str, Any]]) -> list[str]:
    return sorted({w for entry in entries for w in entry["words"]})


INTRATHECAL = VOCABULARY["route_words"][0]
ORAL_WORDS = _all_words([e for e in VOCABULARY["route_words"] if e["route"] == "oral"])
ORAL_FORMS = _all_words([e for e in VOCABULARY["dose_forms"] if e.get("route") == "oral"])
NEUTRAL_FORMS = _all_words([e for e in VOCABULARY["dose_forms"] if "route" not in e])
ALL_FORMS = _all_words(VOCABULARY["dose_forms"])
UNSPOKEN_FORMS = [w for w in ALL_FORMS if set(w.split()).isdisjoint(ORAL_WORDS)]
"""Dose-form words that hold no route word ("orally disintegrating" says "orally")."""
ORAL_BRANDS = sorted(n for n, b in VOCABULARY["brands"].items() if b.get("route") == "oral")
OTHER_BRANDS = sorted(n for n, b in VOCABULARY["brands"].items() if b.get("route") != "oral")
MICROGRAMS = ["mcg", "MCG", "ug", "µg", "μg", "microgram", "micrograms"]
MASS = ["mg", "MG", "mcg", "ug", "µg", "g"]


def _cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.lower(), word.upper(), word.title()])


def _strengths(mass: list[str]) -> st.SearchStrategy[str]:
    """A strength per unit ("500 mcg") or per volume ("20,000 mcg / 20 mL")."""
    volume = st.sampled_from(["mL", "ml", "ML", "5 mL", "20 mL", "milliliter"])
    amount = st.sampled_from(["0.05", "0.5", "1", "2", "5", "10", "20", "500", "2000", "20,000"])
    per = st.sampled_from(["/", " / ", " per ", ""])
    return st.builds(
        lambda a, m, p, v: f"{a} {m}{p}{v}" if p else f"{a} {m}",
        amount,
        st.sampled_from(mass),
        per,
        volume,
    )


def _name(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A product name: "baclofen" and the parts in any order, joined by runs of spaces."""
    return st.tuples(st.sampled_from(["baclofen", "Baclofen", "BACLOFEN"]), *parts).flatmap(
        lambda words: st.permutations(list(words)).map(lambda order: "  ".join(order))
    )


ANY_WORD = st.one_of(
    st.sampled_from(ALL_FORMS).flatmap(_cased),
    st.sampled_from(ORAL_WORDS).flatmap(_cased),
    st.sampled_from(sorted(VOCABULARY["brands"])).flatmap(_cased),
    _strengths(MASS),
    st.just(""),
)
INTRATHECAL_WORD = st.one_of(
    st.sampled_from(INTRATHECAL["words"]).flatmap(_cased),
    st.sampled_from(INTRATHECAL["abbreviations"]),
)


@given(_name(INTRATHECAL_WORD, ANY_WORD, ANY_WORD, ANY_WORD))
def test_a_name_with_an_intrathecal_word_is_never_oral(name: str) -> None:
    product = read(name)
    assert (product.route, product.dose_form) == ("intrathecal", "injection"), name


@given(
    _name(
        _strengths(MICROGRAMS),
        st.sampled_from([*NEUTRAL_FORMS, *OTHER_BRANDS, "", "injection"]).flatmap(_cased),
        st.sampled_from([*UNSPOKEN_FORMS, ""]).flatmap(_cased),
    )
)
def test_a_strength_in_micrograms_is_intrathecal_whatever_the_dose_form(name: str) -> None:
    assert read(name).route == "intrathecal", name


NO_ORAL_EVIDENCE = st.one_of(
    st.sampled_from([*NEUTRAL_FORMS, *OTHER_BRANDS]).flatmap(_cased),
    _strengths(["mg", "MG", "mcg"]).filter(lambda s: "/" in s or " per " in s),
    st.just(""),
)


@given(_name(NO_ORAL_EVIDENCE, NO_ORAL_EVIDENCE))
def test_no_route_is_guessed_without_oral_evidence(name: str) -> None:
    product = read(name)
    strongest_intrathecal = VOCABULARY["strength"]["oral"]["above_mg_per_ml"]
    if product.strength_unit == "mg/mL" and (product.strength or 0) > strongest_intrathecal:
        assert product.route == "oral", name
    else:
        assert product.route in ("intrathecal", "unknown"), name


@given(
    _name(
        st.sampled_from([*ORAL_WORDS, *ORAL_FORMS, *ORAL_BRANDS]).flatmap(_cased),
        st.sampled_from(["", *NEUTRAL_FORMS, "10 mg", "5 mg/5 mL"]),
    )
)
def test_oral_names_are_oral(name: str) -> None:
    assert read(name).route == "oral", name


@given(st.lists(ANY_WORD, min_size=1, max_size=4), st.sampled_from([" ", "  ", "\t", " \n "]))
def test_case_and_spacing_do_not_change_the_reading(words: list[str], space: str) -> None:
    name = " ".join(["baclofen", *words])
    expected = reading(read(name))
    for variant in (name.upper(), name.lower(), name.title(), space.join(name.split(" "))):
        assert reading(read(variant)) == expected, variant


@given(
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=1, max_value=100),
    st.sampled_from(["mg", "MG", "mcg", "ug", "µg"]),
    st.sampled_from(["/", " / ", " per ", " in "]),
)
def test_concentrations_in_names_are_per_millilitre(
    amount: int, volume: int, unit: str, sep: str
) -> None:
    parsed = parse_strength(f"baclofen {amount} {unit}{sep}{volume} mL")
    micrograms = unit.lower() != "mg"
    assert parsed is not None and parsed.per_ml and parsed.micrograms == micrograms
    assert parsed.mg == pytest.approx(amount * (0.001 if micrograms else 1.0) / volume)
