"""Reading FHIR datatypes into model values, from a raw dict or a validated model alike.

One reader serves both paths: a resource that validated with ``fhir.resources`` is read
through its pydantic model (types already guaranteed), one that did not is read from the
raw JSON, where every element may have the wrong shape. Problems are recorded as element
paths only, never values, so they can be shown and logged without leaking patient data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from cds_hooks.model import Coding, Concept, Quantity, Ratio

JSON_OBJECT = dict | Mapping
"""``isinstance`` target for a JSON object: dict first, as parsed JSON is a dict and a bare
``Mapping`` check goes through ABC machinery."""

_MODEL, _MAPPING, _LEAF = "model", "mapping", "leaf"
_KINDS: dict[type, str] = {list: _LEAF, str: _LEAF, int: _LEAF, float: _LEAF, bool: _LEAF}
"""What each type of element is, worked out once per type: ``isinstance`` against
BaseModel or Mapping goes through metaclass and ABC hooks written in Python, which cost
more than the lookup they guard, and elements are looked up hundreds of times a call."""


def _kind(value: Any) -> str:
    kind = _KINDS.get(type(value))
    if kind is None:
        kind = _KINDS[type(value)] = (
            _MODEL
            if isinstance(value, BaseModel)
            else _MAPPING
            if isinstance(value, Mapping)
            else _LEAF
        )
    return kind


def get(node: Any, key: str) -> Any:
    """An element of a JSON object or of a validated model; None when absent."""
    if type(node) is dict:  # parsed JSON
        return node.get(key)
    if node is None:
        return None
    kind = _KINDS.get(type(node)) or _kind(node)
    if kind is _MODEL:
        return getattr(node, key, None)
    if kind is _MAPPING:
        return node.get(key)
    return None


def is_node(value: Any) -> bool:
    return type(value) is dict or (value is not None and _kind(value) is not _LEAF)


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
    """Collects what could not be read while turning elements into model values."""

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
        value = get(node, key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        self.problem(f"{path}{key} is not a string")
        return None

    def code(self, node: Any, key: str, path: str) -> str | None:
        """A code or identifier; whole numbers are accepted (RxCUIs often arrive as such)."""
        value = get(node, key)
        if isinstance(value, int) and not isinstance(value, bool):
            self.problem(f"{path}{key} is a number, not a string")
            return str(value)
        return self.text(node, key, path)

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
        """A FHIR date/dateTime as its ISO text (validated models hold date objects)."""
        value = get(node, key)
        if isinstance(value, date):
            return value.isoformat()
        return self.text(node, key, path)

    def coding(self, node: Any, path: str) -> Coding | None:
        system = self.text(node, "system", path)
        code = self.code(node, "code", path)
        display = self.text(node, "display", path)
        if system is None and code is None and display is None:
            return None
        return Coding(system=system, code=code, display=display)

    def concept(self, node: Any, key: str, path: str) -> Concept | None:
        return self.concept_of(get(node, key), f"{path}{key}")

    def concept_of(self, value: Any, where: str) -> Concept | None:
        """As ``concept``, for an element already taken from its node."""
        if value is None:
            return None
        regular = regular_concept(value)
        if regular is not IRREGULAR:
            return regular  # type: ignore[return-value]
        return self.irregular_concept(value, where)

    def irregular_concept(self, value: Any, where: str) -> Concept | None:
        """Whatever can be read of a concept of unexpected shape, and where it went wrong."""
        if isinstance(value, str):
            self.problem(f"{where} is text, not a CodeableConcept")
            return Concept(text=value) if value else None
        if isinstance(value, list | tuple):
            self.problem(f"{where} is a list, not a CodeableConcept")
            value = next((item for item in value if is_node(item)), None)
        if not is_node(value):
            self.problem(f"{where} is not a CodeableConcept")
            return None
        codings = tuple(
            coding
            for coding_path, item in self.items(value, "coding", f"{where}.")
            if (coding := self.coding(item, f"{coding_path}.")) is not None
        )
        text = self.text(value, "text", f"{where}.")
        if not codings and text is None:
            return None
        return Concept(codings=codings, text=text)

    def quantity(self, node: Any, key: str, path: str) -> Quantity | None:
        value = get(node, key)
        if value is None:
            return None
        regular = regular_quantity(value)
        if regular is not None:
            return regular
        return self.irregular_quantity(value, f"{path}{key}")

    def irregular_quantity(self, value: Any, where: str) -> Quantity | None:
        """Whatever can be read of a quantity of unexpected shape, and where it went wrong."""
        if not is_node(value):
            self.problem(f"{where} is not a Quantity")
            return None
        amount = self.number(value, "value", f"{where}.")
        if amount is None:
            self.problem(f"{where} has no numeric value")
            return None
        return Quantity(
            value=amount,
            unit=self.text(value, "unit", f"{where}."),
            code=self.code(value, "code", f"{where}."),
            system=self.text(value, "system", f"{where}."),
            comparator=self.text(value, "comparator", f"{where}."),
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


IRREGULAR = object()


def regular_concept(value: Any) -> Concept | object | None:
    """A well-formed CodeableConcept read in one pass, or ``IRREGULAR``.

    Concepts are read for every drug, lab and condition of a request, and nearly all are
    well formed (every validated one is), so they skip the element-path bookkeeping of
    ``Reader.concept``; anything of an unexpected shape (``IRREGULAR``) goes that way,
    which records where it is. The result is the same as ``Reader.concept``'s.
    """
    if isinstance(value, dict):
        codings, text = value.get("coding"), value.get("text")
    elif (_KINDS.get(type(value)) or _kind(value)) is _MODEL:
        codings, text = getattr(value, "coding", None), getattr(value, "text", None)
    else:
        return IRREGULAR
    if text is not None and not isinstance(text, str):
        return IRREGULAR
    read: list[Coding] = []
    if codings is not None:
        if not isinstance(codings, list):
            return IRREGULAR
        for item in codings:
            if isinstance(item, dict):
                system, code, display = item.get("system"), item.get("code"), item.get("display")
            elif (_KINDS.get(type(item)) or _kind(item)) is _MODEL:
                system = getattr(item, "system", None)
                code = getattr(item, "code", None)
                display = getattr(item, "display", None)
            else:
                return IRREGULAR
            if not (
                (system is None or isinstance(system, str))
                and (code is None or isinstance(code, str))
                and (display is None or isinstance(display, str))
            ):
                return IRREGULAR
            if system or code or display:
                read.append(
                    Coding(system=system or None, code=code or None, display=display or None)
                )
    if not read and not text:
        return None
    return Concept(codings=tuple(read), text=text or None)


def finite_number(value: Any) -> float | None:
    """A JSON number (or a validated Decimal) as a finite float; None for anything else,
    NaN and infinities included (a signalling NaN Decimal cannot even be converted)."""
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
        return result if math.isfinite(result) else None
    return None


def regular_quantity(value: Any) -> Quantity | None:
    """A well-formed Quantity read in one pass, or None for ``Reader.quantity`` to read
    carefully (as for concepts, see ``regular_concept``); the same result when not None."""
    if isinstance(value, dict):
        amount, unit, code = value.get("value"), value.get("unit"), value.get("code")
        system, comparator = value.get("system"), value.get("comparator")
    elif (_KINDS.get(type(value)) or _kind(value)) is _MODEL:
        amount = getattr(value, "value", None)
        unit, code = getattr(value, "unit", None), getattr(value, "code", None)
        system, comparator = getattr(value, "system", None), getattr(value, "comparator", None)
    else:
        return None
    number = finite_number(amount)
    if number is None:
        return None
    for text in (unit, code, system, comparator):
        if text is not None and not isinstance(text, str):
            return None
    return Quantity(
        value=number,
        unit=unit or None,
        code=code or None,
        system=system or None,
        comparator=comparator or None,
    )


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
