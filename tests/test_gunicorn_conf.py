"""The gunicorn settings an operator controls through the environment reach gunicorn."""

from __future__ import annotations

import json
import socket
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


def _exchange(base: str, raw: bytes) -> bytes:
    """Send ``raw`` on a fresh connection; everything the server answers until it closes."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pytest.fail(f"the server kept the connection open after: {answer[:300]!r}")
    return answer


def test_a_body_over_the_limit_is_refused_on_a_connection_that_says_it_closes(
    tmp_path: Path,
) -> None:
    """The 413 comes before the body is read, so the connection cannot go on: it said
    ``Connection: keep-alive`` and closed all the same."""
    with serve(tmp_path, workers=1, env={"CDS_MAX_BODY_BYTES": "2048"}) as (base, _, _):
        answer = _exchange(
            base,
            b"POST /cds-services/baclofen-order-sign HTTP/1.1\r\nHost: cds\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b" " * 4096,
        )
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower().splitlines()
    assert head[0].startswith("http/1.1 413")
    assert "connection: close" in head


def test_gunicorns_lines_bound_what_the_caller_sent_and_drop_its_query(tmp_path: Path) -> None:
    """A malformed request line is quoted in gunicorn's own warning: 3,000 characters of
    path and a query naming a patient became one log line verbatim."""
    with serve(tmp_path, workers=1) as (base, log, _):
        answer = _exchange(
            base,
            # A control character makes the whole request line invalid, and quoted.
            b"GET /cds-services/" + b"A" * 3000 + b"?identifier=MRN-SECRET-77\x01 HTTP/1.1\r\n"
            b"Host: cds\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 400")
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    quoted = [line for line in lines if "Invalid request" in line["message"]]
    assert quoted, "gunicorn logs the malformed request"
    assert "MRN-SECRET-77" not in text
    assert all(len(line["message"]) < 400 for line in lines if line["logger"] == "gunicorn.error")


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
