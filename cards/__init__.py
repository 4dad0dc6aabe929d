"""The card catalogue: turns engine findings into CDS Hooks 2.0 cards (see ``render``)."""

from __future__ import annotations

from cards.render import displayed, folded, render_cards, same_advice, snooze_days, topic_of_card

__all__ = ["displayed", "folded", "render_cards", "same_advice", "snooze_days", "topic_of_card"]
