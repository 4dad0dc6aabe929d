"""Clinical knowledge shipped as versioned data files (``data/``), each fact with its source.

Code reads knowledge only through this package, never from literals of its own.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class ObservationCodes:
    """LOINC codes by purpose, each tuple in preference order."""

    version: str
    egfr: tuple[str, ...]
    creatinine_clearance: tuple[str, ...]
    serum_creatinine: tuple[str, ...]
    body_weight: tuple[str, ...]

    @property
    def renal(self) -> tuple[str, ...]:
        return self.egfr + self.creatinine_clearance + self.serum_creatinine


@cache
def observation_codes() -> ObservationCodes:
    with resources.files(__package__).joinpath("data/observations.toml").open("rb") as fh:
        data = tomllib.load(fh)
    return ObservationCodes(
        version=data["version"],
        egfr=tuple(data["egfr"]["codes"]),
        creatinine_clearance=tuple(data["creatinine_clearance"]["codes"]),
        serum_creatinine=tuple(data["serum_creatinine"]["codes"]),
        body_weight=tuple(data["body_weight"]["codes"]),
    )
