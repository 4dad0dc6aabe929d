"""Recognising baclofen products and interacting drug classes, by code first, then by name.

Orders arrive coded in RxNorm at clinical/branded drug level, at ingredient level, in a local
system, or as text only. Codes are looked up in frozensets built once from the data files
(``baclofen_products.json``, ``drug_classes.toml``, ``valuesets/``); anything else is matched
by whole-word names with one precompiled regex, so a local "Baclofen 10mg tab" is still
recognised. Strength and dose form are parsed from the name when the code does not give them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

from cds_hooks.knowledge import read_data
from cds_hooks.memo import MAX_KEY_BYTES, MEMO_SIZE
from cds_hooks.model import RXNORM, Concept, MedicationProduct, Ratio

MASS_TO_MG = {"mg": 1.0, "g": 1000.0, "mcg": 0.001}
_MASS_ALIASES = {
    "mg": "mg",
    "milligram": "mg",
    "milligrams": "mg",
    "g": "g",
    "gram": "g",
    "grams": "g",
    "mcg": "mcg",
    "ug": "mcg",
    "µg": "mcg",
    "μg": "mcg",
    "microgram": "mcg",
    "micrograms": "mcg",
}
_NUMBER = r"(\d+(?:\.\d+)?)"
_MASS = r"(mg|milligrams?|g|grams?|mcg|ug|µg|μg|micrograms?)"
_CONCENTRATION = re.compile(
    _NUMBER
    + r"\s*"
    + _MASS
    + r"\s*(?:/|per|in)\s*"
    + r"(\d+(?:\.\d+)?)?\s*(?:ml|millilit(?:er|re)s?)\b"
)
_PER_UNIT = re.compile(_NUMBER + r"\s*" + _MASS + r"(?![a-zµμ/])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class BaclofenProduct:
    rxcui: str | None
    name: str
    route: str
    dose_form: str
    strength: float | None
    strength_unit: str | None
    brand: str | None
    matched_by: str

    @property
    def liquid(self) -> bool:
        return self.strength_unit is not None and self.strength_unit.endswith("/mL")


@dataclass(frozen=True, slots=True)
class DrugClass:
    id: str
    label: str
    beers_cns_active: bool
    source_ids: tuple[str, ...]


def _words(names: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of ``names`` as whole words, longest first."""
    alternatives = sorted({n.lower() for n in names}, key=len, reverse=True)
    body = "|".join(re.escape(a).replace(r"\ ", r"\s+") for a in alternatives)
    return re.compile(r"(?<![a-z0-9])(" + body + r")(?![a-z0-9])")


def _normalise(text: str) -> str:
    text = _THOUSANDS.sub("", text.lower())
    return " ".join(_DECIMAL_COMMA.sub(".", text).split())


def parse_strength(text: str) -> tuple[float, str] | None:
    """Strength in a product name: (mg per unit, "mg") or (mg per mL, "mg/mL").

    ``"Ozobax 5 mg/5 mL"`` gives (1.0, "mg/mL"); ``"Baclofen 10mg tab"`` gives (10.0, "mg").
    """
    text = _normalise(text)
    match = _CONCENTRATION.search(text)
    if match:
        amount = float(match.group(1)) * MASS_TO_MG[_MASS_ALIASES[match.group(2)]]
        volume = float(match.group(3)) if match.group(3) else 1.0
        return (amount / volume, "mg/mL") if volume > 0 else None
    match = _PER_UNIT.search(text)
    if match:
        return float(match.group(1)) * MASS_TO_MG[_MASS_ALIASES[match.group(2)]], "mg"
    return None


def _concept_texts(concept: Concept) -> Iterator[str]:
    if concept.text:
        yield concept.text
    for coding in concept.codings:
        if coding.display:
            yield coding.display


