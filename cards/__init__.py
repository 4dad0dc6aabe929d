"""The card catalogue: turns engine findings into CDS Hooks 2.0 cards (see ``render``)."""

from __future__ import annotations

from cards.render import render_cards, topic_of_card

__all__ = ["render_cards", "topic_of_card"]
