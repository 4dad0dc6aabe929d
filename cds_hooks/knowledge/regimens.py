"""What a prescriber can give (``data/regimens.toml``): the regimen planner's product facts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from cds_hooks.knowledge import read_data


@dataclass(frozen=True, slots=True)
class RegimenRules:
    scored_strengths_mg: frozenset[float]
    """Tablet strengths with a score line: half a tablet is a dose."""
    liquid_step_ml: float
    """Oral liquid doses are whole multiples of this volume (what a syringe measures)."""
    unknown_strength_step_mg: float
    """A dose in mg of a product of unknown strength is a whole multiple of this."""
    frequencies: tuple[int, ...]
    """Doses a day the planner may propose, preferred first among equal daily doses."""


@cache
def regimen_rules() -> RegimenRules:
    data = read_data("regimens.toml")
    return RegimenRules(
        scored_strengths_mg=frozenset(float(s) for s in data["scored_tablets"]["strengths_mg"]),
        liquid_step_ml=float(data["liquid"]["step_ml"]),
        unknown_strength_step_mg=float(data["unknown_strength"]["step_mg"]),
        frequencies=tuple(int(f) for f in data["frequencies"]["per_day"]),
    )
