"""``CDS_LOG_FORMAT=text``: plain lines for a person at a terminal, JSON for log shippers.

Served tests check what ``baclofen-cds serve`` itself prints: one "serving on" line from
the master, and the start-up lines once, not once more per worker.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import ConfigError
from cds_hooks.logging import configure_logging
from tests.conftest import load_json
from tests.served import serve
from tests.test_cli import run_cli

EVELYN = "requests/sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json"
SERVING_LINE = re.compile(r"serving on http://127\.0\.0\.1:\d+ \(2 workers, knowledge [\d.]+;")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("INFO")


def test_text_lines_carry_the_json_lines_fields(
    app_config: dict[str, Any], capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    client = create_app({**app_config, "LOG_FORMAT": "text"}).test_client()
    capsys.readouterr()
    response = client.post("/cds-services/baclofen-order-sign", json=load_json(EVELYN)["body"])
    assert response.status_code == 200
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "request handled" in x]
    assert " INFO cds_hooks.request: request handled method=POST " in line
    assert "status=200" in line and "service=baclofen-order-sign" in line
    assert f"request_id={response.headers['X-Request-ID']}" in line
    assert 'topics=["' in line  # a list is written as JSON, so it cannot pass for more fields


def test_text_lines_withhold_exception_messages(
    app_config: dict[str, Any], capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    create_app({**app_config, "LOG_FORMAT": "text"})
    capsys.readouterr()
    try:
        raise ValueError("birth date 1941-03-02 is not valid")
    except ValueError:
        logging.getLogger("cds_hooks.test").exception("reading failed")
    err = capsys.readouterr().err
    assert "ValueError (message withheld) at test_log_format.py:" in err
    assert "1941" not in err


def test_an_unknown_log_format_stops_start_up(app_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="CDS_LOG_FORMAT must be one of json, text"):
        create_app({**app_config, "LOG_FORMAT": "xml"})


def test_the_master_says_where_it_serves_once_and_workers_do_not_repeat_start_up(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, workers=2, env={"CDS_LOG_FORMAT": "text"}) as (base, log, _):
        pass
    lines = log.read_text().splitlines()
    serving = [line for line in lines if "serving on" in line]
    assert len(serving) == 1 and SERVING_LINE.search(serving[0])
    assert base in serving[0]
    assert sum("Booting worker" in line for line in lines) == 2
    # The master opens the store and warns before forking; two workers would print each
    # line twice more. (The schema itself is upgraded by `db upgrade`, before serving.)
    assert sum("database schema" in line for line in lines) <= 1
    assert sum("caller authentication is DISABLED" in line for line in lines) == 1
    assert not [line for line in lines if line.startswith("{")]


def test_the_serving_line_is_a_json_line_by_default(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as (base, log, _):
        pass
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    (serving,) = [line for line in lines if line["message"].startswith("serving on")]
    assert serving["logger"] == "gunicorn.error" and base in serving["message"]


def test_the_schema_upgrade_prints_in_the_format_it_is_given(tmp_path: Path) -> None:
    """``make run`` is a person at a terminal: its schema upgrade printed JSON lines, while
    the server after it printed text, because ``db upgrade`` ignored CDS_LOG_FORMAT."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    text = run_cli("db", "upgrade", tmp_path=tmp_path, database_url=url, CDS_LOG_FORMAT="text")
    assert text.returncode == 0, text.stderr
    lines = text.stderr.splitlines()
    assert any("Running upgrade" in line for line in lines)
    assert not any(line.startswith("{") for line in lines), lines
    again = run_cli("db", "upgrade", tmp_path=tmp_path, database_url=url)
    assert all(json.loads(line) for line in again.stderr.splitlines()), "JSON stays the default"


def test_make_run_gives_every_step_the_format_it_was_given() -> None:
    """Every ``baclofen-cds`` step of ``make run`` gets LOG_FORMAT (text by default)."""
    makefile = (Path(__file__).parent.parent / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    commands = recipe.replace("\\\n", " ").split("\n")[1:]
    steps = [command for command in commands if "baclofen-cds" in command]
    assert len(steps) == 2
    assert all("CDS_LOG_FORMAT=$(LOG_FORMAT)" in step for step in steps), steps
