"""Institution policy files: overrides apply, and bad files stop the service from starting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import ConfigError
from cds_hooks.knowledge import load_knowledge
from cds_hooks.model import Indicator

EXAMPLE = Path(__file__).parent.parent / "docs" / "policy.example.toml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_shipped_example_applies(tmp_path: Path) -> None:
    knowledge = load_knowledge(str(EXAMPLE))
    assert knowledge.rules["R6g"].enabled is True
    assert knowledge.rules["R6e"].tier is Indicator.INFO
    assert knowledge.thresholds["R4b", "ceiling"] == 15
    assert knowledge.thresholds["R4f", "lookback"] == 180
    assert "POLICY" in knowledge.rules["R4b"].thresholds["ceiling"].source_ids
    assert knowledge.policy_file == str(EXAMPLE)


def test_unmentioned_rules_keep_their_defaults(tmp_path: Path) -> None:
    default = load_knowledge()
    changed = load_knowledge(write(tmp_path, '[rules.R3a]\ntier = "critical"\n'))
    assert changed.rules["R3a"].tier is Indicator.CRITICAL
    assert default.rules["R3a"].tier is Indicator.WARNING  # the default table is not mutated
    for rule_id, spec in default.rules.items():
        if rule_id != "R3a":
            assert changed.rules[rule_id] == spec


def test_rules_can_be_switched_off(tmp_path: Path) -> None:
    knowledge = load_knowledge(write(tmp_path, "[rules.R8]\nenabled = false\n"))
    assert knowledge.rules["R8"].enabled is False


@pytest.mark.parametrize(
    ("policy", "key", "reason"),
    [
        ("[rules.R99]\nenabled = true\n", "rules.R99", "unknown rule id"),
        ("[rules.R6g]\nenable = true\n", "rules.R6g.enable", "unknown key"),
        ('[rules.R6g]\nenabled = "yes"\n', "rules.R6g.enabled", "true or false"),
        ('[rules.R3a]\ntier = "severe"\n', "rules.R3a.tier", "info, warning, critical"),
        (
            "[rules.R4b.thresholds]\nceilng = 10\n",
            "rules.R4b.thresholds.ceilng",
            "unknown threshold",
        ),
        ("[rules.R4b.thresholds]\nceiling = 0\n", "rules.R4b.thresholds.ceiling", "positive"),
        ("[rules.R4b.thresholds]\nceiling = -5\n", "rules.R4b.thresholds.ceiling", "positive"),
        ('[rules.R4b.thresholds]\nceiling = "20"\n', "rules.R4b.thresholds.ceiling", "number"),
        ("[rules.R4b.thresholds]\nceiling = true\n", "rules.R4b.thresholds.ceiling", "number"),
        ("[rules.R5a.thresholds]\nmin_age = 1200\n", "rules.R5a.thresholds.min_age", "at most"),
        (
            "[rules.R2c.thresholds]\nmax_increase_spinal = 150\n",
            "rules.R2c.thresholds.max_increase_spinal",
            "at most",
        ),
        # band limits must stay ordered: severe (30) below moderate
        (
            "[rules.R4c.thresholds]\ncrcl_limit = 25\n",
            "rules.R4b.thresholds.severe_limit",
            "must be below",
        ),
        # ceilings must not rise as kidney function falls
        (
            "[rules.R4b.thresholds]\nceiling = 60\n",
            "rules.R4b.thresholds.ceiling",
            "must be at most",
        ),
        (
            "[rules.R3b.thresholds]\nmax_daily = 60\n",
            "rules.R3a.thresholds.max_daily",
            "must be at most",
        ),
        (
            "[rules.R4f.thresholds]\nlookback_high_risk = 400\n",
            "rules.R4f.thresholds.lookback_high_risk",
            "must be at most",
        ),
        ("colour = 1\n", "colour", "unknown key"),
        ("rules = 3\n", "rules", "table"),
        ("[rules\n", "not valid TOML", ""),
    ],
)
def test_bad_policy_names_file_key_and_reason(
    tmp_path: Path, policy: str, key: str, reason: str
) -> None:
    path = write(tmp_path, policy)
    with pytest.raises(ConfigError) as error:
        load_knowledge(path)
    message = str(error.value)
    assert path in message and key in message and reason in message


def test_missing_policy_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_knowledge(missing)


def test_app_refuses_to_start_with_a_bad_policy(tmp_path: Path, app_config: dict[str, Any]) -> None:
    path = write(tmp_path, '[rules.R4b]\ntier = "urgent"\n')
    with pytest.raises(ConfigError, match=r"rules\.R4b\.tier"):
        create_app({**app_config, "POLICY_FILE": path})


def test_app_loads_the_policy(tmp_path: Path, app_config: dict[str, Any]) -> None:
    app = create_app({**app_config, "POLICY_FILE": str(EXAMPLE)})
    knowledge = app.extensions["baclofen_knowledge"]
    assert knowledge.rules["R6g"].enabled is True


def test_policy_from_the_environment(
    tmp_path: Path, app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_POLICY_FILE", write(tmp_path, "[rules.R6g]\nenabled = true\n"))
    app = create_app(app_config)
    assert app.extensions["baclofen_knowledge"].rules["R6g"].enabled is True
