"""Reading FHIR datatypes from raw JSON into model values: the one reading path.

Every resource is read from the JSON the client sent, whether or not it passed
``fhir.resources`` validation (which decides whether the resource is trusted, see
``versions``), so there is one reader to follow from a dosage to its daily dose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any

import orjson

from cds_hooks.memo import MEMO_SIZE, memo_key
from cds_hooks.model import Coding, Concept, Quantity, Ratio

JSON_OBJECT = dict | Mapping
"""``isinstance`` target for a JSON object: dict first, as parsed JSON is a dict and a bare
``Mapping`` check goes through ABC machinery."""


def get(node: Any, key: str) -> Any:
    """An element of a JSON object; None when absent or when ``node`` is not an object.

    Parsed JSON is dicts, and an absent element None: both are answered before the general
    ``Mapping`` check, whose ABC machinery costs more than the lookup it guards.
    """
    if type(node) is dict:
        return node.get(key)
    if node is None:
        return None
    return node.get(key) if isinstance(node, Mapping) else None


def is_node(value: Any) -> bool:
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


def reference_parts(reference: str) -> tuple[str, str] | None:
    """``Type/id`` of a relative or absolute reference (history suffix dropped)."""
    path = reference.split("?", 1)[0].split("#", 1)[0]
    parts = [p for p in path.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        return None
    return parts[-2], parts[-1]


class Reader:
    """Reads elements of raw FHIR JSON into model values, naming what could not be read.

    Every element may have the wrong shape. What can be read is kept; what cannot is
    recorded in ``problems`` as an element path (``dosageInstruction[0].timing is not a
    Timing``), never a value, so problems can be shown and logged without leaking patient
    data. Paths are only formatted when a problem is met: nearly every element is well
    formed, and building paths for all of them would cost more than reading them.
    """

    __slots__ = ("problems",)

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def items(self, node: Any, key: str, path: str) -> Iterator[tuple[str, Any]]:
        """Elements of a repeating field with their paths; a lone object counts as one."""
        value = get(node, key)
        if value is None:
            return
        if is_node(value):
            yield f"{path}{key}[0]", value
            return
        if not isinstance(value, list | tuple):
            self.problem(f"{path}{key} is not a list")
            return
        for index, item in enumerate(value):
            if is_node(item):
                yield f"{path}{key}[{index}]", item
            elif item is not None:
                self.problem(f"{path}{key}[{index}] is not an object")

    def text(self, node: Any, key: str, path: str) -> str | None:
        value = node.get(key) if type(node) is dict else get(node, key)
        if type(value) is str:
            return value or None
        return self._not_text(value, path, key)

    def _not_text(self, value: Any, path: str, key: str) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        self.problem(f"{path}{key} is not a string")
        return None

    def code(self, node: Any, key: str, path: str) -> str | None:
        """A code or identifier; whole numbers are accepted (RxCUIs often arrive as such)."""
        value = get(node, key)
        if type(value) is str:
            return value or None
        if isinstance(value, int) and not isinstance(value, bool):
            self.problem(f"{path}{key} is a number, not a string")
            return str(value)
        return self._not_text(value, path, key)

    def number(self, node: Any, key: str, path: str) -> float | None:
        value = get(node, key)
        if value is None:
            return None
        result = finite_number(value)
        if result is not None:
            return result
        self.problem(f"{path}{key} is not a number")
        return None

    def integer(self, node: Any, key: str, path: str) -> int | None:
        number = self.number(node, key, path)
        if number is None:
            return None
        if number.is_integer():
            return int(number)
        self.problem(f"{path}{key} is not a whole number")
        return None

    def boolean(self, node: Any, key: str, path: str) -> bool | None:
        value = get(node, key)
        if value is None or isinstance(value, bool):
            return value
        self.problem(f"{path}{key} is not a boolean")
        return None

    def date_text(self, node: Any, key: str, path: str) -> str | None:
        """A FHIR date/dateTime as its text."""
        return self.text(node, key, path)

    def concept(self, node: Any, key: str, path: str) -> Concept | None:
        """A CodeableConcept element. Drug, lab and condition concepts recur across patients,
        so one given as a JSON object is read once per distinct JSON (and path, which its
        problems name) and the reading reused."""
        value = node.get(key) if type(node) is dict else get(node, key)
        if value is None:
            return None
        memo = memo_key(value) if type(value) is dict else None
        if memo is None:
            return self.concept_of(value, path, key)
        concept, problems = _read_concept(memo, path, key)
        for problem in problems:
            self.problem(problem)
        return concept

    def concept_of(self, value: Any, path: str, key: str = "") -> Concept | None:
        """A CodeableConcept already taken from its node (``path`` + ``key`` name it)."""
        if value is None:
            return None
        if type(value) is not dict and not is_node(value):
            if isinstance(value, str):
                self.problem(f"{path}{key} is text, not a CodeableConcept")
                return Concept(text=value) if value else None
            if isinstance(value, list | tuple):
                self.problem(f"{path}{key} is a list, not a CodeableConcept")
                value = next((item for item in value if is_node(item)), None)
            if value is None or not is_node(value):
                self.problem(f"{path}{key} is not a CodeableConcept")
                return None
        codings: list[Coding] = []
        found = value.get("coding")
        if type(found) is list:  # the usual shape, read without building element paths
            for index, item in enumerate(found):
                if type(item) is dict or is_node(item):
                    coding = self.coding(item, f"{path}{key}.", index)
                elif item is None:
                    continue
                else:
                    self.problem(f"{path}{key}.coding[{index}] is not an object")
                    continue
                if coding is not None:
                    codings.append(coding)
        elif found is not None:
            for coding_path, item in self.items(value, "coding", f"{path}{key}."):
                coding = self.coding(item, coding_path)
                if coding is not None:
                    codings.append(coding)
        text = value.get("text")
        if type(text) is not str:
            text = self._not_text(text, f"{path}{key}.", "text")
        if not codings and not text:
            return None
        return Concept(codings=tuple(codings), text=text or None)

    def coding(self, node: Mapping[str, Any], path: str, index: int = -1) -> Coding | None:
        """One Coding: ``path`` names it, or with ``index`` names the concept whose
        ``coding[index]`` it is (formatted only when an element is not a string)."""
        system, code, display = node.get("system"), node.get("code"), node.get("display")
        if not (
            (type(system) is str or system is None)
            and (type(code) is str or code is None)
            and (type(display) is str or display is None)
        ):
            where = f"{path}coding[{index}]." if index >= 0 else f"{path}."
            system = self.text(node, "system", where)
            code = self.code(node, "code", where)
            display = self.text(node, "display", where)
        if not (system or code or display):
            return None
        return Coding(system=system or None, code=code or None, display=display or None)

    def quantity(self, node: Any, key: str, path: str) -> Quantity | None:
        value = get(node, key)
        if value is None:
            return None
        if not is_node(value):
            self.problem(f"{path}{key} is not a Quantity")
            return None
        amount = finite_number(value.get("value"))
        if amount is None:
            where = f"{path}{key}."
            self.number(value, "value", where)
            self.problem(f"{path}{key} has no numeric value")
            return None
        unit, code = value.get("unit"), value.get("code")
        system, comparator = value.get("system"), value.get("comparator")
        if not all(type(t) is str or t is None for t in (unit, code, system, comparator)):
            where = f"{path}{key}."
            unit = self.text(value, "unit", where)
            code = self.code(value, "code", where)
            system = self.text(value, "system", where)
            comparator = self.text(value, "comparator", where)
        return Quantity(
            value=amount,
            unit=unit or None,
            code=code or None,
            system=system or None,
            comparator=comparator or None,
        )

    def ratio(self, node: Any, key: str, path: str) -> Ratio | None:
        value = get(node, key)
        if value is None:
            return None
        where = f"{path}{key}"
        if not is_node(value):
            self.problem(f"{where} is not a Ratio")
            return None
        numerator = self.quantity(value, "numerator", f"{where}.")
        denominator = self.quantity(value, "denominator", f"{where}.")
        if numerator is None or denominator is None:
            self.problem(f"{where} lacks a numerator or denominator")
            return None
        return Ratio(numerator=numerator, denominator=denominator)

    def reference(self, node: Any, key: str, path: str) -> str | None:
        value = get(node, key)
        if value is None:
            return None
        if not is_node(value):
            self.problem(f"{path}{key} is not a Reference")
            return None
        return self.text(value, "reference", f"{path}{key}.")


@lru_cache(maxsize=MEMO_SIZE)
def _read_concept(memo: bytes, path: str, key: str) -> tuple[Concept | None, tuple[str, ...]]:
    reader = Reader()
    return reader.concept_of(orjson.loads(memo), path, key), tuple(reader.problems)


def finite_number(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else, NaN and infinities included
    (``bool`` is not a number, though Python makes it an ``int``)."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            return None
        return result if math.isfinite(result) else None
    return None


def parse_instant(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (UTC when no zone is given).

    Partial dates ("2025", "2025-01") take their earliest moment: a lab result of
    unknown day is treated as older, never fresher, than it may be.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if "T" not in text:
        day = parse_partial_date(text)
        return datetime.combine(day, time(), tzinfo=UTC) if day else None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_partial_date(value: Any) -> date | None:
    """A FHIR date, possibly partial ("1941", "1941-03"), as its earliest day."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    parts = value.strip()[:10].split("-")
    try:
        numbers = [int(p) for p in parts]
        if len(numbers) == 1 and len(parts[0]) == 4:
            return date(numbers[0], 1, 1)
        if len(numbers) == 2:
            return date(numbers[0], numbers[1], 1)
        if len(numbers) == 3:
            return date(numbers[0], numbers[1], numbers[2])
    except ValueError:
        return None
    return None