class DrugIndex:
    """Lookup tables built once from the data files; read-only afterwards."""

    def __init__(self) -> None:
        products = read_data("baclofen_products.json")
        classes = read_data("drug_classes.toml")
        self.version: str = products["version"]
        self.ingredient_rxcui: str = products["ingredient"]["rxcui"]
        self.products: Mapping[str, BaclofenProduct] = MappingProxyType(
            {
                p["rxcui"]: BaclofenProduct(
                    rxcui=p["rxcui"],
                    name=p["name"],
                    route=p["route"],
                    dose_form=p["dose_form"],
                    strength=None if p["strength"] is None else float(p["strength"]),
                    strength_unit=p["strength_unit"],
                    brand=p["brand"],
                    matched_by="rxnorm",
                )
                for p in products["products"]
            }
        )
        self.brands: Mapping[str, Mapping[str, Any]] = products["brands"]
        self._brand_names = sorted(self.brands, key=len, reverse=True)
        self._brand_regex = _words(self._brand_names)
        self.baclofen_regex = _words([*products["names"], *self.brands])
        self.dose_form_codes: Mapping[str, str] = products["dose_form_codes"]
        self._form_regexes = tuple(
            (form, _words(keywords)) for form, keywords in products["dose_forms"].items()
        )

        self._classes = MappingProxyType(
            {
                cid: DrugClass(
                    id=cid,
                    label=c["label"],
                    beers_cns_active=c["beers_cns_active"],
                    source_ids=tuple(c["sources"]),
                )
                for cid, c in classes["classes"].items()
            }
        )
        name_classes: dict[str, set[str]] = defaultdict(set)
        code_classes: dict[str, set[str]] = defaultdict(set)
        for cid, c in classes["classes"].items():
            for ingredient in c["ingredients"]:
                name_classes[ingredient["name"].lower()].add(cid)
                if "rxcui" in ingredient:
                    code_classes[ingredient["rxcui"]].add(cid)
            for brand in c["brands"]:
                name_classes[brand.lower()].add(cid)
        self._name_classes = {k: frozenset(v) for k, v in name_classes.items()}
        self.class_regex = _words(self._name_classes)
        for cid, c in classes["classes"].items():
            for valueset in c["valuesets"]:
                for code, _display in valueset_members(valueset):
                    code_classes[code].add(cid)
        self.unclassified: dict[str, list[str]] = {}
        for valueset, split in classes["split"].items():
            ignored = _words(split["ignored"])
            for code, display in valueset_members(valueset):
                by_name = self.classes_by_name(display)
                if by_name:
                    code_classes[code] |= by_name
                elif not ignored.search(_normalise(display)):
                    self.unclassified.setdefault(valueset, []).append(display)
        # Value-set members also get the classes of every ingredient they name (combinations).
        displays = _valueset_displays()
        for code in list(code_classes):
            if code in displays:
                code_classes[code] |= self.classes_by_name(displays[code])
        self.code_classes: Mapping[str, frozenset[str]] = MappingProxyType(
            {k: frozenset(v) for k, v in code_classes.items()}
        )
        self.codes_of_interest: frozenset[str] = frozenset(
            {*self.products, self.ingredient_rxcui, *self.code_classes}
        )
        names = [*products["names"], *self.brands, *self._name_classes]
        tokenised = [tuple(_TOKEN.findall(n.lower())) for n in names]
        self._single_names = frozenset(t[0] for t in tokenised if len(t) == 1)
        self._multi_names: Mapping[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
            {
                first: tuple(t for t in tokenised if len(t) > 1 and t[0] == first)
                for first in {t[0] for t in tokenised if len(t) > 1}
            }
        )

    def names_any(self, text: str) -> bool:
        """Does ``text`` contain any baclofen or class name as whole words? (set lookups)"""
        tokens = _TOKEN.findall(text.lower())
        if not self._single_names.isdisjoint(tokens):
            return True
        if self._multi_names.keys().isdisjoint(tokens):
            return False
        for i, token in enumerate(tokens):
            for name in self._multi_names.get(token, ()):
                if tuple(tokens[i : i + len(name)]) == name:
                    return True
        return False

    def drug_class(self, class_id: str) -> DrugClass:
        return self._classes[class_id]

    @property
    def class_names(self) -> frozenset[str]:
        """Every ingredient and brand name that puts a drug in a class (lower case)."""
        return frozenset(self._name_classes)

    def classes_by_name(self, text: str) -> frozenset[str]:
        found: set[str] = set()
        for match in self.class_regex.finditer(_normalise(text)):
            found |= self._name_classes[" ".join(match.group(1).split())]
        return frozenset(found)

    def classes(self, concept: Concept) -> frozenset[str]:
        found: set[str] = set()
        for code in concept.codes(RXNORM):
            found |= self.code_classes.get(code, frozenset())
        for text in _concept_texts(concept):
            found |= self.classes_by_name(text)
        return frozenset(found)

    def baclofen_product(
        self, concept: Concept, product: MedicationProduct | None = None
    ) -> BaclofenProduct | None:
        concepts = [concept] if product is None else [concept, product.code]
        texts = [t for c in concepts for t in _concept_texts(c)]
        if product is not None and product.form is not None:
            texts_with_form = [*texts, *_concept_texts(product.form)]
        else:
            texts_with_form = texts
        for c in concepts:
            for code in c.codes(RXNORM):
                known = self.products.get(code)
                if known is not None:
                    return self._complete(known, texts_with_form, product)
        coded_as_ingredient = any(self.ingredient_rxcui in c.codes(RXNORM) for c in concepts)
        named = any(self.baclofen_regex.search(_normalise(t)) for t in texts)
        if not (coded_as_ingredient or named):
            return None
        name = next(iter(texts), "baclofen")
        unresolved = BaclofenProduct(
            rxcui=self.ingredient_rxcui if coded_as_ingredient else None,
            name=name,
            route="unknown",
            dose_form="unknown",
            strength=None,
            strength_unit=None,
            brand=None,
            matched_by="rxnorm" if coded_as_ingredient else "name",
        )
        return self._complete(unresolved, texts_with_form, product)

    def _complete(
        self, found: BaclofenProduct, texts: list[str], product: MedicationProduct | None
    ) -> BaclofenProduct:
        """Fill what the code did not say (brand, dose form, strength, route) from the names."""
        joined = _normalise(" ".join(texts))
        brand = found.brand
        brand_info: Mapping[str, Any] = {}
        if brand is None:
            match = self._brand_regex.search(joined)
            if match:
                brand = next(
                    b for b in self._brand_names if b.lower() == " ".join(match.group(1).split())
                )
        if brand is not None:
            brand_info = self.brands.get(brand, {})
        dose_form = found.dose_form
        if dose_form == "unknown":
            dose_form = self._dose_form(joined, product) or brand_info.get("dose_form") or "unknown"
        strength, unit = found.strength, found.strength_unit
        if strength is None:
            parsed = _ratio_strength(product.strength) if product and product.strength else None
            parsed = parsed or parse_strength(joined)
            if parsed is None and "strength" in brand_info:
                parsed = (float(brand_info["strength"]), str(brand_info["strength_unit"]))
            if parsed is not None:
                strength, unit = parsed
        route = found.route
        if route == "unknown":
            route = brand_info.get("route") or (
                "intrathecal" if dose_form == "injection" else "oral"
            )
            if (
                dose_form == "unknown"
                and unit == "mg/mL"
                and strength is not None
                and strength < 0.1
            ):
                route = "intrathecal"  # oral liquids are 1-5 mg/mL; 0.05-2 mg/mL are IT
        if route == "intrathecal" and dose_form == "unknown":
            dose_form = "injection"
        if route == "intrathecal" and strength is not None and unit == "mg/mL":
            strength, unit = strength * 1000.0, "mcg/mL"
        return replace(
            found,
            route=route,
            dose_form=dose_form,
            strength=strength,
            strength_unit=unit,
            brand=brand,
        )

    def _dose_form(self, joined: str, product: MedicationProduct | None) -> str | None:
        if product is not None and product.form is not None:
            for code in product.form.codes(RXNORM):
                if code in self.dose_form_codes:
                    return self.dose_form_codes[code]
        for form, regex in self._form_regexes:
            if regex.search(joined):
                return form
        return None


