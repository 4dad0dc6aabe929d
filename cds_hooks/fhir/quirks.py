"""Known client deviations from FHIR, repaired on a copy before schema validation.

The CDS Hooks sandbox sends single objects where R4 has arrays (``category``,
``reasonCode``, sometimes ``dosageInstruction``), and legacy clients omit ``intent`` on
draft MedicationRequests. These do not change what the order means, so they should not
cost the order its validation. Required elements the service never reads from the model
(intent, status, subject: the hook context already names the patient) are left out of
the validated projection (``versions.READ_ELEMENTS``) and get placeholders in the copy
only; the normalisers read those elements from the original resource.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel

_PLACEHOLDERS: dict[str, dict[str, Any]] = {
    "MedicationRequest": {
        "intent": "order",
        "status": "unknown",
        "subject": {"reference": "Patient/unknown"},
    },
}
_ABSENT: tuple[Any, ...] = (None, "", {})
"""Values that leave a required element as good as missing (built once, not per call)."""


@cache
def list_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Top-level elements that the model types as arrays."""
    names = set()
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        candidates = typing.get_args(annotation) if typing.get_origin(annotation) else ()
        if typing.get_origin(annotation) is list or any(
            typing.get_origin(arg) is list for arg in candidates
        ):
            names.add(info.alias or name)
    return frozenset(names)


def repair_for_validation(resource: Mapping[str, Any], cls: type[BaseModel]) -> dict[str, Any]:
    """A shallow copy with lone objects wrapped into arrays and required placeholders set."""
    repaired = dict(resource)
    for name in list_fields(cls).intersection(repaired):
        if isinstance(repaired[name], Mapping):
            repaired[name] = [repaired[name]]
    fill_placeholders(repaired, placeholders(str(resource.get("resourceType"))))
    return repaired


def placeholders(resource_type: str) -> Mapping[str, Any]:
    """The placeholders of a resource type's required elements, as JSON."""
    return _PLACEHOLDERS.get(resource_type, {})


def fill_placeholders(repaired: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Set the required elements that are missing or empty to their placeholders."""
    for name, placeholder in values.items():
        if repaired.get(name) in _ABSENT:
            repaired[name] = placeholder
