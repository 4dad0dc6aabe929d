"""The rule table (``rules.toml``) and institution policy files layered over it.

A policy file is TOML::

    [rules.R6g]
    enabled = true              # switch a rule on or off
    tier = "warning"            # info | warning | critical

    [rules.R4b.thresholds]
    ceiling = 15                # override a named threshold (same unit as rules.toml)

Everything is checked before the service starts: unknown rule ids, threshold names, keys,
tiers, non-numeric or out-of-range values, and limits that would no longer be ordered
(e.g. renal bands, ceilings that must fall as kidney function falls). A bad file raises
``ConfigError`` with the file, the key and the reason.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from cds_hooks.config import ConfigError
from cds_hooks.knowledge import KNOWLEDGE_VERSION, RuleSpec, Source, Threshold, read_data
from cds_hooks.model import Indicator, Topic

RULE_KEYS = frozenset({"enabled", "tier", "thresholds"})
TOP_LEVEL_KEYS = frozenset({"rules", "name", "description", "version"})

# Upper bounds by unit, so a typo (an eGFR of 600, an age of 650) cannot slip through.
UNIT_MAXIMUM = {
    "%": 100.0,
    "a": 130.0,
    "d": 3650.0,
    "h": 720.0,
    "mL/min": 200.0,
    "mL/min/{1.73_m2}": 200.0,
    "{drugs}": 20.0,
    "mg": 1000.0,
    "mg/d": 1000.0,
    "ug": 10000.0,
    "ug/d": 10000.0,
}

# (rule id, threshold) chains that must be strictly increasing: renal bands by measure.
STRICTLY_INCREASING = (
    (("R4a", "esrd_limit"), ("R4b", "severe_limit"), ("R4c", "crcl_limit"), ("R4d", "crcl_limit")),
    (("R4a", "esrd_limit"), ("R4b", "severe_limit"), ("R4c", "egfr_limit"), ("R4d", "egfr_limit")),
)
# Chains that must not decrease: daily ceilings rise with kidney function up to the label
# maximum, the label maximum stays below the absolute one, short look-backs stay short.
NON_DECREASING = (
    (
        ("R4a", "dialysis_ceiling"),
        ("R4b", "ceiling"),
        ("R4c", "ceiling"),
        ("R4d", "ceiling"),
        ("R3a", "max_daily"),
        ("R3b", "max_daily"),
    ),
    (("R3d", "start_daily"), ("R3a", "max_daily")),
    (("R4i", "start_daily"), ("R4b", "ceiling")),
    (("R5c", "reduced_start_daily"), ("R5c", "start_daily"), ("R3a", "max_daily")),
    (("R5c", "age"), ("R5c", "old_age")),
    (("R5a", "young_child_ceiling"), ("R5a", "child_ceiling"), ("R3a", "max_daily")),
    (("R5a", "young_child_age"), ("R5a", "min_age")),
    (("R3d", "start_single_dose"), ("R3c", "max_single_dose")),
    (("R2a", "max_bolus"), ("R2b", "max_daily")),
    (("R2c", "max_increase_cerebral"), ("R2c", "max_increase_spinal")),
    (("R4f", "lookback_high_risk"), ("R4f", "lookback")),
)


@cache
def sources() -> Mapping[str, Source]:
    data = read_data("sources.toml")
    return MappingProxyType(
        {
            key: Source(
                id=key,
                label=entry["label"],
                citation=entry["citation"],
                url=entry.get("url"),
                grade=entry["grade"],
                from_age=entry.get("from_age"),
                with_classes=frozenset(entry.get("with_classes", ())),
            )
            for key, entry in data["sources"].items()
        }
    )


@cache
def default_rules() -> Mapping[str, RuleSpec]:
    """The shipped rule table, checked like a policy (so the data itself cannot drift)."""
    data = read_data("rules.toml")
    where = "rules.toml"
    if data.get("version") != KNOWLEDGE_VERSION:
        raise ConfigError(f"{where}: version {data.get('version')!r} != {KNOWLEDGE_VERSION}")
    known_sources = sources()
    rules: dict[str, RuleSpec] = {}
    for rule_id, entry in data["rules"].items():
        cited = tuple(entry.get("sources", ()))
        thresholds = {}
        for name, t in entry.get("thresholds", {}).items():
            thresholds[name] = Threshold(
                name=name,
                value=float(t["value"]),
                unit=t["unit"],
                source_ids=tuple(t["sources"]),
                note=t["note"],
            )
            cited += thresholds[name].source_ids
        missing = sorted(set(cited) - set(known_sources))
        if missing:
            raise ConfigError(f"{where}: rules.{rule_id}: unknown sources {missing}")
        rules[rule_id] = RuleSpec(
            id=rule_id,
            topic=Topic(entry["topic"]),
            tier=Indicator(entry["tier"]),
            enabled=bool(entry["enabled"]),
            trigger=entry["trigger"],
            thresholds=MappingProxyType(thresholds),
            source_ids=tuple(entry["sources"]),
        )
    frozen = MappingProxyType(rules)
    validate_rules(frozen, where)
    return frozen


def read_policy(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"policy file {path}: cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {path}: not valid TOML ({exc})") from exc


def apply_policy(
    rules: Mapping[str, RuleSpec], policy: Mapping[str, Any], path: str
) -> Mapping[str, RuleSpec]:
    """``rules`` with the policy's overrides, or ``ConfigError`` naming what is wrong."""

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"policy file {path}: {key}: {reason}")

    for key in policy:
        if key not in TOP_LEVEL_KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    overrides = policy.get("rules", {})
    if not isinstance(overrides, Mapping):
        raise fail("rules", "must be a table of rule ids")
    result = dict(rules)
    for rule_id, change in overrides.items():
        key = f"rules.{rule_id}"
        if rule_id not in rules:
            raise fail(key, f"unknown rule id (known: {', '.join(rules)})")
        if not isinstance(change, Mapping):
            raise fail(key, "must be a table")
        for name in change:
            if name not in RULE_KEYS:
                raise fail(f"{key}.{name}", "unknown key (allowed: enabled, tier, thresholds)")
        spec = result[rule_id]
        if "enabled" in change:
            if not isinstance(change["enabled"], bool):
                raise fail(f"{key}.enabled", "must be true or false")
            spec = replace(spec, enabled=change["enabled"])
        if "tier" in change:
            try:
                spec = replace(spec, tier=Indicator(change["tier"]))
            except ValueError:
                tiers = ", ".join(i.value for i in Indicator)
                raise fail(
                    f"{key}.tier", f"must be one of {tiers}, got {change['tier']!r}"
                ) from None
        new_thresholds = change.get("thresholds", {})
        if not isinstance(new_thresholds, Mapping):
            raise fail(f"{key}.thresholds", "must be a table of threshold names")
        if new_thresholds:
            thresholds = dict(spec.thresholds)
            for name, value in new_thresholds.items():
                tkey = f"{key}.thresholds.{name}"
                if name not in thresholds:
                    known = ", ".join(thresholds) or "none"
                    raise fail(tkey, f"unknown threshold (known for {rule_id}: {known})")
                problem = _value_problem(value, thresholds[name].unit)
                if problem:
                    raise fail(tkey, problem)
                thresholds[name] = replace(
                    thresholds[name],
                    value=float(value),
                    note=f"Institution policy ({thresholds[name].value:g} by default). "
                    + thresholds[name].note,
                    source_ids=("POLICY", *thresholds[name].source_ids),
                )
            spec = replace(spec, thresholds=MappingProxyType(thresholds))
        result[rule_id] = spec
    frozen = MappingProxyType(result)
    validate_rules(frozen, f"policy file {path}")
    return frozen


