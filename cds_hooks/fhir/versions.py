"""Which FHIR version a medication order is written in, and validating it with that version's
model.

Validation is the gate for orders: a draft that fails it carries the failure as a problem
on its card. Patients, labs and conditions are not validated (``resources``): a failure
there would change nothing the engine reads. Hook requests do not say their FHIR version,
so it is inferred from the shape of the order itself (the elements that changed between
versions). ``fhir.resources`` has no DSTU2 models; DSTU2 orders are read leniently
without schema validation.

Only a projection is validated: the elements the normalisers read from the model
(``READ_ELEMENTS``), nothing else. Validation costs per element, and real records carry
much the service never reads (identifiers, encounters, requesters, narrative);
validating that would cost more than the rest of a hook call, and a malformed identifier
there would cost the order its validation without changing one value the engine uses.
So the validated data is exactly the data used, and irrelevant parts can neither slow
nor fail a request.

Datatype elements that recur across patients (drug concepts, quantities, dose
instructions) are validated once per distinct JSON and the model reused, within a
resource projection too; a validation outcome depends on its input alone, so the result
is the same as validating afresh, failures and their element paths included.
"""

from __future__ import annotations

import importlib
import re
import typing
from collections.abc import Mapping, Set
from dataclasses import dataclass
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

import orjson
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic import BaseModel, ValidationError

from cds_hooks.fhir.quirks import (
    fill_placeholders,
    list_fields,
    placeholders,
    repair_for_validation,
)
from cds_hooks.fhir.values import JSON_OBJECT
from cds_hooks.memo import MEMO_SIZE, memo_key
from cds_hooks.model import FhirVersion

_PACKAGES = {FhirVersion.R4: "fhir.resources.R4B", FhirVersion.STU3: "fhir.resources.STU3"}

_R4_ONLY_MEDICATION_REQUEST = frozenset(
    {
        "doNotPerform",
        "reportedBoolean",
        "reportedReference",
        "statusReason",
        "performerType",
        "encounter",
        "instantiatesCanonical",
        "instantiatesUri",
        "courseOfTherapyType",
    }
)
_STU3_ONLY_MEDICATION_REQUEST = frozenset({"context", "definition"})
_SAFE_LOCATION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
_MEMOISED_DATATYPES = frozenset({"CodeableConcept", "Quantity", "Dosage"})
"""Datatypes whose validation is memoised: drug and lab concepts, quantities and dose
instructions recur across patients, and none of them identifies a patient on its own
(References and dates are left out for that reason)."""
READ_ELEMENTS: Mapping[str, frozenset[str]] = {
    # id, status and intent are read from the resource itself (they must survive a
    # failed validation); medicationReference is resolved from it too, but stays in the
    # projection because the model requires a medication[x].
    "MedicationRequest": frozenset(
        {
            "resourceType",
            "medicationCodeableConcept",
            "medicationReference",
            "dosageInstruction",
            "authoredOn",
            "priorPrescription",
        }
    ),
}
"""Per resource type, the elements the normalisers read from a validated model."""


