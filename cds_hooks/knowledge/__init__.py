"""Clinical knowledge shipped as versioned data files (``data/``), each fact with its source.

Code reads knowledge only through this package, never from literals of its own. The rule
table (``rules.toml``) is the default; an institution policy file (``policy.py``) may switch
rules off, change tiers and override thresholds, and is validated before the service starts.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from cds_hooks.config import ConfigError
from cds_hooks.memo import MEMO_SIZE, concept_memo
from cds_hooks.model import Concept, Indicator, MedicationProduct, Topic

if TYPE_CHECKING:
    from cds_hooks.knowledge.conditions import ConditionFlag, ConditionIndex
    from cds_hooks.knowledge.drugs import BaclofenProduct, DrugClass, DrugIndex


def read_data(name: str) -> dict[str, Any]:
    """Parse one file of ``data/`` (TOML or JSON)."""
    path = resources.files(__package__).joinpath("data", name)
    if name.endswith(".json"):
        return dict(json.loads(path.read_text(encoding="utf-8")))
    with path.open("rb") as fh:
        return tomllib.load(fh)


KNOWLEDGE_VERSION: str = read_data("manifest.toml")["version"]


@dataclass(frozen=True, slots=True)
class CreatinineRise:
    """The serum creatinine criteria of acute kidney injury (``observations.toml``)."""

    rise_mg_dl: float
    rise_window: timedelta
    ratio: float
    ratio_window: timedelta
    source_ids: tuple[str, ...]

    @property
    def history_days(self) -> int:
        """Whole days before the newest creatinine that either criterion looks back over."""
        return math.ceil(max(self.rise_window, self.ratio_window) / timedelta(days=1))


@dataclass(frozen=True, slots=True)
class ObservationCodes:
    """LOINC codes by purpose, each tuple in preference order, and how kidney labs are read."""

    version: str
    egfr: tuple[str, ...]
    creatinine_clearance: tuple[str, ...]
    serum_creatinine: tuple[str, ...]
    body_weight: tuple[str, ...]
    cystatin_c_egfr: frozenset[str]
    """eGFR codes (each also in ``egfr``) of an eGFR with cystatin C."""
    cystatin_c_sources: tuple[str, ...]
    calculated_egfr_sources: tuple[str, ...]
    """The equation an eGFR calculated from serum creatinine follows, and who recommends it."""
    creatinine_rise: CreatinineRise

    @property
    def renal(self) -> tuple[str, ...]:
        return self.egfr + self.creatinine_clearance + self.serum_creatinine


_WINDOW_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1)}


@cache
def observation_codes() -> ObservationCodes:
    data = read_data("observations.toml")
    rise = data["creatinine_rise"]
    return ObservationCodes(
        version=data["version"],
        egfr=tuple(data["egfr"]["codes"]),
        creatinine_clearance=tuple(data["creatinine_clearance"]["codes"]),
        serum_creatinine=tuple(data["serum_creatinine"]["codes"]),
        body_weight=tuple(data["body_weight"]["codes"]),
        cystatin_c_egfr=frozenset(data["cystatin_c_egfr"]["codes"]),
        cystatin_c_sources=tuple(data["cystatin_c_egfr"]["sources"]),
        calculated_egfr_sources=tuple(data["egfr"]["calculation_sources"]),
        creatinine_rise=CreatinineRise(
            rise_mg_dl=rise["rise"]["value"],
            rise_window=rise["rise_window"]["value"] * _WINDOW_UNITS[rise["rise_window"]["unit"]],
            ratio=rise["ratio"]["value"],
            ratio_window=rise["ratio_window"]["value"]
            * _WINDOW_UNITS[rise["ratio_window"]["unit"]],
            source_ids=tuple(rise["sources"]),
        ),
    )


@dataclass(frozen=True, slots=True)
class Source:
    """A cited source. ``from_age`` and ``with_classes`` bound what it supports: a card
    cites it only for a patient of that age or more (Beers: older adults), or only when a
    drug of one of those classes is there (the FDA 2019 communication: gabapentinoids)."""

    id: str
    label: str
    citation: str
    url: str | None
    grade: str
    from_age: float | None = None
    with_classes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    value: float
    unit: str
    source_ids: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class RuleSpec:
    id: str
    topic: Topic
    tier: Indicator
    enabled: bool
    trigger: str
    thresholds: Mapping[str, Threshold]
    source_ids: tuple[str, ...]


class Knowledge:
    """The effective knowledge for one deployment: rule table after policy, plus matchers.

    Built once at start-up (``load_knowledge``) and shared read-only by every request.
    Concept matching (names by regex) is the engine's main cost and its answer depends only
    on the concept, so answers are memoised: the same few hundred drugs and conditions recur
    across patients. Each memo holds at most ``MEMO_SIZE`` concepts, and none with long text
    (``memo.concept_memo``), so a stream of unique free text cannot grow it without bound.
    """

    drug: Callable[
        [Concept, MedicationProduct | None], tuple[BaclofenProduct | None, frozenset[str]]
    ]
    """``baclofen_product`` and ``drug_classes`` of a concept from one memo lookup: the engine
    reads one or the other of every order, and hashing the concept is most of a lookup's cost."""
    condition_flags: Callable[[Concept], frozenset[str]]
    class_labels: Callable[[frozenset[str]], str]
    """Labels of class ids in id order, comma-separated (``"benzodiazepine, opioid"``)."""
    any_beers_cns: Callable[[frozenset[str]], bool]
    """Does Beers 2023 count any of the class ids as CNS-active (per the class table)?"""
    thresholds: Mapping[tuple[str, str], float]
    """Each (rule id, threshold name)'s value: the rules read ~20 a call, one subscript each."""

    def __init__(
        self,
        *,
        version: str,
        sources: Mapping[str, Source],
        rules: Mapping[str, RuleSpec],
        policy_file: str | None,
        drugs: DrugIndex,
        conditions: ConditionIndex,
    ) -> None:
        self.version = version
        self.sources = sources
        self.rules = rules
        self.policy_file = policy_file
        self._drugs = drugs
        self._conditions = conditions
        self.drug = concept_memo(self._drug_of)
        self.condition_flags = concept_memo(conditions.flags)
        self.class_labels = lru_cache(maxsize=MEMO_SIZE)(self._labels_of)
        self.any_beers_cns = lru_cache(maxsize=MEMO_SIZE)(self._beers_cns_of)
        self._scoped_sources = tuple(
            s for s in sources.values() if s.from_age is not None or s.with_classes
        )
        self.thresholds = {
            (spec.id, name): t.value
            for spec in rules.values()
            for name, t in spec.thresholds.items()
        }

    def baclofen_product(
        self, concept: Concept, product: MedicationProduct | None = None
    ) -> BaclofenProduct | None:
        return self.drug(concept, product)[0]

    def drug_classes(self, concept: Concept) -> frozenset[str]:
        return self.drug(concept, None)[1]

    def _drug_of(
        self, concept: Concept, product: MedicationProduct | None
    ) -> tuple[BaclofenProduct | None, frozenset[str]]:
        return self._drugs.baclofen_product(concept, product), self._drugs.classes(concept)

    def unsupported_sources(self, age: int | None, classes: frozenset[str]) -> frozenset[str]:
        """Ids of the sources that say nothing about this patient: an age-bound source for a
        younger patient or one of unknown age, a class-bound one with no drug of its classes."""
        return frozenset(
            source.id
            for source in self._scoped_sources
            if (source.from_age is not None and (age is None or age < source.from_age))
            or (source.with_classes and source.with_classes.isdisjoint(classes))
        )

    def drug_class(self, class_id: str) -> DrugClass:
        """Label and grouping of a class id (e.g. whether Beers counts it as CNS-active)."""
        return self._drugs.drug_class(class_id)

    def _labels_of(self, class_ids: frozenset[str]) -> str:
        return ", ".join(self._class_label(c) for c in sorted(class_ids))

    def _class_label(self, class_id: str) -> str:
        """The table's label, or the id in words for a class the table does not describe."""
        try:
            return str(self.drug_class(class_id).label)
        except (KeyError, AttributeError):
            return class_id.replace("-", " ")

    def _beers_cns_of(self, class_ids: frozenset[str]) -> bool:
        for class_id in class_ids:
            try:
                if self.drug_class(class_id).beers_cns_active:
                    return True
            except KeyError:
                continue
        return False

    def condition_flag(self, flag_id: str) -> ConditionFlag:
        """Label of a flag and the rules that use it."""
        return self._conditions.flags_by_id[flag_id]


def load_knowledge(policy_file: str | None = None) -> Knowledge:
    """The default knowledge, with ``policy_file`` (an institution policy) applied.

    Raises ``ConfigError`` naming the file, key and problem when the policy is invalid, so a
    deployment with a bad policy never answers a hook.
    """
    from cds_hooks.knowledge.conditions import condition_index
    from cds_hooks.knowledge.drugs import drug_index
    from cds_hooks.knowledge.policy import apply_policy, default_rules, read_policy, sources

    rules = default_rules()
    if policy_file:
        rules = apply_policy(rules, read_policy(policy_file), policy_file)
    return Knowledge(
        version=KNOWLEDGE_VERSION,
        sources=sources(),
        rules=rules,
        policy_file=policy_file,
        drugs=drug_index(),
        conditions=condition_index(),
    )


__all__ = [
    "KNOWLEDGE_VERSION",
    "ConfigError",
    "CreatinineRise",
    "Knowledge",
    "ObservationCodes",
    "RuleSpec",
    "Source",
    "Threshold",
    "load_knowledge",
    "observation_codes",
]
