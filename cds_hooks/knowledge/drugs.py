"""Recognising baclofen products and interacting drug classes, by code first, then by name.

Orders arrive coded in RxNorm at clinical/branded drug level, at ingredient level, in a local
system, or as text only. Codes are looked up in frozensets built once from the data files
(``baclofen_products.json``, ``drug_classes.toml``, ``valuesets/``); anything else is matched
by whole-word names with one precompiled regex, so a local "Baclofen 10mg tab" is still
recognised. What a code does not say (route, dose form, strength, brand) is read from the
product's name with the vocabulary and precedence of ``product_text.toml``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from types import MappingProxyType
from typing import Any

from cds_hooks.knowledge import read_data
from cds_hooks.memo import concept_memo
from cds_hooks.model import RXNORM, Concept, MedicationProduct, Ratio

_NUMBER = r"(\d+(?:\.\d+)?)"
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_TOKEN = re.compile(r"[a-z0-9]+")
_MICROGRAM_MG = 0.001
"""A mass unit whose factor to mg is this is a microgram (how intrathecal strengths are written)."""


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


@dataclass(frozen=True, slots=True)
class Strength:
    """A product strength: mg per unit, or mg per mL, and whether it was written in micrograms."""

    mg: float
    per_ml: bool
    micrograms: bool = False

    @property
    def unit(self) -> str:
        return "mg/mL" if self.per_ml else "mg"


@dataclass(frozen=True, slots=True)
class Brand:
    """What a brand name alone says of its product (``product_text.toml`` [brands])."""

    name: str
    route: str | None
    dose_form: str | None
    strength: Strength | None


@dataclass(frozen=True, slots=True)
class _RouteWords:
    route: str
    words: re.Pattern[str] | None
    abbreviations: re.Pattern[str] | None
    dose_form: str | None


@dataclass(frozen=True, slots=True)
class _DoseForm:
    form: str
    route: str | None
    words: re.Pattern[str] | None
    codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Reading:
    """What a product's names (and Medication form and strength) say, before the code's facts."""

    brand: Brand | None
    strength: Strength | None
    form: _DoseForm | None
    route_words: _RouteWords | None


def _alternation(words: Iterable[str]) -> str:
    """Regex alternatives for ``words``, longest first, any run of spaces in a word as one."""
    ordered = sorted(set(words), key=len, reverse=True)
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


def _words(names: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of ``names`` as whole words of lower-case text, longest first."""
    return re.compile(r"(?<![a-z0-9])(" + _alternation(n.lower() for n in names) + r")(?![a-z0-9])")


def _exact_words(names: Iterable[str]) -> re.Pattern[str]:
    """Whole words in the case given: "IT" the route, not the English "it"."""
    return re.compile(r"(?<![A-Za-z0-9])(" + _alternation(names) + r")(?![A-Za-z0-9])")


def _clean(text: str) -> str:
    """Numbers in one spelling (no thousands separator, a decimal point), spaces collapsed."""
    text = _THOUSANDS.sub("", text)
    return " ".join(_DECIMAL_COMMA.sub(".", text).split())


def _normalise(text: str) -> str:
    return _clean(text.lower())


