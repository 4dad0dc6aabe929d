"""Property-based robustness: random and mutated requests never produce a 5xx.

Starts from the real requests the CDS Hooks sandboxes sent (tests/data/requests) and
mutates them — deleting keys, swapping values for random JSON, wrapping objects in
lists — so the fuzzing reaches deep into FHIR parsing, not just the JSON reader.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_hooks.app import create_app
from cds_hooks.discovery import SERVICES
from tests.conftest import sqlite_url

REQUESTS = Path(__file__).parent / "data" / "requests"
HOOK_BODIES = [
    json.loads(path.read_text(encoding="utf-8"))["body"]
    for path in sorted(REQUESTS.glob("*.json"))
    if json.loads(path.read_text(encoding="utf-8")).get("body")
]
SERVICE_FOR_HOOK = {service.hook: service.id for service in SERVICES}

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


@st.composite
def mutated_requests(draw: st.DrawFn) -> dict[str, Any]:
    body = copy.deepcopy(draw(st.sampled_from(HOOK_BODIES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        candidates = [p for p in paths(body) if p]
        if not candidates:
            break
        target = draw(st.sampled_from(candidates))
        parent = body
        for step in target[:-1]:
            parent = parent[step]
        key = target[-1]
        mutation = draw(st.sampled_from(["delete", "replace", "wrap", "stringify"]))
        if mutation == "delete" and isinstance(parent, dict):
            del parent[key]
        elif mutation == "wrap":
            parent[key] = [parent[key]]
        elif mutation == "stringify":
            parent[key] = json.dumps(parent[key])
        else:
            parent[key] = draw(json_values)
    return body


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    database = sqlite_url(tmp_path_factory.mktemp("fuzz"))
    return create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": database})


def assert_not_server_error(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.is_json, "every answer, even an error, is JSON"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=mutated_requests())
def test_mutated_sandbox_requests_never_cause_5xx(fuzz_app: Flask, body: dict[str, Any]) -> None:
    hook = body.get("hook") if isinstance(body.get("hook"), str) else "order-sign"
    service = SERVICE_FOR_HOOK.get(hook, "baclofen-order-sign")
    response = fuzz_app.test_client().post(f"/cds-services/{service}", json=body)
    assert_not_server_error(response)
    if response.status_code == 200:
        assert isinstance(response.get_json()["cards"], list)


@FUZZ
@given(body=json_values, service=st.sampled_from([s.id for s in SERVICES]))
def test_random_json_never_causes_5xx(fuzz_app: Flask, body: Any, service: str) -> None:
    client = fuzz_app.test_client()
    assert_not_server_error(client.post(f"/cds-services/{service}", json=body))
    assert_not_server_error(client.post(f"/cds-services/{service}/feedback", json=body))


@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_cause_5xx(fuzz_app: Flask, raw: bytes) -> None:
    response = fuzz_app.test_client().post(
        "/cds-services/baclofen-order-select", data=raw, content_type="application/json"
    )
    assert_not_server_error(response)


@FUZZ
@given(
    feedback=st.lists(
        st.dictionaries(
            st.sampled_from(
                ["card", "outcome", "acceptedSuggestions", "overrideReason", "outcomeTimestamp"]
            ),
            json_values,
        ),
        max_size=3,
    )
)
def test_random_feedback_items_never_cause_5xx(fuzz_app: Flask, feedback: list[Any]) -> None:
    response = fuzz_app.test_client().post(
        "/cds-services/baclofen-order-sign/feedback", json={"feedback": feedback}
    )
    assert_not_server_error(response)
