"""Property-based robustness: random and mutated requests never produce a 5xx.

The main fuzzer starts from the real requests the CDS Hooks sandboxes sent
(tests/data/requests) and mutates them the way a fuzzer does: values swapped for another
JSON type, numbers for huge, tiny, negative, non-finite and beyond-64-bit ones, values
buried under deep nesting (up to past the parser's own limit), keys dropped, lists
emptied or repeated, objects wrapped in lists or turned into strings. So the fuzzing
reaches deep into FHIR parsing and the dose arithmetic, not just the JSON reader.

It sends ``FUZZ_REQUESTS`` (10,000) mutated requests through the real app. CI
(``CI`` set) replays a fixed sequence, so a submission is never failed by a new example
that finds an old bug; a developer's run draws fresh examples each time, and Hypothesis
keeps any failing one in its example database for the next run.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
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
FUZZ_REQUESTS = 10_000

# JSON has no NaN or infinity; the edge numbers below send those tokens on purpose.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

# Numbers a fuzzer tries first: the edges of a double and of 64-bit integers, and zeros.
EDGE_NUMBERS: list[Any] = [
    0,
    -0.0,
    -1,
    1e-300,
    5e-324,
    1e308,
    -1e308,
    1.7976931348623157e308,
    2**53 + 1,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    float("nan"),
    float("inf"),
    float("-inf"),
    10**30,
]
"""NaN and the infinities are written as the tokens ``NaN``/``Infinity`` (not JSON, as a
careless client would write them); 10**30 and 2**64 - 1 go beyond what some parsers hold."""
EDGE_TEXTS = ["", " ", "0", "1e308", "NaN", "-1", "\u0000", "é" * 3, "x" * 5000, "\ud800"]
NESTING_LEVELS = [10, 100, 250, 253, 260, 1000, 1030]
"""Around the service's bound (254) and the parser's (1,024)."""

NESTED = "__fuzz_nested_{}_{}__"
"""A placeholder replaced, in the request text, by that many levels of ``[`` or ``{"a":``:
the text is built by hand because Python's encoder itself stops near 1,000 levels."""


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


# Strategies built once: building one per draw costs more than the request it makes.
NUMBERS = st.sampled_from(EDGE_NUMBERS) | st.floats() | st.integers()
TEXTS = st.sampled_from(EDGE_TEXTS) | st.text(max_size=40)
NESTINGS = st.builds(
    NESTED.format, st.sampled_from(["list", "object"]), st.sampled_from(NESTING_LEVELS)
)
MUTATIONS = ("delete", "retype", "number", "text", "nest", "wrap", "stringify", "empty", "repeat")


def _mutate(draw: st.DrawFn, mutation: str, value: Any) -> Any:
    """``value`` as ``mutation`` leaves it; ``_DELETE`` when the mutation drops it."""
    if mutation == "delete":
        return _DELETE
    if mutation == "retype":
        return draw(json_values)
    if mutation == "number":
        return draw(NUMBERS)
    if mutation == "text":
        return draw(TEXTS)
    if mutation == "nest":
        return draw(NESTINGS)
    if mutation == "wrap":
        return [value]
    if mutation == "stringify":
        return json.dumps(value)
    if mutation == "empty":
        return type(value)() if isinstance(value, dict | list | str) else None
    return [value, copy.deepcopy(value)] if not isinstance(value, list) else value * 2


_DELETE = object()


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


@dataclass(frozen=True)
class Captured:
    """One captured request body and the places a mutation may strike (listed once: a
    fuzzer aims a number mutation at the numbers and a text one at the strings)."""

    raw: bytes
    anywhere: tuple[tuple[Any, ...], ...]
    numbers: tuple[tuple[Any, ...], ...]
    texts: tuple[tuple[Any, ...], ...]

    @classmethod
    def of(cls, body: Any) -> Captured:
        every = [(p, _at(body, p)) for p in paths(body) if p]
        return cls(
            raw=orjson.dumps(body),
            anywhere=tuple(p for p, _ in every),
            numbers=tuple(p for p, v in every if type(v) in (int, float)),
            texts=tuple(p for p, v in every if type(v) is str),
        )

    def targets(self, mutation: str) -> tuple[tuple[Any, ...], ...]:
        aimed = {"number": self.numbers, "text": self.texts}.get(mutation)
        return aimed or self.anywhere


CAPTUREDS = st.sampled_from([Captured.of(body) for body in HOOK_BODIES])
MUTATION = st.sampled_from(MUTATIONS)
SERVICE = st.sampled_from(sorted(SERVICE_FOR_HOOK.values()))


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, str]:
    """(service id, request text) of one captured hook request after 1-4 mutations."""
    captured = draw(CAPTUREDS)
    body = orjson.loads(captured.raw)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        mutation = draw(MUTATION)
        targets = captured.targets(mutation)
        target = targets[draw(st.integers(0, len(targets) - 1))]
        try:
            parent = _at(body, target[:-1])
            mutated = _mutate(draw, mutation, parent[target[-1]])
            if mutated is _DELETE:
                del parent[target[-1]]
            else:
                parent[target[-1]] = mutated
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation reshaped this part of the body
    hook = body.get("hook") if isinstance(body, dict) else None
    service = SERVICE_FOR_HOOK.get(hook, "baclofen-order-sign") if isinstance(hook, str) else None
    if service is None or draw(st.integers(0, 19)) == 0:  # now and then the wrong service
        service = draw(SERVICE)
    return service, _text(body)


def _text(body: Any) -> str:
    text = json.dumps(body, allow_nan=True)
    for kind in ("list", "object"):
        for levels in NESTING_LEVELS:
            placeholder = json.dumps(NESTED.format(kind, levels))
            if placeholder in text:
                opener, closer = ("[", "]") if kind == "list" else ('{"a":', "}")
                text = text.replace(placeholder, opener * levels + "1" + closer * levels)
    return text


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    database = sqlite_url(tmp_path_factory.mktemp("fuzz"))
    return create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": database})


def assert_not_server_error(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.is_json, "every answer, even an error, is JSON"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_mutated_captured_requests_never_cause_5xx(fuzz_app: Flask) -> None:
    """FUZZ_REQUESTS mutated sandbox requests: none answers 5xx, every answer is JSON, and
    a 200 carries a list of cards."""
    client = fuzz_app.test_client()
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=FUZZ_REQUESTS,
        deadline=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=mutated_requests())
    def send(request: tuple[str, str]) -> None:
        service, text = request
        response = client.post(
            f"/cds-services/{service}", data=text, content_type="application/json"
        )
        statuses[response.status_code] += 1
        assert_not_server_error(response)
        if response.status_code == 200:
            assert isinstance(response.get_json()["cards"], list)

    send()
    assert sum(statuses.values()) >= FUZZ_REQUESTS, statuses
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[200] and statuses[400], (
        f"the mutations reach the engine and the reader: {statuses}"
    )


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
