"""``baclofen-cds evaluate``: a pharmacist reviews a case from a file, no server needed."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from cards.card_uuid import topic_tail, with_topic
from tests.cds_checks import assert_operation_outcome
from tests.conftest import sqlite_url

REQUESTS = Path(__file__).parent / "data" / "requests"


def run_cli(
    *args: str, tmp_path: Path, database_url: str | None = None, **environ: str
) -> subprocess.CompletedProcess[str]:
    """``baclofen-cds ARGS`` in development mode, on ``database_url`` (default: a SQLite
    file in ``tmp_path``, upgraded as ``make run`` upgrades it) and ``environ``."""
    env = os.environ | {
        "CDS_ENV": "development",
        "DATABASE_URL": database_url or sqlite_url(tmp_path, "cli.sqlite3"),
        **environ,
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


def test_evaluate_text_shows_each_card_with_its_data_and_suggestions(tmp_path: Path) -> None:
    """What a pharmacist reads: the JSON response's cards, in order, without the JSON."""
    request = str(REQUESTS / "sandbox-order-sign-baclofen10-3tab-daily.json")
    cards = json.loads(run_cli("evaluate", request, tmp_path=tmp_path).stdout)["cards"]
    result = run_cli("evaluate", request, "--format", "text", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"{len(cards)} card(s), most severe first:\n")
    headings = [line for line in text.splitlines() if line[:1].isdigit() and ". " in line]
    assert headings == [
        f"{n}. {card['indicator'].upper()}: {card['summary']}" for n, card in enumerate(cards, 1)
    ]
    renal = text.split("\n\n")[2]  # the kidney card: old eGFR, a creatinine order and a dose
    assert "   topic: Kidney function unknown (rules R4f)" in renal
    assert "   data used:\n   - Age 85 years\n" in renal
    assert "   - Older result not used: eGFR 28 mL/min/1.73 m² (2025-01-15)" in renal
    # An 85-year-old starting baclofen at the last known eGFR 28: the severe band's start,
    # recommended, not the 20 mg/day ceiling; the creatinine order stays on offer.
    assert (
        "   suggestions:\n   - Change to ½ tablet (5 mg) once a day = 5 mg/day (recommended)\n"
        in renal
    )
    assert renal.endswith("   - Order serum creatinine")


def test_evaluate_text_names_the_findings_beyond_the_card_limit(tmp_path: Path) -> None:
    request = str(REQUESTS / "sandbox-order-sign-baclofen10-3tab-daily.json")
    result = run_cli("evaluate", request, "--format", "text", tmp_path=tmp_path, CDS_MAX_CARDS="3")
    assert result.stdout.startswith("3 card(s)")
    assert result.stdout.endswith(
        "\nNot shown (more than CDS_MAX_CARDS cards): Baclofen maximum daily dose\n"
    )


def test_evaluate_text_names_a_finding_said_on_another_card_there(tmp_path: Path) -> None:
    """The Beers count of CNS-active drugs is said on the CNS-depressant card: its rule is
    listed with that card's, and it is not reported as a card left out."""
    request = str(REQUESTS / "sandbox-order-sign-baclofen10-3tab-daily.json")
    text = run_cli("evaluate", request, "--format", "text", tmp_path=tmp_path).stdout
    assert "   topic: Baclofen with CNS depressants (rules R6b, R6a, R6c, R6d)" in text
    assert "Not shown" not in text


def test_evaluate_text_says_when_there_is_nothing_to_show(tmp_path: Path) -> None:
    request = str(REQUESTS / "sandbox-order-select-no-medication-yet.json")
    result = run_cli("evaluate", request, "--format", "text", tmp_path=tmp_path)
    assert result.returncode == 0
    assert result.stdout == "No cards: no baclofen order under review, or nothing to flag.\n"


def test_evaluate_text_states_why_a_request_is_refused(tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"hook": "order-sign", "context": {}}))
    result = run_cli("evaluate", str(request_file), "--format", "text", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("The request was refused: ")


def test_a_refused_request_is_explained_without_its_patient_data_or_token(
    tmp_path: Path,
) -> None:
    """The reason names the element at fault, never a value the request carried."""
    captured = json.loads((REQUESTS / "sandbox-order-sign-baclofen10-3tab-daily.json").read_text())
    body = captured["body"]
    body["context"]["patientId"] = "zebulonia-1941"
    body["prefetch"]["patient"] = {
        "resourceType": "Patient",
        "id": "zebulonia-1941",
        "name": [{"family": "Quixphiwhistle", "given": ["Zebulonia"]}],
    }
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = {
        "access_token": "secret-token-xyzzy",
        "token_type": "Bearer",
        "expires_in": "soon",
        "scope": "patient/*.read",
        "subject": "zebulonia-1941",
    }
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(body))
    for form in ("text", "json"):
        result = run_cli("evaluate", str(request_file), "--format", form, tmp_path=tmp_path)
        assert result.returncode == 1
        assert "expires_in" in result.stdout
        said = (result.stdout + result.stderr).lower()
        for value in ("zebulonia", "quixphiwhistle", "secret-token-xyzzy", "soon"):
            assert value not in said, value


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


