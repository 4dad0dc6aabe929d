"""The production topology, served for real: nginx (``baclofen-cds proxy``) in front of
gunicorn (``baclofen-cds serve`` on loopback).

gunicorn's gthread workers give a thread to each connection while it reads the request,
so a client that trickles its request holds one: before, 4 such clients made 2 of 3 good
requests time out, 16 all of them, before any token was checked (issue 16). nginx reads
each request whole and gunicorn only ever sees complete ones. Here 64 real sockets on
loopback trickle requests at the proxy while good hook calls go through it.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cds_checks import assert_operation_outcome
from tests.conftest import load_json
from tests.served import proxy_in_front, serve

SLOW_CLIENTS = 64
GOOD_REQUESTS = 12
# A good hook call answers in well under a second even on a loaded machine; one waiting
# for a thread a slow client holds waits until that client gives up (never, here).
GOOD_TIMEOUT = 8.0
TRICKLE_INTERVAL = 0.25
HOOK_PATH = "/cds-services/baclofen-order-sign"
# As the container runs gunicorn: 2 workers × 4 threads.
SERVER_ENV = {"GUNICORN_THREADS": "4", "GUNICORN_REUSE_PORT": "1", "CDS_HOST": "127.0.0.1"}


def hook_body() -> dict[str, Any]:
    body: dict[str, Any] = load_json("requests/sandbox-order-sign-baclofen10-3tab-daily.json")[
        "body"
    ]
    return body


class Tricklers:
    """Real sockets that each send a request one byte per interval and never finish it:
    half stall in the headers, half in a body their Content-Length announces."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        self.pending: list[bytes] = []
        body = b'{"hook": "order-sign", "context": {}}' * 100
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            headers = (
                f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            if index % 2:
                sock.sendall(headers)
                self.pending.append(body)
            else:
                self.pending.append(headers + body)
            self.sockets.append(sock)
        self.open = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()
        time.sleep(1.0)  # every slow client has begun its request

    def _trickle(self) -> None:
        sent = 0
        while not self._stop.wait(TRICKLE_INTERVAL):
            still_open = 0
            for sock, data in zip(self.sockets, self.pending, strict=True):
                try:
                    sock.send(data[sent : sent + 1])
                    still_open += 1
                except OSError:  # the server gave up on this one
                    pass
            self.open = still_open
            sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def production_topology(tmp_path: Path) -> Iterator[str]:
    """gunicorn on loopback behind ``baclofen-cds proxy``; yields the proxy's base URL."""
    with (
        serve(tmp_path, workers=2, env=SERVER_ENV) as (gunicorn, _, _),
        proxy_in_front(tmp_path, gunicorn) as proxy,
    ):
        yield proxy


def good_request(base: str) -> requests.Response:
    return requests.post(
        f"{base}{HOOK_PATH}",
        json=hook_body(),
        headers={"Connection": "close"},  # a new connection each time
        timeout=GOOD_TIMEOUT,
    )


def test_64_slow_clients_do_not_delay_good_requests(production_topology: str) -> None:
    base = production_topology
    tricklers = Tricklers(int(base.rsplit(":", 1)[1]), SLOW_CLIENTS)
    latencies = []
    try:
        for _ in range(GOOD_REQUESTS):
            started = time.perf_counter()
            response = good_request(base)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text[:300]
        # The attack lasted the whole time: the body tricklers are never cut (each byte
        # comes within nginx's 10 s between reads); the header ones are at 10 s.
        assert tricklers.open >= SLOW_CLIENTS // 2
    finally:
        tricklers.close()
    print(
        f"\n{SLOW_CLIENTS} slow clients: {GOOD_REQUESTS} good requests answered, "
        f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )


def test_the_same_slow_clients_hold_gunicorn_without_the_proxy(tmp_path: Path) -> None:
    """Guards the test above: straight at gunicorn (the topology before the proxy), the
    same slow clients hold every thread and a good request is not answered."""
    with serve(tmp_path, workers=2, env=SERVER_ENV) as (base, _, _):
        tricklers = Tricklers(int(base.rsplit(":", 1)[1]), SLOW_CLIENTS)
        try:
            with pytest.raises(requests.Timeout):
                good_request(base)
        finally:
            tricklers.close()


def test_the_proxy_answers_as_the_service_does(production_topology: str) -> None:
    """Through the proxy: the same cards; a body over CDS_MAX_BODY_BYTES refused before
    it is read, with an OperationOutcome like the service's own refusals."""
    answer = good_request(production_topology)
    assert answer.status_code == 200 and "cards" in answer.json()

    too_large = requests.post(
        f"{production_topology}{HOOK_PATH}",
        data=b" " * (2 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert too_large.status_code == 413
    assert too_large.headers["Content-Type"] == "application/fhir+json"
    assert_operation_outcome(too_large.json(), mentions="larger than the service accepts")
    assert too_large.json()["issue"][0]["code"] == "too-costly"


def test_the_proxy_answers_503_while_gunicorn_is_not_listening(tmp_path: Path) -> None:
    """Between gunicorn stopping and the pod leaving the Service, callers are told to
    retry, in the service's form, rather than given an nginx page."""
    with (
        serve(tmp_path, workers=1, env=SERVER_ENV) as (gunicorn, _, process),
        proxy_in_front(tmp_path, gunicorn) as proxy,
    ):
        process.terminate()
        process.wait(timeout=30)
        response = requests.post(f"{proxy}{HOOK_PATH}", json=hook_body(), timeout=10)
    assert response.status_code == 503
    assert_operation_outcome(response.json(), mentions="retry")
    assert response.json()["issue"][0]["code"] == "transient"


def test_the_proxy_refuses_to_forward_to_its_own_port() -> None:
    environ = os.environ | {"CDS_ENV": "development", "CDS_PROXY_PORT": "9000", "CDS_PORT": "9000"}
    result = subprocess.run(
        [sys.executable, "-m", "cds_hooks.cli", "proxy"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "CDS_PROXY_PORT and CDS_PORT" in result.stderr
