"""``baclofen-cds rules``: the effective rule table, and docs/rules.md kept equal to it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from cds_hooks.cli import main

ROOT = Path(__file__).parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["rules", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| R"):
            rows[cells[0]] = cells
    return rows


def test_docs_rules_md_is_up_to_date(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_POLICY_FILE", raising=False)
    status, out, _ = run(capsys)
    assert status == 0
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == out, (
        "docs/rules.md is stale: regenerate with `baclofen-cds rules > docs/rules.md`"
    )


def test_table_lists_every_rule_with_tier_threshold_source_and_state(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_POLICY_FILE", raising=False)
    _, out, _ = run(capsys)
    rows = table_rows(out)
    assert len(rows) >= 33
    assert rows["R4b"][2] == "critical"
    assert "ceiling = 20 mg/day" in rows["R4b"][3] and "Muanda 2019" in rows["R4b"][4]
    assert rows["R6g"][5] == "no" and rows["R3a"][5] == "yes"
    assert "max_bolus = 100 mcg" in rows["R2a"][3]
    assert "## Sources" in out and "https://doi.org/10.1002/jcph.247" in out


def test_policy_option_and_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('[rules.R6g]\nenabled = true\ntier = "warning"\n', encoding="utf-8")
    _, out, _ = run(capsys, "--policy", str(policy))
    assert table_rows(out)["R6g"][2] == "warning" and table_rows(out)["R6g"][5] == "yes"
    assert str(policy) in out

    monkeypatch.setenv("CDS_POLICY_FILE", str(policy))
    _, out, _ = run(capsys)
    assert table_rows(out)["R6g"][5] == "yes"


def test_bad_policy_prints_the_reason_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text("[rules.R4b.thresholds]\nceiling = -1\n", encoding="utf-8")
    status, out, err = run(capsys, "--policy", str(policy))
    assert status != 0 and out == ""
    assert str(policy) in err and "rules.R4b.thresholds.ceiling" in err and "positive" in err


def test_csv_has_one_row_per_rule_as_the_markdown_table_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_POLICY_FILE", raising=False)
    _, markdown, _ = run(capsys)
    status, out, _ = run(capsys, "--format", "csv")
    assert status == 0
    rows = {row["rule"]: row for row in csv.DictReader(io.StringIO(out))}
    # The rule table's rows: not its header ("Rule") nor the threshold notes ("R4b.ceiling").
    table = {
        r: cells for r, cells in table_rows(markdown).items() if r[1:2].isdigit() and "." not in r
    }
    assert list(rows) == list(table)
    for rule, cells in table.items():
        assert (rows[rule]["tier"], rows[rule]["enabled"]) == (cells[2], cells[5])
        assert rows[rule]["sources"] == cells[4].replace(", ", "; ")
    r4b = rows["R4b"]
    assert r4b["topic"] == "renal-dose" and "ceiling = 20 mg/day" in r4b["thresholds"]
    assert "Muanda 2019" in r4b["sources"] and r4b["knowledge_version"] in markdown

    policy = tmp_path / "p.toml"
    policy.write_text('[rules.R6g]\nenabled = true\ntier = "warning"\n', encoding="utf-8")
    _, out, _ = run(capsys, "--format", "csv", "--policy", str(policy))
    r6g = next(row for row in csv.DictReader(io.StringIO(out)) if row["rule"] == "R6g")
    assert (r6g["tier"], r6g["enabled"]) == ("warning", "yes")
