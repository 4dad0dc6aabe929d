"""Card UUIDs that carry the card's topic, so feedback can be counted per topic.

CDS Hooks feedback names a card by its ``uuid`` alone, and the service keeps nothing
about the cards it sent (no per-call write, no patient data). Without more, override
data could only be counted per service, which tells a pharmacist nothing about which
alert is being dismissed. So a card's UUID is an RFC 9562 version 8 UUID (the version
for vendor layouts): the random bits of a version 4 UUID, the version nibble 8, then
``LAYOUT`` in byte 14 and the topic's catalogue ``code`` in byte 15. That leaves 106
random bits, unique enough for any number of cards. Suggestion UUIDs stay version 4.

A topic's code is fixed in ``catalogue.toml`` and never reused, so feedback on cards
sent before an upgrade is still attributed correctly.
"""

from __future__ import annotations

import uuid

LAYOUT = 0xB1
"""Byte 14 of our card UUIDs: tells them from any other version 8 layout."""


def topic_tail(code: int) -> str:
    """The last four hex digits of every card UUID of the topic ``code`` (made once per
    topic: formatting them per card cost more than the rest of its UUID)."""
    if not 0 < code <= 0xFF:
        raise ValueError(f"a topic code is 1-255, not {code}")
    return f"{LAYOUT:02x}{code:02x}"


def with_topic(random_uuid: str, tail: str) -> str:
    """A version 4 UUID in canonical text, made a card UUID ending in ``tail``."""
    return f"{random_uuid[:14]}8{random_uuid[15:32]}{tail}"


def topic_code(card_uuid: str) -> int | None:
    """The topic code a card UUID carries; None for a UUID of any other layout."""
    try:
        value = uuid.UUID(card_uuid)
    except (ValueError, TypeError, AttributeError):
        return None
    if value.version != 8 or (value.int >> 8) & 0xFF != LAYOUT:
        return None
    return value.int & 0xFF