@cache
def model_class(version: FhirVersion, resource_type: str) -> type[BaseModel] | None:
    """The ``fhir.resources`` class for a resource type, imported on first use."""
    package = _PACKAGES.get(version)
    if package is None or not resource_type.isalpha():
        return None
    try:
        module = importlib.import_module(f"{package}.{resource_type.lower()}")
    except ImportError:
        return None
    cls = getattr(module, resource_type, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def medication_request_version(resource: Mapping[str, Any]) -> FhirVersion | None:
    """R4 puts doses in ``doseAndRate``; STU3 directly on the dosage; else other tells."""
    dosages = resource.get("dosageInstruction")
    # Most co-medications have no dosage, and parsed JSON is dicts: both are answered
    # before the general Mapping check, whose ABC machinery costs more than the lookups.
    if dosages is not None:
        for dosage in dosages if isinstance(dosages, list) else [dosages]:
            if type(dosage) is dict or isinstance(dosage, Mapping):
                if "doseAndRate" in dosage:
                    return FhirVersion.R4
                if "doseQuantity" in dosage or "doseRange" in dosage:
                    return FhirVersion.STU3
    keys = resource.keys()
    if not keys.isdisjoint(_R4_ONLY_MEDICATION_REQUEST):
        return FhirVersion.R4
    if not keys.isdisjoint(_STU3_ONLY_MEDICATION_REQUEST):
        return FhirVersion.STU3
    requester = resource.get("requester")
    if requester is not None and isinstance(requester, JSON_OBJECT) and "agent" in requester:
        return FhirVersion.STU3
    return None


@dataclass(frozen=True, slots=True)
class Validation:
    """Outcome of validating against one or more versions, first success wins."""

    model: BaseModel | None
    version: FhirVersion | None
    failure: str | None = None


def validate(resource: Mapping[str, Any], versions: tuple[FhirVersion, ...]) -> Validation:
    """Validate a quirk-repaired projection against each version in turn; never raises."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return Validation(model=None, version=None)
    read = READ_ELEMENTS.get(resource_type)
    if read is None:
        return _validate_as(resource, resource_type, resource_type, versions)
    elements = read & resource.keys()
    first_failure: str | None = None
    for version in versions:
        cls = model_class(version, resource_type)
        if cls is None:
            continue
        try:
            model = _prevalidated(resource, elements, cls, resource_type)
        except (ValidationError, ValueError, TypeError, RecursionError):
            model = None
        if model is not None:
            return Validation(model=model, version=version)
        projection = {key: resource[key] for key in elements}
        outcome = _validate_as(projection, resource_type, resource_type, (version,))
        if outcome.model is not None:
            return outcome
        first_failure = first_failure or outcome.failure
    return Validation(model=None, version=None, failure=first_failure)


def validate_element(
    value: Mapping[str, Any], type_name: str, path: str, versions: tuple[FhirVersion, ...]
) -> Validation:
    """Validate one element (e.g. a CodeableConcept) of a resource as its datatype.

    For resources of which the engine reads one element only: a datatype model costs a
    fraction of the resource model around it. ``path`` names the element in failures.
    The outcome depends on the input alone, so it is memoised on the exact JSON.
    """
    key = memo_key(value) if type_name in _MEMOISED_DATATYPES else None
    if key is None:
        return _validate_as(value, type_name, path, versions)
    return _memoised_element(key, type_name, path, versions)


@lru_cache(maxsize=MEMO_SIZE)
def _memoised_element(
    key: bytes, type_name: str, path: str, versions: tuple[FhirVersion, ...]
) -> Validation:
    return _validate_as(orjson.loads(key), type_name, path, versions)


@cache
def _datatype_fields(cls: type[BaseModel]) -> dict[str, tuple[type[BaseModel], bool]]:
    """Top-level elements typed as a memoised datatype: alias → (model class, is a list)."""
    fields: dict[str, tuple[type[BaseModel], bool]] = {}
    for name, info in cls.model_fields.items():
        klass, is_list = _model_type(info.annotation)
        if klass is not None and klass.__name__ in _MEMOISED_DATATYPES:
            fields[info.alias or name] = (klass, is_list)
    return fields


def _model_type(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The ``fhir.resources`` model an element is typed as (if any), and whether a list."""
    for candidate in (annotation, *typing.get_args(annotation)):
        is_list = typing.get_origin(candidate) is list
        if is_list:
            candidate = typing.get_args(candidate)[0]
        klass_of = getattr(candidate, "get_model_klass", None)
        if klass_of is not None:
            klass = klass_of()
            return (klass, is_list) if isinstance(klass, type) else (None, False)
    return None, False


def model_validate(cls: type[BaseModel], data: Any) -> BaseModel:
    """``cls.model_validate(data)``, the same outcome at about half the cost.

    ``fhir_core``'s validators walk every field of a model in Python, whatever the input
    holds (a resource model has up to a hundred), and were most of the cost of validating
    a projection of a few elements. Two of those walks are avoided:

    - ``fhir_core`` models override ``__init__`` (only to check ``resourceType``), and
      with a custom ``__init__`` pydantic runs the model's validators twice, inside and
      around it. Validating into a new instance, as pydantic's own ``BaseModel.__init__``
      does, runs them once; ``resourceType`` is checked here as ``__init__`` checks it.
    - ``reject_null_complex_elements`` (no null inside a list of complex elements) looks
      at every list field of the model, but only acts on a dict. The same check is made
      here on the elements present, and the input is handed over as a read-only mapping,
      which pydantic validates as it does a dict. Where the check finds a null, the
      ordinary path runs and reports it as ``fhir_core`` does.

    Any other input takes the ordinary path.
    """
    expected = getattr(cls, "__resource_type__", None)
    if (
        type(data) is not dict
        or "resource_type" in data
        or data.get("resourceType", expected) != expected
    ):
        return cls.model_validate(data)
    fields = {k: v for k, v in data.items() if k != "resourceType"}
    for key in _complex_lists(cls).intersection(fields):
        value = fields[key]
        if isinstance(value, list) and any(item is None for item in value):
            return cls.model_validate(data)
    return _validated_once(cls, fields)


def _validated_once(
    cls: type[BaseModel], fields: dict[str, Any], by_name: bool | None = None
) -> BaseModel:
    """A new ``cls`` validated from ``fields`` (no ``resourceType``, no null in a list of
    complex elements) with the model's validators run once, as in ``model_validate``.

    ``by_name=False`` looks elements up by their JSON name only (``_status``, not also
    ``status__ext``); see ``_prevalidated``."""
    instance = cls.__new__(cls)
    cls.__pydantic_validator__.validate_python(
        MappingProxyType(fields), self_instance=instance, by_name=by_name
    )
    return instance


@cache
def _complex_lists(cls: type[BaseModel]) -> frozenset[str]:
    """Names and aliases of the list elements of complex type, where
    ``reject_null_complex_elements`` looks for nulls (its own tests of a field)."""
    keys: set[str] = set()
    for name, info in cls.model_fields.items():
        if is_list_type(info) and not is_primitive_type(info) and not name.endswith("__ext"):
            keys.update(k for k in (name, info.alias) if k)
    return frozenset(keys)


@lru_cache(maxsize=MEMO_SIZE)
def _datatype_model(cls: type[BaseModel], key: bytes) -> BaseModel | None:
    """What ``fhir_core`` makes of a nested datatype (``cls.model_validate`` of the dict),
    or None when invalid; validated models are never modified, so they can be shared."""
    try:
        return model_validate(cls, orjson.loads(key))
    except (ValidationError, ValueError, TypeError, RecursionError):
        return None


@cache
def _element_handling(
    cls: type[BaseModel],
) -> dict[str, tuple[bool, type[BaseModel] | None, bool, bool]]:
    """Elements that ``_prevalidated`` does more than copy: name → (a lone object is
    wrapped into an array, memoised datatype, typed as a list of it, a list of complex
    elements where a null sends the validation the ordinary way)."""
    wrapped, datatypes, complex_lists = list_fields(cls), _datatype_fields(cls), _complex_lists(cls)
    return {
        name: (
            name in wrapped,
            datatypes[name][0] if name in datatypes else None,
            name in datatypes and datatypes[name][1],
            name in complex_lists,
        )
        for name in wrapped | datatypes.keys() | complex_lists
    }


def _prevalidated(
    resource: Mapping[str, Any], elements: Set[str], cls: type[BaseModel], resource_type: str
) -> BaseModel | None:
    """The projection of ``resource`` on ``elements``, quirk-repaired, validated in one
    copy with its datatype elements replaced by memoised models.

    The same as ``model_validate`` of what ``repair_for_validation`` makes of the
    projection: ``fhir_core`` validates a nested element with ``model_validate`` of its
    dict and takes a model instance as it is. None when an element is invalid, not
    memoisable or a null is in a list of complex elements, or the projection is invalid:
    the caller then validates the projection the ordinary way, so failures keep their
    element paths.

    Elements are looked up by JSON name only. Pydantic otherwise also tries each
    element's Python name, and each of the model's elements absent from the input (most
    of some fifty) costs a caught ``KeyError`` per try. No projected or placeholder
    element is a model's Python name for another element (a test pins this), so they
    populate the same fields either way; an element found only under its Python name
    would be extra here, fail, and take the ordinary path.
    """
    if getattr(cls, "__resource_type__", None) != resource_type:
        return None
    handling = _element_handling(cls)
    fields: dict[str, Any] = {}
    for name in elements:
        value = resource[name]
        how = handling.get(name)
        if how is not None:
            wrap, klass, is_list, no_nulls = how
            if wrap and isinstance(value, Mapping):
                value = [value]
            if klass is not None:
                if isinstance(value, dict):
                    value = _memoised_model(klass, value)
                    if value is None:
                        return None
                elif is_list and isinstance(value, list):
                    items = []
                    for item in value:
                        if isinstance(item, dict):
                            item = _memoised_model(klass, item)
                            if item is None:
                                return None
                        items.append(item)
                    value = items
            if no_nulls and isinstance(value, list) and any(item is None for item in value):
                return None
        fields[name] = value
    fields.pop("resourceType", None)
    fill_placeholders(fields, _placeholder_models(cls, resource_type))
    return _validated_once(cls, fields, by_name=False)


@cache
def _placeholder_models(cls: type[BaseModel], resource_type: str) -> dict[str, Any]:
    """The quirks' placeholders for ``cls``, their objects validated once: they are
    constants, no patient's data, and taken as models as memoised datatypes are."""
    models = dict(placeholders(resource_type))
    for name, value in models.items():
        if isinstance(value, dict):
            klass, _ = _model_type(cls.model_fields[name].annotation)
            if klass is not None:
                models[name] = model_validate(klass, value)
    return models


def _memoised_model(klass: type[BaseModel], value: dict[str, Any]) -> BaseModel | None:
    key = memo_key(value)
    return None if key is None else _datatype_model(klass, key)


def _validate_as(
    value: Mapping[str, Any],
    type_name: str,
    label: str,
    versions: tuple[FhirVersion, ...],
) -> Validation:
    first_failure: str | None = None
    for version in versions:
        cls = model_class(version, type_name)
        if cls is None:
            continue
        try:
            model = model_validate(cls, repair_for_validation(value, cls))
        except ValidationError as exc:
            first_failure = first_failure or f"{label} is not valid FHIR {version} " + (
                f"({_locations(exc)})"
            )
        except (ValueError, TypeError, RecursionError):
            first_failure = first_failure or f"{label} is not valid FHIR {version}"
        else:
            return Validation(model=model, version=version)
    return Validation(model=None, version=None, failure=first_failure)


def _locations(exc: ValidationError) -> str:
    """Where validation failed, as element paths; input values are never included."""
    paths: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        parts = [str(p) for p in error["loc"] if isinstance(p, int) or _SAFE_LOCATION.match(str(p))]
        path = ".".join(parts) or "resource"
        if path not in paths:
            paths.append(path)
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
