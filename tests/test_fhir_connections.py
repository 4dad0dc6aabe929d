"""Connections to the EHR's FHIR server: none outlives the hook call, and they are reused.

A trickling server (a byte at a time, never quite done) kept fetch threads reading, and
the socket carrying the lent token open, long after the hook had answered (issue 16,
item 5). Every call also paid a new handshake. These tests run the real app against a
real loopback server and look at what is left once the answer is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_hooks.network import Endpoint, SessionPool
from tests.fhir_server import FhirServer, ok, searchset, trickle
from tests.test_fhir_fallback import EGFR, PATIENT_ID, hook_body, serve_ehr

SERVICE = "/cds-services/baclofen-order-sign"


@pytest.fixture
def ehr() -> Iterator[FhirServer]:
    with FhirServer(keep_alive=True) as fhir_server:
        serve_ehr(fhir_server)
        yield fhir_server


@pytest.fixture
def app_config(app_config: dict[str, Any], ehr: FhirServer) -> dict[str, Any]:
    return {**app_config, "FHIR_ALLOWLIST": [ehr.base_url], "FHIR_TOTAL_TIMEOUT": 3.0}


def fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fhir-fetch")]


def wait_for_no_fetch_threads(timeout: float) -> list[threading.Thread]:
    stop = time.monotonic() + timeout
    while fetch_threads() and time.monotonic() < stop:
        time.sleep(0.02)
    return fetch_threads()


def test_no_fetch_reads_on_after_the_hook_answers(client: FlaskClient, ehr: FhirServer) -> None:
    """The labs trickle for about 20 s; the hook answers at its 3 s deadline, and by then
    the server sees every connection closed and no fetch thread is left."""
    ehr.route("Observation", trickle(searchset([EGFR]), interval=0.05))
    response = client.post(SERVICE, json=hook_body(ehr.base_url))
    assert response.status_code == 200
    summaries = " ".join(card["summary"] for card in response.get_json()["cards"])
    assert "Kidney function results could not be retrieved" in summaries
    trickled = {r.connection for r in ehr.requests_to("Observation")}
    assert len(trickled) == 2
    assert wait_for_no_fetch_threads(timeout=1.0) == []
    assert ehr.wait_until_closed(trickled, timeout=1.0) == set()


def test_connections_to_a_server_are_reused_across_hook_calls(
    client: FlaskClient, ehr: FhirServer
) -> None:
    first = client.post(SERVICE, json=hook_body(ehr.base_url))
    assert first.status_code == 200
    used_first = {r.connection for r in ehr.requests}
    count_first = len(ehr.requests)
    second = client.post(SERVICE, json=hook_body(ehr.base_url))
    assert second.status_code == 200
    used_second = {r.connection for r in ehr.requests[count_first:]}
    assert len(ehr.requests) == 2 * count_first == 10
    # Fetches run in parallel, so a call may open one more connection than the last left
    # idle; but it starts on those, and far fewer connections than requests are made.
    assert used_second & used_first
    assert len(used_first | used_second) < len(ehr.requests)


def test_a_pooled_connection_carries_no_cookie_from_one_call_to_the_next(
    client: FlaskClient, ehr: FhirServer
) -> None:
    """The session is shared by every call to the server: what one call's answer sets
    must not ride along with another call (and another caller's token)."""
    patient = ok({"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1941-03-02"})
    with_cookie = {**patient.headers, "Set-Cookie": "session=abc; Path=/"}
    ehr.route(f"Patient/{PATIENT_ID}", type(patient)(body=patient.body, headers=with_cookie))
    for _ in range(2):
        assert client.post(SERVICE, json=hook_body(ehr.base_url)).status_code == 200
    assert all("Cookie" not in r.headers for r in ehr.requests)


def test_the_session_pool_keeps_a_bounded_number_of_servers() -> None:
    pool = SessionPool(max_origins=2, connections=2)
    a, b, c = (Endpoint.parse(f"https://ehr-{n}.example.org/fhir") for n in "abc")
    assert a is not None and b is not None and c is not None
    first = pool.session(a)
    assert pool.session(a) is first
    pool.session(b)
    pool.session(c)
    assert pool.session(a) is not first
    pool.close()
