"""Feedback the console shows, made as an EHR makes it: real hook calls with the captured
sandbox requests, then feedback on the cards they answered, spread over several weeks."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from cards.render import NON_ADHERENCE_SYSTEM
from tests.conftest import load_json

SIGN = "sandbox-order-sign-baclofen10-3tab-daily.json"
SELECT = "sandbox-order-select-baclofen10-2tab-tid-spasticity.json"
SIGN_SYNTHEA = "sandbox-order-sign-synthea-evelyn-egfr37-oxycodone.json"
COMMENT = "Tolerated for years, discussed with the ward pharmacist"
PASSWORD = "correct horse battery staple"

HTTPS = "https://localhost"


def csrf_token(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1).decode()


def post_form(client: FlaskClient, path: str, data: dict[str, Any], **kwargs: Any) -> Any:
    """A form posted as a browser does over https: with the page's CSRF token (``data``
    holds it) and a same-origin Referer, which Flask-WTF requires over https."""
    return client.post(path, data=data, base_url=HTTPS, headers={"Referer": HTTPS + path}, **kwargs)


def sign_in(client: FlaskClient, username: str = "pharmacist", password: str = PASSWORD) -> Any:
    token = csrf_token(client.get("/console/login", base_url=HTTPS).data)
    return post_form(
        client,
        "/console/login",
        {"csrf_token": token, "username": username, "password": password},
    )


Post = Callable[[str, dict[str, Any]], Any]
"""POSTs JSON to a path of the service and returns the parsed JSON answer."""


def overridden(card: str, reason: dict[str, Any]) -> dict[str, Any]:
    """A feedback body overriding ``card`` with ``reason`` (an overrideReason object)."""
    return {
        "feedback": [
            {
                "card": card,
                "outcome": "overridden",
                "outcomeTimestamp": "2026-12-01T10:00:00Z",
                "overrideReason": reason,
            }
        ]
    }


def captured_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = load_json(f"requests/{name}")["body"]
    return body


def make_feedback(post: Post, weeks: int = 4, now: datetime | None = None) -> dict[str, int]:
    """Each week: the three captured requests answered, then every third card accepted
    (when it offers a suggestion) and the others overridden with one of the reasons it
    offers, in turns, and a numbered comment.
    Returns how many outcomes of each kind were sent."""
    now = now or datetime.now(UTC)
    sent = {"accepted": 0, "overridden": 0}
    turn = 0
    for week in range(weeks):
        moment = now - timedelta(weeks=week, hours=1)
        for name, service in (
            (SIGN, "baclofen-order-sign"),
            (SELECT, "baclofen-order-select"),
            (SIGN_SYNTHEA, "baclofen-order-sign"),
        ):
            cards = post(f"/cds-services/{service}", captured_body(name))["cards"]
            items = []
            for card in cards:
                turn += 1
                stamp = (moment + timedelta(seconds=turn)).isoformat().replace("+00:00", "Z")
                if turn % 3 == 0 and card.get("suggestions"):
                    suggestion = card["suggestions"][0]["uuid"]
                    items.append(
                        {
                            "card": card["uuid"],
                            "outcome": "accepted",
                            "acceptedSuggestions": [{"id": suggestion}],
                            "outcomeTimestamp": stamp,
                        }
                    )
                    sent["accepted"] += 1
                    continue
                # The HL7 non-adherence reasons only: a snooze reason would hold the card
                # back in the weeks after, and these counts are for every week alike.
                offered = [
                    r for r in card["overrideReasons"] if r.get("system") == NON_ADHERENCE_SYSTEM
                ]
                reason = {
                    "reason": _coding(offered[turn % len(offered)]),
                    "userComment": f"{COMMENT} #{turn}",
                }
                items.append(
                    {
                        "card": card["uuid"],
                        "outcome": "overridden",
                        "overrideReason": reason,
                        "outcomeTimestamp": stamp,
                    }
                )
                sent["overridden"] += 1
            if items:
                post(f"/cds-services/{service}/feedback", {"feedback": items})
    return sent


def _coding(offered: dict[str, Any]) -> dict[str, Any]:
    return {k: offered[k] for k in ("system", "code", "display") if k in offered}