def _value_problem(value: Any, unit: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value) or value <= 0:
        return f"must be positive, got {value!r}"
    maximum = UNIT_MAXIMUM.get(unit)
    if maximum is not None and value > maximum:
        return f"must be at most {maximum:g} {unit}, got {value!r}"
    return None


def validate_rules(rules: Mapping[str, RuleSpec], where: str) -> None:
    """Cross-threshold checks that keep the table coherent whatever was overridden."""
    for spec in rules.values():
        for t in spec.thresholds.values():
            problem = _value_problem(t.value, t.unit)
            if problem:
                raise ConfigError(f"{where}: rules.{spec.id}.thresholds.{t.name}: {problem}")
    for chain, strict in [(c, True) for c in STRICTLY_INCREASING] + [
        (c, False) for c in NON_DECREASING
    ]:
        for (lo_rule, lo_name), (hi_rule, hi_name) in pairwise(chain):
            lo = rules[lo_rule].thresholds[lo_name].value
            hi = rules[hi_rule].thresholds[hi_name].value
            if lo > hi or (strict and lo == hi):
                relation = "below" if strict else "at most"
                raise ConfigError(
                    f"{where}: rules.{lo_rule}.thresholds.{lo_name} ({lo:g}) must be {relation} "
                    f"rules.{hi_rule}.thresholds.{hi_name} ({hi:g})"
                )
