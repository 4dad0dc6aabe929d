"""``baclofen-cds serve`` as a real process on a free loopback port, for tests that need
gunicorn itself (several workers, its own log lines, signals), and ``baclofen-cds proxy``
(nginx) in front of it, the production topology."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from cds_hooks.proxy import NGINX_FALLBACK


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # workers still booting
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not become healthy:\n{log.read_text()}")


@contextmanager
def serve(
    tmp_path: Path, workers: int, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """The server in development mode with auth off and a SQLite file in ``tmp_path``
    (upgraded first with ``baclofen-cds db upgrade``);
    yields its base URL, the file its stdout and stderr go to, and the process. Leaving
    sends SIGTERM and waits for the exit (a kill after 30 s)."""
    port = free_port()
    environ = {
        **os.environ,
        "CDS_ENV": "development",
        "CDS_AUTH_MODE": "off",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
        **(env or {}),
    }
    cli = [sys.executable, "-m", "cds_hooks.cli"]
    # The migration step, as `make run` and the Kubernetes init container run it.
    subprocess.run([*cli, "db", "upgrade"], env=environ, cwd=tmp_path, check=True, timeout=60)
    command = [*cli, "serve", "--port", str(port)]
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, log)
        yield base, log, process
    finally:
        stop(process, signal.SIGTERM, timeout=30)


def stop(process: subprocess.Popen[bytes], stop_signal: int, timeout: float) -> None:
    """Send ``stop_signal``, wait up to ``timeout`` seconds, then kill."""
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def nginx_or_skip() -> None:
    found = shutil.which("nginx") or NGINX_FALLBACK
    if not os.access(found, os.X_OK):
        pytest.skip("nginx not installed: run `make system-deps` as root or install nginx")


@contextmanager
def proxy_in_front(tmp_path: Path, upstream: str) -> Iterator[str]:
    """``baclofen-cds proxy`` on a free loopback port, forwarding to the gunicorn at
    ``upstream`` (a base URL from ``serve``), as the pod's proxy container runs it;
    yields the proxy's base URL."""
    nginx_or_skip()
    port = free_port()
    environ = {
        **os.environ,
        "CDS_ENV": "development",
        "CDS_PROXY_HOST": "127.0.0.1",
        "CDS_PROXY_PORT": str(port),
        "CDS_PORT": upstream.rsplit(":", 1)[1],
    }
    log = tmp_path / "proxy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_hooks.cli", "proxy"],
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, log)
        yield base
    finally:
        stop(process, signal.SIGQUIT, timeout=15)  # nginx's graceful stop
