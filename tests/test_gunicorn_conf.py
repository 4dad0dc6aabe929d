"""The gunicorn settings an operator controls through the environment reach gunicorn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from gunicorn.config import Config

from cds_hooks import gunicorn_conf
from tests.served import serve


def gunicorn_config() -> Config:
    config = Config()
    for key, value in gunicorn_conf.options().items():
        if value is not None:
            config.set(key, value)
    return config


def test_worker_connections_keep_gunicorns_default_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUNICORN_WORKER_CONNECTIONS", raising=False)
    assert gunicorn_config().worker_connections == Config().worker_connections == 1000


def test_worker_connections_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUNICORN_THREADS", "4")
    monkeypatch.setenv("GUNICORN_WORKER_CONNECTIONS", "12")
    config = gunicorn_config()
    assert config.worker_connections == 12
    assert config.threads == 4


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True), ("true", True)]
)
def test_one_listening_socket_per_worker_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("GUNICORN_REUSE_PORT", raising=False)
    else:
        monkeypatch.setenv("GUNICORN_REUSE_PORT", value)
    assert gunicorn_config().reuse_port is expected


def test_every_line_the_server_writes_is_json_gunicorns_own_included(tmp_path: Path) -> None:
    """Log shippers parse one JSON object per line; a plain start-up line breaks that."""
    with serve(tmp_path, workers=1) as (_, log, process):
        pass
    assert process.returncode == 0

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    gunicorn_lines = {line["message"]: line for line in lines if line["logger"] == "gunicorn.error"}
    assert any(message.startswith("Booting worker with pid") for message in gunicorn_lines)
    assert "Shutting down: Master" in gunicorn_lines
    assert all(isinstance(line["pid"], int) for line in gunicorn_lines.values())
    assert all({"level", "timestamp", "knowledge_version"} <= line.keys() for line in lines)


def test_start_up_logs_no_error_and_names_the_address_with_one_socket_per_worker(
    tmp_path: Path,
) -> None:
    """In the container, $HOME is not writable (there gunicorn 27 put its control socket
    and logged an ERROR), and with SO_REUSEPORT gunicorn announced "Listening at:  (pid)"."""
    unwritable_home = tmp_path / "home"
    unwritable_home.write_text("a file, so nothing can be created under it, even by root")
    env = {"HOME": str(unwritable_home), "GUNICORN_REUSE_PORT": "1"}
    with serve(tmp_path, workers=1, env=env) as (base, log, _):
        pass

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [line["message"] for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    listening = [line["message"] for line in lines if line["message"].startswith("Listening at:")]
    assert listening and all(message.startswith(f"Listening at: {base} (") for message in listening)
    assert not any("ontrol socket" in line["message"] for line in lines)


def test_metrics_record_when_their_directory_is_hidden_by_a_fresh_tmpfs(tmp_path: Path) -> None:
    """`docker run --read-only --tmpfs /tmp` hides the image's /tmp/prometheus: the server
    creates it, rather than logging a failed metric on every request."""
    metrics_dir = tmp_path / "fresh-tmpfs" / "prometheus"
    with serve(tmp_path, workers=1, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as (
        base,
        log,
        _,
    ):
        scraped = requests.get(f"{base}/metrics", timeout=10).text
    assert "cds_build_info{" in scraped
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [line["message"] for line in lines if line["level"] == "ERROR"] == []