class ProductText:
    """How a product is read from its name: ``product_text.toml`` compiled once.

    The route comes from the first kind of evidence in the file's ``route_precedence`` that
    names one, and is "unknown" when none does; mass and volume units are the dose units of
    ``dosing.toml``, so a strength and a dose are read with the same table.
    """

    def __init__(self, data: Mapping[str, Any], units: Mapping[str, Any]) -> None:
        self.route_words = tuple(
            _RouteWords(
                route=entry["route"],
                words=_words(entry["words"]) if entry["words"] else None,
                abbreviations=_exact_words(entry["abbreviations"])
                if entry["abbreviations"]
                else None,
                dose_form=entry.get("dose_form"),
            )
            for entry in data["route_words"]
        )
        self.dose_forms = tuple(
            _DoseForm(
                form=entry["form"],
                route=entry.get("route"),
                words=_words(entry["words"]) if entry["words"] else None,
                codes=frozenset(entry["rxnorm"]),
            )
            for entry in data["dose_forms"]
        )
        self.brands: Mapping[str, Brand] = MappingProxyType(
            {name: _brand(name, entry) for name, entry in data["brands"].items()}
        )
        self._brand_regex = _words(self.brands)
        self._brand_by_lower = {name.lower(): brand for name, brand in self.brands.items()}

        self.mass_mg: Mapping[str, float] = {k: float(v) for k, v in units["mass_mg"].items()}
        self.volume_ml: Mapping[str, float] = {k: float(v) for k, v in units["volume_ml"].items()}
        strength = data["strength"]
        mass = "(" + _alternation(self.mass_mg) + ")"
        volume = "(" + _alternation(self.volume_ml) + r")(?![a-z0-9])"
        per = r"\s*(?:" + _alternation(strength["per"]) + r")\s*"
        self._concentration = re.compile(
            r"(?<![\d.])" + _NUMBER + r"\s*" + mass + per + _NUMBER + r"?\s*" + volume
        )
        self._per_unit = re.compile(r"(?<![\d.])" + _NUMBER + r"\s*" + mass + r"(?![a-zµμ/])")
        between = r"\s*(?:" + _alternation(strength["alternatives"]) + r")\s*"
        self._alternatives = re.compile(
            r"(?<![\d.])" + _NUMBER + r"(?:" + between + _NUMBER + r")+\s*" + mass
        )
        intrathecal, oral = strength["intrathecal"], strength["oral"]
        self._micrograms_intrathecal: bool = intrathecal["micrograms"]
        self._intrathecal_below: float = float(intrathecal["below_mg_per_ml"])
        self._oral_above: float = float(oral["above_mg_per_ml"])
        self._per_unit_oral: bool = oral["per_unit"]

        rungs: dict[str, Callable[[Reading], str | None]] = {
            "route-words": self._by_route_words,
            "intrathecal-strength": self._by_intrathecal_strength,
            "brand": lambda r: r.brand.route if r.brand else None,
            "dose-form": lambda r: r.form.route if r.form else None,
            "oral-strength": self._by_oral_strength,
        }
        precedence = data["route_precedence"]
        if sorted(precedence) != sorted(rungs):
            raise ValueError(
                f"product_text.toml: route_precedence must order exactly {sorted(rungs)}"
            )
        self._precedence = tuple(rungs[name] for name in precedence)

    def strength(self, text: str) -> Strength | None:
        """The strength a name states: a concentration first, else a strength per unit.

        ``"Ozobax 5 mg/5 mL"`` is 1 mg/mL; ``"Baclofen 10mg tab"`` 10 mg; a list of
        alternatives (``"500, 1000 or 2000 mcg/mL"``) is no single strength.
        """
        text = _normalise(text)
        lists = [m.span() for m in self._alternatives.finditer(text)]

        def single(match: re.Match[str]) -> bool:
            return not any(start <= match.start() < end for start, end in lists)

        for match in self._concentration.finditer(text):
            if single(match):
                factor = self.mass_mg[match.group(2)]
                volume = float(match.group(3) or 1.0) * self.volume_ml[match.group(4)]
                if volume <= 0:
                    return None
                mg = float(match.group(1)) * factor / volume
                return Strength(mg, per_ml=True, micrograms=factor == _MICROGRAM_MG)
        for match in self._per_unit.finditer(text):
            if single(match):
                factor = self.mass_mg[match.group(2)]
                mg = float(match.group(1)) * factor
                return Strength(mg, per_ml=False, micrograms=factor == _MICROGRAM_MG)
        return None

    def ratio_strength(self, ratio: Ratio) -> Strength | None:
        """A Medication's strength (``10 mg / 1 TAB``, ``2000 ug / 1 mL``)."""
        factor = self.mass_mg.get((ratio.numerator.units or "").lower())
        if factor is None or ratio.denominator.value <= 0:
            return None
        mg = ratio.numerator.value * factor / ratio.denominator.value
        volume = self.volume_ml.get((ratio.denominator.units or "").lower())
        micrograms = factor == _MICROGRAM_MG
        if volume is not None:
            return Strength(mg / volume, per_ml=True, micrograms=micrograms)
        return Strength(mg, per_ml=False, micrograms=micrograms)

    def read(self, texts: Iterable[str], product: MedicationProduct | None) -> Reading:
        joined = " ".join(texts)
        cased, lower = _clean(joined), _normalise(joined)
        strength = None
        if product is not None and product.strength is not None:
            strength = self.ratio_strength(product.strength)
        brand_match = self._brand_regex.search(lower)
        return Reading(
            brand=self._brand_by_lower[" ".join(brand_match.group(1).split())]
            if brand_match
            else None,
            strength=strength or self.strength(lower),
            form=self._dose_form(lower, product),
            route_words=next(
                (
                    entry
                    for entry in self.route_words
                    if (entry.words and entry.words.search(lower))
                    or (entry.abbreviations and entry.abbreviations.search(cased))
                ),
                None,
            ),
        )

    def route(self, reading: Reading) -> str:
        for rung in self._precedence:
            route = rung(reading)
            if route is not None:
                return route
        return "unknown"

    def dose_form(self, reading: Reading, route: str) -> str:
        """The form every product of the route has, else the name's, else the brand's."""
        for entry in self.route_words:
            if entry.route == route and entry.dose_form:
                return entry.dose_form
        if reading.form is not None:
            return reading.form.form
        return (reading.brand.dose_form if reading.brand else None) or "unknown"

    def brand_strength(self, reading: Reading, route: str) -> Strength | None:
        """The brand's own strength, unless the name puts the product on another route."""
        brand = reading.brand
        if brand is None or brand.route not in (None, route):
            return None
        return brand.strength

    def _dose_form(self, lower: str, product: MedicationProduct | None) -> _DoseForm | None:
        if product is not None and product.form is not None:
            codes = product.form.codes(RXNORM)
            for entry in self.dose_forms:
                if not entry.codes.isdisjoint(codes):
                    return entry
        for entry in self.dose_forms:
            if entry.words is not None and entry.words.search(lower):
                return entry
        return None

    def _by_route_words(self, reading: Reading) -> str | None:
        return reading.route_words.route if reading.route_words else None

    def _by_intrathecal_strength(self, reading: Reading) -> str | None:
        strength = reading.strength
        if strength is None:
            return None
        if strength.micrograms and self._micrograms_intrathecal:
            return "intrathecal"
        if strength.per_ml and strength.mg < self._intrathecal_below:
            return "intrathecal"
        return None

    def _by_oral_strength(self, reading: Reading) -> str | None:
        strength = reading.strength
        if strength is None:
            return None
        if strength.per_ml and strength.mg > self._oral_above:
            return "oral"
        if not strength.per_ml and self._per_unit_oral:
            return "oral"
        return None


