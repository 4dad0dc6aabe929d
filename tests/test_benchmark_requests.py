"""The benchmark's requests (benchmarks/data) are real hook calls with real answers.

``load.py`` measures whatever the service answers, so a request that drifted into a 4xx,
or a lean variant that no longer gives the cards of the full one, would measure the
wrong thing without anyone noticing.
"""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data"
HOOK = "/cds-services/baclofen-order-sign"


def cards_of(client: FlaskClient, name: str) -> list[tuple[str, str]]:
    body = (DATA / name).read_bytes()
    response = client.post(HOOK, data=body, content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in response.get_json()["cards"]]


def test_the_full_prefetch_request_gets_its_cards(client: FlaskClient) -> None:
    cards = cards_of(client, "order-sign-full-prefetch.json")
    assert ("cns-depressant", "critical") in cards
    assert len(cards) >= 3


def test_the_lean_request_gets_the_same_cards_at_the_issues_size(client: FlaskClient) -> None:
    assert (DATA / "order-sign-lean-prefetch.json").stat().st_size < 18_000
    lean = cards_of(client, "order-sign-lean-prefetch.json")
    assert lean == cards_of(client, "order-sign-full-prefetch.json")


def test_the_patient_view_requests_are_silent_without_baclofen_and_speak_with_it(
    client: FlaskClient,
) -> None:
    """The not-on-baclofen request is the common case (no card); the same list with
    baclofen on it runs the whole pipeline (the opioid combination and the kidney check)."""
    path = "/cds-services/baclofen-patient-view"

    def topics(name: str) -> set[tuple[str, str]]:
        body = (DATA / name).read_bytes()
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return {
            (c["source"]["topic"]["code"], c["indicator"]) for c in response.get_json()["cards"]
        }

    assert topics("patient-view-not-on-baclofen.json") == set()
    assert topics("patient-view-on-baclofen.json") == {
        ("cns-depressant", "info"),
        ("renal-function-unknown", "info"),
    }