def _ratio_strength(ratio: Ratio) -> tuple[float, str] | None:
    numerator_unit = _MASS_ALIASES.get((ratio.numerator.units or "").lower())
    if numerator_unit is None or ratio.denominator.value <= 0:
        return None
    amount = ratio.numerator.value * MASS_TO_MG[numerator_unit] / ratio.denominator.value
    if (ratio.denominator.units or "").lower() in ("ml", "milliliter", "millilitre"):
        return amount, "mg/mL"
    return amount, "mg"


@cache
def valueset_members(name: str) -> tuple[tuple[str, str], ...]:
    """(code, display) of a vendored value set's expansion (RxNorm only)."""
    data = read_data(f"valuesets/{name}.json")
    return tuple(
        (c["code"], c.get("display", ""))
        for c in data["expansion"]["contains"]
        if c.get("system") == RXNORM
    )


@cache
def _valueset_displays() -> Mapping[str, str]:
    classes = read_data("drug_classes.toml")
    names = {v for c in classes["classes"].values() for v in c["valuesets"]} | set(classes["split"])
    return {code: display for name in sorted(names) for code, display in valueset_members(name)}


@cache
def drug_index() -> DrugIndex:
    return DrugIndex()


@dataclass(frozen=True, slots=True)
class MedicationTriage:
    """What a drug could be, judged before the order naming it is validated."""

    of_interest: bool
    """Could be baclofen or an interacting drug: worth normalising at all."""
    could_be_baclofen: bool
    """Could be baclofen: its dosage matters, so the whole order is validated."""


