"""The gunicorn settings an operator controls through the environment reach gunicorn."""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from cds_hooks import gunicorn_conf


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