NON_ADHERENCE = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
RENAL_DOSE_CARD = with_topic("1a7b3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c", topic_tail(6))


def overridden(card: str, when: str, system: str, code: str, display: str | None = None) -> Any:
    reason = {"system": system, "code": code} | ({"display": display} if display else {})
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {"reason": reason},
        "outcomeTimestamp": when,
    }


def store_feedback(tmp_path: Path) -> None:
    """Three overrides: two of our cards on two services and dates, one from the sandbox's
    own reason list (system and code unknown to the catalogue, display sent)."""
    from cds_hooks.app import create_app

    database = sqlite_url(tmp_path, "cli.sqlite3")
    client = create_app({"ENV": "development", "DATABASE_URL": database}).test_client()
    sent = {
        "baclofen-order-sign": [
            overridden(
                RENAL_DOSE_CARD, "2026-10-02T10:05:31Z", NON_ADHERENCE, "risk-benefit-ratio"
            ),
            overridden(
                "0b7f5a52-5c7e-4f55-9d0e-3f1f6f2b7a10",
                "2026-11-22T10:05:31.123Z",
                "https://sandbox.example/reasons",
                "patient-tolerating-dose",
                "Patient is tolerating the dose",
            ),
        ],
        "baclofen-order-select": [
            overridden(RENAL_DOSE_CARD, "2026-11-23T08:00:00Z", NON_ADHERENCE, "risk-benefit-ratio")
        ],
    }
    for service, items in sent.items():
        response = client.post(f"/cds-services/{service}/feedback", json={"feedback": items})
        assert response.status_code == 200


def test_feedback_shows_topics_and_override_reasons_by_name(tmp_path: Path) -> None:
    store_feedback(tmp_path)
    result = run_cli("feedback", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]
    assert rows == [
        ["service", "card topic", "outcome", "override reason", "count"],
        [
            "baclofen-order-select",
            "Baclofen dose for kidney function",
            "overridden",
            "Recipient assessment of risk/benefit ratio",
            "1",
        ],
        [
            "baclofen-order-sign",
            "Baclofen dose for kidney function",
            "overridden",
            "Recipient assessment of risk/benefit ratio",
            "1",
        ],
        [
            "baclofen-order-sign",
            "unknown (card uuid carries no topic)",
            "overridden",
            "Patient is tolerating the dose",
            "1",
        ],
    ]


def test_feedback_since_and_service_narrow_the_counts(tmp_path: Path) -> None:
    store_feedback(tmp_path)
    since = run_cli("feedback", "--since", "2026-11-01", tmp_path=tmp_path).stdout
    assert "Recipient assessment" in since and since.count("baclofen-order-sign") == 1
    late = run_cli("feedback", "--since", "2026-11-23T07:00:00+00:00", tmp_path=tmp_path).stdout
    assert late.splitlines()[1].startswith("baclofen-order-select ") and len(late.splitlines()) == 2
    one = run_cli("feedback", "--service", "baclofen-order-select", tmp_path=tmp_path).stdout
    assert [line.split()[0] for line in one.splitlines()] == ["service", "baclofen-order-select"]
    none = run_cli(
        "feedback", "--since", "2027-01-01", "--service", "baclofen-order-sign", tmp_path=tmp_path
    )
    assert (
        none.stdout == "no feedback yet since 2027-01-01T00:00:00+00:00 for baclofen-order-sign\n"
    )


def test_feedback_as_csv_has_codes_and_names(tmp_path: Path) -> None:
    store_feedback(tmp_path)
    result = run_cli(
        "feedback", "--format", "csv", "--service", "baclofen-order-sign", tmp_path=tmp_path
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["card_topic"], r["override_reason_code"], r["count"]) for r in rows] == [
        ("renal-dose", "risk-benefit-ratio", "1"),
        ("", "patient-tolerating-dose", "1"),
    ]
    assert rows[0]["card_topic_display"] == "Baclofen dose for kidney function"
    assert rows[0]["override_reason_display"] == "Recipient assessment of risk/benefit ratio"
    assert rows[0]["override_reason_system"] == NON_ADHERENCE
    assert rows[1]["override_reason_display"] == "Patient is tolerating the dose"


def test_feedback_says_so_when_there_is_none(tmp_path: Path) -> None:
    text = run_cli("feedback", tmp_path=tmp_path)
    assert text.returncode == 0 and text.stdout == "no feedback yet\n"
    as_csv = run_cli("feedback", "--format", "csv", tmp_path=tmp_path)
    assert as_csv.returncode == 0
    assert as_csv.stdout.startswith("service,card_topic,") and len(as_csv.stdout.splitlines()) == 1
    assert as_csv.stderr == "no feedback yet\n"


def test_feedback_refuses_a_since_that_is_not_a_date(tmp_path: Path) -> None:
    result = run_cli("feedback", "--since", "last week", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "expected a date (2026-11-01)" in result.stderr