def triage_medication(drug: Concept | None) -> MedicationTriage:
    """Cheap enough for every entry of a long medication list: set lookups of its codes,
    then of the word n-grams of its names.

    A known code proves interest, but an unknown code does not disprove it (the class lists
    hold ingredient codes, not every clinical drug), so only names can rule a drug out; one
    with no name at all is kept, and may be baclofen. Baclofen is ruled out with the
    evidence ``DrugIndex.baclofen_product`` uses (product or ingredient code, baclofen or
    brand name), so a drug it would call baclofen is never ruled out.
    """
    if drug is None:
        return MedicationTriage(of_interest=True, could_be_baclofen=True)
    codes = tuple(coding.code for coding in drug.codings if coding.code)
    texts = tuple(text for text in _concept_texts(drug) if text.strip())
    if sum(map(len, texts)) > MAX_KEY_BYTES:
        return _judge(codes, texts)
    return _triage(codes, texts)


def _judge(codes: tuple[str, ...], texts: tuple[str, ...]) -> MedicationTriage:
    """The judgement from a drug's codes and names alone."""
    if not texts:
        return MedicationTriage(of_interest=True, could_be_baclofen=True)
    baclofen_codes, words = _baclofen_evidence()
    if not baclofen_codes.isdisjoint(codes):
        return MedicationTriage(of_interest=True, could_be_baclofen=True)
    index = drug_index()
    joined = " ".join(dict.fromkeys(texts))  # the text often repeats the display
    of_interest = not index.codes_of_interest.isdisjoint(codes) or index.names_any(joined)
    lowered = joined.lower()
    baclofen = (
        of_interest
        and any(word in lowered for word in words)
        and index.baclofen_regex.search(_normalise(lowered)) is not None
    )
    return MedicationTriage(of_interest=of_interest, could_be_baclofen=baclofen)


_triage = lru_cache(maxsize=MEMO_SIZE)(_judge)
"""``_judge`` memoised: the same drugs recur across patients, and their names are the
costly part (tokens, n-grams, a regex)."""


@cache
def _baclofen_evidence() -> tuple[frozenset[str], tuple[str, ...]]:
    """Baclofen product and ingredient codes, and the first word of every baclofen name.

    A name can only match ``baclofen_regex`` where its first word occurs in the text, so
    a substring test of those words rules most texts out before the regex runs.
    """
    index = drug_index()
    products = read_data("baclofen_products.json")
    words = {name.lower().split()[0] for name in [*products["names"], *index.brands]}
    return frozenset({*index.products, index.ingredient_rxcui}), tuple(sorted(words))
