"""``baclofen-cds evaluate``: a pharmacist reviews a case from a file, no server needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cds_checks import assert_operation_outcome
from tests.conftest import sqlite_url

REQUESTS = Path(__file__).parent / "data" / "requests"


def run_cli(
    *args: str, tmp_path: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``baclofen-cds ARGS`` in development mode, on ``database_url`` (default: a SQLite
    file in ``tmp_path``)."""
    env = os.environ | {
        "CDS_ENV": "development",
        "DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    }
    return subprocess.run(
        [sys.executable, "-m", "cds_hooks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_evaluate_prints_the_cds_hooks_response_for_a_captured_request(tmp_path: Path) -> None:
    result = run_cli(
        "evaluate",
        str(REQUESTS / "sandbox-order-sign-baclofen10-3tab-daily.json"),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert isinstance(response["cards"], list)


def test_evaluate_accepts_a_bare_hook_request(tmp_path: Path) -> None:
    captured = json.loads((REQUESTS / "sandbox-order-select-no-medication-yet.json").read_text())
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(captured["body"]))
    result = run_cli("evaluate", str(request_file), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cards": []}


def test_evaluate_reports_an_invalid_request_as_operation_outcome(tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"hook": "order-sign", "context": {}}))
    result = run_cli("evaluate", str(request_file), tmp_path=tmp_path)
    assert result.returncode == 1
    assert_operation_outcome(json.loads(result.stdout))


def test_evaluate_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    request_file = tmp_path / "quixphiwhistle-zebulonia-1941.json"
    request_file.write_text('{"patient": "Zebulonia Quixphiwhistle" oops}')
    result = run_cli("evaluate", str(request_file), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "not valid JSON (line 1" in result.stderr
    # Neither the content nor the file name (often the patient's) is echoed.
    assert "zebulonia" not in result.stderr.lower()


def test_evaluate_refuses_a_deeply_nested_file_without_a_traceback(tmp_path: Path) -> None:
    request_file = tmp_path / "deep.json"
    request_file.write_text("[" * 100_000)
    result = run_cli("evaluate", str(request_file), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "nested too deeply" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_refuses_a_missing_file_without_naming_it(tmp_path: Path) -> None:
    result = run_cli("evaluate", str(tmp_path / "zebulonia.json"), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "No such file or directory" in result.stderr
    assert "zebulonia" not in result.stderr.lower()


def test_evaluate_names_the_hooks_it_answers_not_the_one_it_was_sent(tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"hook": "Zebulonia Quixphiwhistle", "context": {}}))
    result = run_cli("evaluate", str(request_file), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "order-sign" in result.stderr and "Zebulonia" not in result.stderr


def test_feedback_command_summarises_stored_overrides(tmp_path: Path) -> None:
    from cds_hooks.app import create_app

    database = sqlite_url(tmp_path, "cli.sqlite3")
    client = create_app({"ENV": "development", "DATABASE_URL": database}).test_client()
    override = {
        "card": "1a7b3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c",
        "outcome": "overridden",
        "overrideReason": {
            "reason": {
                "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                "code": "risk-benefit-ratio",
            }
        },
        "outcomeTimestamp": "2026-11-22T10:05:31.123Z",
    }
    response = client.post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": [override]}
    )
    assert response.status_code == 200
    result = run_cli("feedback", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    # A made-up version 4 uuid carries no topic (our cards' uuids do: tests/test_feedback.py).
    assert "| baclofen-order-sign | unknown | overridden |" in result.stdout
    assert "#risk-benefit-ratio | 1 |" in result.stdout
