"""Accepted and overridden counts turned into override rates, per week and per topic or
rule, for the console's charts and tables. Pure: counts in, rates out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from cds_hooks.knowledge import Knowledge
from cds_hooks.reports import topic_display
from cds_hooks.store.console import DailyCount

GROUPINGS = ("topic", "rule")
UNKNOWN_TOPIC = "unknown (card uuid carries no topic)"


@dataclass(slots=True)
class Rate:
    accepted: int = 0
    overridden: int = 0

    @property
    def total(self) -> int:
        return self.accepted + self.overridden

    @property
    def override_rate(self) -> float | None:
        """Overridden share of the answered cards; None when none was answered."""
        return self.overridden / self.total if self.total else None

    def add(self, outcome: str, count: int) -> None:
        if outcome == "overridden":
            self.overridden += count
        else:
            self.accepted += count


def rules_of_card(row: DailyCount, knowledge: Knowledge) -> tuple[str, ...]:
    """The rules a card was made by: those recorded when it was issued. A card issued
    before that record was kept counts for every rule of its topic (its uuid carries only
    the topic), so its rates per rule are an estimate, and only those."""
    if row.rules is not None:
        return row.rules
    if row.card_topic is None:
        return ()
    return tuple(spec.id for spec in knowledge.rules.values() if spec.topic.value == row.card_topic)


def week_of(day: date) -> date:
    """The Monday starting the ISO week of ``day``."""
    return day - timedelta(days=day.weekday())


def _series(row: DailyCount, grouping: str, knowledge: Knowledge) -> Iterable[str]:
    if grouping == "rule":
        return rules_of_card(row, knowledge)
    return (topic_display(row.card_topic) or UNKNOWN_TOPIC,)


def weekly_rates(
    rows: Iterable[DailyCount], grouping: str, knowledge: Knowledge
) -> dict[str, dict[date, Rate]]:
    """Series (topic display or rule id) -> week (its Monday) -> counts."""
    series: dict[str, dict[date, Rate]] = defaultdict(lambda: defaultdict(Rate))
    for row in rows:
        for name in _series(row, grouping, knowledge):
            series[name][week_of(row.day)].add(row.outcome, row.count)
    return {name: dict(weeks) for name, weeks in sorted(series.items())}


def totals(weekly: Mapping[str, Mapping[date, Rate]]) -> dict[str, Rate]:
    """Each series' counts over all its weeks."""
    result: dict[str, Rate] = {}
    for name, weeks in weekly.items():
        total = result.setdefault(name, Rate())
        for rate in weeks.values():
            total.accepted += rate.accepted
            total.overridden += rate.overridden
    return result
