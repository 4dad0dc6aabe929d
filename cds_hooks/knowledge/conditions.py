"""Condition flags (dialysis, ESRD, epilepsy, ...) from SNOMED CT, ICD-10-CM or text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

from cds_hooks.knowledge import read_data
from cds_hooks.memo import concept_memo
from cds_hooks.model import ICD10CM, SNOMED, Concept

ICD10_SYSTEMS = frozenset(
    {ICD10CM, "http://hl7.org/fhir/sid/icd-10", "urn:oid:2.16.840.1.113883.6.90"}
)


def _icd(code: str) -> str:
    return code.replace(".", "").replace(" ", "").upper()


def _phrases(phrases: list[str]) -> re.Pattern[str]:
    ordered = sorted((p.lower() for p in phrases), key=len, reverse=True)
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered)
    return re.compile(r"(?<![a-z0-9])(?:" + body + r")(?![a-z0-9])")


@dataclass(frozen=True, slots=True)
class ConditionFlag:
    id: str
    label: str
    rule_ids: tuple[str, ...]


class ConditionIndex:
    def __init__(self) -> None:
        data = read_data("conditions.toml")
        self.version: str = data["version"]
        self.flags_by_id: Mapping[str, ConditionFlag] = MappingProxyType(
            {
                fid: ConditionFlag(id=fid, label=f["label"], rule_ids=tuple(f["rules"]))
                for fid, f in data["flags"].items()
            }
        )
        snomed: dict[str, set[str]] = {}
        prefixes: list[tuple[str, str]] = []
        self._text: list[tuple[str, re.Pattern[str], re.Pattern[str] | None]] = []
        for fid, f in data["flags"].items():
            for code in f["snomed"]:
                snomed.setdefault(code, set()).add(fid)
            prefixes.extend((_icd(code), fid) for code in f["icd10"])
            exclude = _phrases(f.get("exclude", ())) if f.get("exclude") else None
            self._text.append((fid, _phrases(f["text"]), exclude))
        self._snomed = {k: frozenset(v) for k, v in snomed.items()}
        self._icd_prefixes = tuple(prefixes)
        self._any_text = _phrases([p for f in data["flags"].values() for p in f["text"]])
        # Condition concepts recur across patients like drug concepts (see Knowledge).
        self._may_flag = concept_memo(self._search)

    def may_flag(self, concept: Concept) -> bool:
        """Could ``flags`` find any flag? One regex instead of one per flag, exclusions
        ignored: a cheap triage that may say yes in vain but never no in vain."""
        return self._may_flag(concept)

    def _search(self, concept: Concept) -> bool:
        for coding in concept.codings:
            if not coding.code:
                continue
            if coding.system == SNOMED and coding.code.strip() in self._snomed:
                return True
            if coding.system in ICD10_SYSTEMS:
                code = _icd(coding.code)
                if any(code.startswith(prefix) for prefix, _ in self._icd_prefixes):
                    return True
        texts = [concept.text or "", *(c.display or "" for c in concept.codings)]
        return self._any_text.search(" ".join(" ".join(texts).lower().split())) is not None

    def flags(self, concept: Concept) -> frozenset[str]:
        """Flags from codes and, always, from text: a local or unlisted code must not hide
        a dialysis written in the display (a missed flag is worse than an extra one)."""
        found: set[str] = set()
        for coding in concept.codings:
            if not coding.code:
                continue
            if coding.system == SNOMED:
                found |= self._snomed.get(coding.code.strip(), frozenset())
            elif coding.system in ICD10_SYSTEMS:
                code = _icd(coding.code)
                found |= {fid for prefix, fid in self._icd_prefixes if code.startswith(prefix)}
        texts = [concept.text or "", *(c.display or "" for c in concept.codings)]
        joined = " ".join(" ".join(texts).lower().split())
        for fid, regex, exclude in self._text:
            if regex.search(exclude.sub(" ", joined) if exclude else joined):
                found.add(fid)
        return frozenset(found)


@cache
def condition_index() -> ConditionIndex:
    return ConditionIndex()
