"""Validation of the CDS Hooks 2.0 feedback body (§ Feedback, invariants cds-fb-1..3).

Pure: JSON in, ``FeedbackItem`` list out, or ``BadRequest`` naming the first offending
field as a FHIRPath-like expression (``feedback[0].outcome``). The whole batch is
checked before anything is stored, so a request is kept entirely or not at all.
Messages never quote the submitted values: a user comment may hold patient details.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cards import topic_of_card
from cds_hooks.errors import BadRequest

OUTCOMES = ("accepted", "overridden")

# Bounds on what one request may store; far above anything an EHR sends (the sandbox
# sends one item per click) and small enough that a column never needs to grow.
MAX_ITEMS = 100
MAX_SUGGESTIONS = 50
MAX_CODING_FIELD = 512
MAX_USER_COMMENT = 2000

# RFC 3339 §5.6 date-time; ``fromisoformat`` alone also takes week dates, no offset, etc.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class OverrideReason:
    system: str | None = None
    code: str | None = None
    display: str | None = None
    user_comment: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One validated feedback entry; ids are canonical lower-case UUID strings."""

    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: tuple[str, ...] = ()
    override_reason: OverrideReason | None = None
    card_topic: str | None = None
    """The card's topic as its uuid carries it; None for a uuid that carries none."""


def parse_feedback_request(body: Any) -> list[FeedbackItem]:
    """Validate a whole feedback request body; raise ``BadRequest`` at the first fault."""
    if not isinstance(body, Mapping):
        raise BadRequest("The feedback request must be a JSON object with a 'feedback' array.")
    entries = body.get("feedback")
    if not isinstance(entries, list):
        raise BadRequest("'feedback' must be an array of feedback entries.", expression="feedback")
    if not entries:
        raise BadRequest("'feedback' must hold at least one entry.", expression="feedback")
    if len(entries) > MAX_ITEMS:
        raise BadRequest(
            f"'feedback' holds more than {MAX_ITEMS} entries; send them in smaller batches.",
            expression="feedback",
        )
    return [_item(entry, f"feedback[{index}]") for index, entry in enumerate(entries)]


def parse_uuid(value: Any) -> str | None:
    """The canonical form of a UUID string, or None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def parse_rfc3339(value: Any) -> datetime | None:
    """An RFC 3339 date-time with its offset, in UTC; None for anything else."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value.upper())
    except ValueError:
        return None
    return moment.astimezone(UTC)


def _item(entry: Any, path: str) -> FeedbackItem:
    if not isinstance(entry, Mapping):
        raise BadRequest("Each feedback entry must be a JSON object.", expression=path)

    card = parse_uuid(entry.get("card"))
    if card is None:
        raise BadRequest(
            "'card' is required and must be the card's uuid.", expression=f"{path}.card"
        )

    outcome = entry.get("outcome")
    if outcome not in OUTCOMES:
        raise BadRequest(
            "'outcome' is required and must be 'accepted' or 'overridden' (cds-fb-1).",
            expression=f"{path}.outcome",
        )

    timestamp = parse_rfc3339(entry.get("outcomeTimestamp"))
    if timestamp is None:
        raise BadRequest(
            "'outcomeTimestamp' is required and must be an RFC 3339 date-time with an offset, "
            "e.g. 2021-12-11T10:05:31Z.",
            expression=f"{path}.outcomeTimestamp",
        )

    accepted = _accepted_suggestions(entry, outcome, f"{path}.acceptedSuggestions")
    reason = _override_reason(entry, outcome, f"{path}.overrideReason")
    return FeedbackItem(
        card=card,
        outcome=outcome,
        outcome_timestamp=timestamp,
        accepted_suggestions=accepted,
        override_reason=reason,
        card_topic=topic_of_card(card),
    )


def _accepted_suggestions(entry: Mapping[str, Any], outcome: str, path: str) -> tuple[str, ...]:
    raw = entry.get("acceptedSuggestions")
    if outcome == "overridden":
        if raw is not None:
            raise BadRequest(
                "'acceptedSuggestions' is only allowed when the outcome is 'accepted'.",
                expression=path,
            )
        return ()
    if not isinstance(raw, list) or not raw:
        raise BadRequest(
            "'acceptedSuggestions' must be a non-empty array when the outcome is 'accepted' "
            "(cds-fb-2).",
            expression=path,
        )
    if len(raw) > MAX_SUGGESTIONS:
        raise BadRequest(
            f"'acceptedSuggestions' holds more than {MAX_SUGGESTIONS} entries.", expression=path
        )
    ids: list[str] = []
    for index, suggestion in enumerate(raw):
        suggestion_id = (
            parse_uuid(suggestion.get("id")) if isinstance(suggestion, Mapping) else None
        )
        if suggestion_id is None:
            raise BadRequest(
                "Each accepted suggestion must be an object whose 'id' is the suggestion's uuid.",
                expression=f"{path}[{index}].id",
            )
        if suggestion_id not in ids:
            ids.append(suggestion_id)
    return tuple(sorted(ids))


def _override_reason(entry: Mapping[str, Any], outcome: str, path: str) -> OverrideReason | None:
    raw = entry.get("overrideReason")
    if raw is None:
        return None
    if outcome != "overridden":
        raise BadRequest(
            "'overrideReason' is only allowed when the outcome is 'overridden'.", expression=path
        )
    if not isinstance(raw, Mapping):
        raise BadRequest("'overrideReason' must be an object.", expression=path)

    comment = raw.get("userComment")
    if comment is not None and not isinstance(comment, str):
        raise BadRequest("'userComment' must be a string.", expression=f"{path}.userComment")
    if comment is not None and len(comment) > MAX_USER_COMMENT:
        raise BadRequest(
            f"'userComment' is longer than {MAX_USER_COMMENT} characters.",
            expression=f"{path}.userComment",
        )
    comment = comment.strip() if comment else None

    coding = raw.get("reason")
    if coding is None:
        if not comment:
            raise BadRequest(
                "'overrideReason' must hold a 'reason' Coding, a 'userComment', or both "
                "(cds-fb-3).",
                expression=path,
            )
        return OverrideReason(user_comment=comment)
    if not isinstance(coding, Mapping):
        raise BadRequest("'reason' must be a Coding object.", expression=f"{path}.reason")
    system = _coding_text(coding, "system", f"{path}.reason", required=True)
    code = _coding_text(coding, "code", f"{path}.reason", required=True)
    display = _coding_text(coding, "display", f"{path}.reason", required=False)
    return OverrideReason(system=system, code=code, display=display, user_comment=comment or None)


def _coding_text(coding: Mapping[str, Any], key: str, path: str, *, required: bool) -> str | None:
    value = coding.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CODING_FIELD:
        raise BadRequest(
            f"'reason.{key}' must be a non-empty string of at most {MAX_CODING_FIELD} characters"
            + (" (the reason's system and code are both required)." if required else "."),
            expression=f"{path}.{key}",
        )
    return value.strip()