def _brand(name: str, entry: Mapping[str, Any]) -> Brand:
    strength = None
    if "strength" in entry:
        strength = Strength(float(entry["strength"]), per_ml=entry["strength_unit"] == "mg/mL")
    return Brand(name, entry.get("route"), entry.get("dose_form"), strength)


def parse_strength(text: str) -> Strength | None:
    """The strength a product name states (see ``ProductText.strength``)."""
    return drug_index().text.strength(text)


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
        self.text = ProductText(read_data("product_text.toml"), read_data("dosing.toml")["units"])
        self.brands: Mapping[str, Brand] = self.text.brands
        self.baclofen_regex = _words([*products["names"], *self.brands])

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
        """Fill what the code did not say (brand, route, dose form, strength) from the names."""
        reading = self.text.read(texts, product)
        if found.brand is not None:  # the code's brand, not one its names happen to mention
            reading = replace(reading, brand=self.brands.get(found.brand))
        route = found.route if found.route != "unknown" else self.text.route(reading)
        dose_form = found.dose_form
        if dose_form == "unknown":
            dose_form = self.text.dose_form(reading, route)
        strength, unit = found.strength, found.strength_unit
        if strength is None:
            read = reading.strength or self.text.brand_strength(reading, route)
            if read is not None:
                strength, unit = read.mg, read.unit
        if route == "intrathecal" and strength is not None and unit == "mg/mL":
            strength, unit = strength * 1000.0, "mcg/mL"
        return replace(
            found,
            route=route,
            dose_form=dose_form,
            strength=strength,
            strength_unit=unit,
            brand=found.brand or (reading.brand.name if reading.brand else None),
        )


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
    then of the word n-grams of its names, memoised per concept (the same drugs recur
    across patients, and their names are the costly part: tokens, n-grams, a regex).

    A known code proves interest, but an unknown code does not disprove it (the class lists
    hold ingredient codes, not every clinical drug), so only names can rule a drug out; one
    with no name at all is kept, and may be baclofen. Baclofen is ruled out with the
    evidence ``DrugIndex.baclofen_product`` uses (product or ingredient code, baclofen or
    brand name), so a drug it would call baclofen is never ruled out.
    """
    if drug is None:
        return MedicationTriage(of_interest=True, could_be_baclofen=True)
    return _triage(drug)


def _triage_concept(drug: Concept) -> MedicationTriage:
    codes = tuple(coding.code for coding in drug.codings if coding.code)
    texts = tuple(text for text in _concept_texts(drug) if text.strip())
    return _judge(codes, texts)


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


_triage = concept_memo(_triage_concept)


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
