"""Patient, Observation and Condition of any FHIR version, read into the internal model.

Each is read from its JSON by the one ``Reader``, which checks every element it reads
(DSTU2, STU3 and R4 spell these elements alike). None is schema-validated: a schema
failure could change nothing here, as a malformed eGFR of 12 or a malformed dialysis
condition is still evidence, and skipping it would read the patient as normal, so
validating would only cost (it was about an eighth of a hook call). A resource too broken
to use gives None (never raises), so the caller can skip it and, if nothing usable is
left, report the data as unavailable.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from cds_hooks.fhir.values import (
    JSON_OBJECT,
    Reader,
    get,
    parse_instant,
    parse_partial_date,
)
from cds_hooks.model import Condition, Observation, Patient, Quantity

_COMPARATORS = {"≤": "<=", "≥": ">=", "=<": "<=", "=>": ">="}
_NUMERIC_TEXT = re.compile(
    r"^\s*(?P<comparator><=|>=|=<|=>|<|>|≤|≥)?\s*(?P<value>\d+(?:[.,]\d+)?)\s*(?P<unit>\S.*)?$"
)


def _read_node(resource: Any, resource_type: str) -> Any:
    """The resource; None when it is not a resource of that type."""
    if not isinstance(resource, JSON_OBJECT) or resource.get("resourceType") != resource_type:
        return None
    return resource


def patient(resource: Any) -> Patient | None:
    """``birthDate`` "1941" or "1941-03" becomes the earliest possible day (1 January /
    the 1st): the patient is taken as old as the record allows, so age-based cautions
    fire rather than stay silent at the boundary."""
    node = _read_node(resource, "Patient")
    if node is None:
        return None
    reader = Reader()
    gender = reader.text(node, "gender", "")
    return Patient(
        id=reader.text(node, "id", "") or "",
        birth_date=parse_partial_date(get(node, "birthDate")),
        gender=gender,
        deceased=_deceased(node),
    )


def _deceased(node: Any) -> date | bool:
    """``deceasedDateTime`` (a date-time we cannot read still marks the patient deceased)
    or ``deceasedBoolean``: the same element in DSTU2, STU3 and R4."""
    when = get(node, "deceasedDateTime")
    if when is not None:
        return parse_partial_date(when) or True
    return get(node, "deceasedBoolean") is True


def observation(resource: Any) -> Observation | None:
    """A lab or vital; a result given as text such as ">60" keeps its comparator."""
    node = _read_node(resource, "Observation")
    if node is None:
        return None
    return _observation(node)


def _observation(node: Any) -> Observation | None:
    reader = Reader()
    code = reader.concept(node, "code", "")
    if code is None:
        return None
    value, value_text = _value(node, reader)
    return Observation(
        id=reader.text(node, "id", ""),
        code=code,
        value=value,
        effective=observation_effective(node),
        status=reader.text(node, "status", ""),
        value_text=value_text,
    )


def condition(resource: Any) -> Condition | None:
    """Clinical and verification status as codes, whether R4 CodeableConcepts or strings."""
    node = _read_node(resource, "Condition")
    if node is None:
        return None
    reader = Reader()
    code = reader.concept(node, "code", "")
    if code is None:
        return None
    return Condition(
        id=reader.text(node, "id", ""),
        code=code,
        clinical_status=_status_code(node, "clinicalStatus", reader),
        verification_status=_status_code(node, "verificationStatus", reader),
    )


def _value(node: Any, reader: Reader) -> tuple[Quantity | None, str | None]:
    if get(node, "dataAbsentReason") is not None:
        return None, None
    quantity = reader.quantity(node, "valueQuantity", "")
    if quantity is not None:
        return _canonical_comparator(quantity), None
    integer = reader.integer(node, "valueInteger", "")
    if integer is not None:
        return Quantity(value=float(integer)), None
    text = reader.text(node, "valueString", "")
    if text is not None:
        return _quantity_from_text(text), text
    concept = reader.concept(node, "valueCodeableConcept", "")
    return None, concept.label if concept is not None else None


def _canonical_comparator(quantity: Quantity) -> Quantity:
    comparator = quantity.comparator
    if comparator not in _COMPARATORS:
        return quantity
    return Quantity(
        value=quantity.value,
        unit=quantity.unit,
        code=quantity.code,
        system=quantity.system,
        comparator=_COMPARATORS[comparator],
    )


def _quantity_from_text(text: str) -> Quantity | None:
    match = _NUMERIC_TEXT.match(text)
    if match is None:
        return None
    comparator = match["comparator"]
    return Quantity(
        value=float(match["value"].replace(",", ".")),
        unit=match["unit"].strip() if match["unit"] else None,
        comparator=_COMPARATORS.get(comparator, comparator) if comparator else None,
    )


def observation_effective(node: Any) -> datetime | None:
    """When an Observation applies, from a validated model or the raw JSON alike, so a
    list can be ordered newest first before any of it is validated."""
    return (
        parse_instant(get(node, "effectiveDateTime"))
        or parse_instant(get(node, "effectiveInstant"))
        or parse_instant(get(get(node, "effectivePeriod"), "start"))
        or parse_instant(get(node, "issued"))
    )


def _status_code(node: Any, key: str, reader: Reader) -> str | None:
    value = get(node, key)
    if value is None or isinstance(value, str):
        return reader.text(node, key, "")
    concept = reader.concept(node, key, "")
    if concept is None:
        return None
    code = next((c.code for c in concept.codings if c.code), None)
    return code or concept.text
