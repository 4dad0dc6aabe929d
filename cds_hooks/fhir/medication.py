"""Medication orders of every FHIR version (DSTU2 MedicationOrder, STU3/R4 MedicationRequest).

A draft order is the very thing the service checks, so reading it never fails: what
cannot be read is named in ``MedicationOrder.problems`` and whatever could be read (above
all the drug) is kept, so the engine can say "dose not computable" instead of staying
silent about a baclofen order it did not understand.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from cds_hooks.fhir.values import (
    IRREGULAR,
    JSON_OBJECT,
    Reader,
    finite_number,
    get,
    is_node,
    reference_parts,
    regular_concept,
    regular_quantity,
)
from cds_hooks.fhir.versions import (
    Validation,
    medication_request_version,
    memo_key,
    validate,
    validate_element,
)
from cds_hooks.knowledge import MEMO_SIZE
from cds_hooks.model import (
    Coding,
    Concept,
    DosageInstruction,
    FhirVersion,
    MedicationOrder,
    MedicationProduct,
    Quantity,
    Ratio,
    Timing,
)

ORDER_TYPES = frozenset({"MedicationRequest", "MedicationOrder"})
_EMPTY: Mapping[str, Mapping[str, Any]] = {}
_T = TypeVar("_T")


def medication_order(
    resource: Mapping[str, Any],
    *,
    contained_or_bundled: Mapping[str, Mapping[str, Any]] = _EMPTY,
    fallback_reference: str | None = None,
    drug_only: bool = False,
) -> MedicationOrder:
    """Normalise one order; never raises for any JSON value.

    ``contained_or_bundled`` maps ``Medication/id`` (or a full URL) to Medication
    resources from the same Bundle or the prefetch, for ``medicationReference``.
    ``fallback_reference`` names an order that has no ``id`` (legacy clients send none).
    ``drug_only`` is for a co-medication that cannot be baclofen, of which the engine
    reads the drug alone: only ``medicationCodeableConcept`` is validated (as a
    CodeableConcept, a fraction of the cost of the whole MedicationRequest), identity,
    status and dates are read leniently, and dosage instructions are not read at all
    (``dosages`` stays empty), which was most of the cost of reading such an order.
    """
    if drug_only and type(resource) is dict:
        regular = _regular_drug_only(resource, fallback_reference)
        if regular is not None:
            return regular
    if not isinstance(resource, JSON_OBJECT):
        return MedicationOrder(
            reference=fallback_reference or "MedicationRequest/#0",
            resource_type="MedicationRequest",
            fhir_version=FhirVersion.R4,
            problems=("the order is not a FHIR resource",),
        )
    reader = Reader()
    resource_type = resource.get("resourceType")
    node: Any = resource
    drug = resource.get("medicationCodeableConcept")
    read: Any = IRREGULAR
    if resource_type == "MedicationOrder":
        version = FhirVersion.DSTU2
    elif resource_type == "MedicationRequest":
        version, validated = _validated_request(resource, reader, drug_only)
        if drug_only:
            if validated is not None:
                drug, read = validated
        elif validated is not None:
            node, drug = validated, get(validated, "medicationCodeableConcept")
    else:
        reader.problem("the order has no MedicationRequest or MedicationOrder resourceType")
        resource_type = "MedicationRequest"
        version = medication_request_version(resource) or FhirVersion.R4

    resource_id = reader.text(resource, "id", "")
    reference = (
        f"{resource_type}/{resource_id}"
        if resource_id
        else fallback_reference or f"{resource_type}/#0"
    )
    medication, product = _medication(drug, read, resource, contained_or_bundled, reader)
    dosages = (
        ()
        if drug_only
        else tuple(
            _dosage(item, f"{path}.", reader)
            for path, item in reader.items(node, "dosageInstruction", "")
        )
    )
    written = "dateWritten" if version is FhirVersion.DSTU2 else "authoredOn"
    return MedicationOrder(
        reference=reference,
        resource_type=resource_type,
        fhir_version=version,
        status=reader.text(resource, "status", ""),
        intent=reader.text(resource, "intent", ""),
        medication=medication,
        product=product,
        dosages=dosages,
        authored_on=reader.date_text(node, written, ""),
        prior_prescription=reader.reference(node, "priorPrescription", ""),
        problems=tuple(reader.problems),
        raw=resource,
    )


def _regular_drug_only(
    resource: dict[str, Any], fallback_reference: str | None
) -> MedicationOrder | None:
    """A well-formed co-medication read in one pass, or None: read it the careful way.

    Most of a long medication list is read ``drug_only``, nearly always a MedicationRequest
    with a coded drug and plain text fields, so such an order skips ``Reader``'s path
    bookkeeping and the generic lookups. Anything the careful reading would record a
    problem for, or that is merely unusual, is declined; otherwise the result is the same.
    """
    drug = resource.get("medicationCodeableConcept")
    if type(drug) is not dict or resource.get("resourceType") != "MedicationRequest":
        return None
    resource_id, status, intent = resource.get("id"), resource.get("status"), resource.get("intent")
    authored_on, prior = resource.get("authoredOn"), resource.get("priorPrescription")
    if prior is not None:
        if type(prior) is not dict:
            return None
        prior = prior.get("reference")
    for text in (resource_id, status, intent, authored_on, prior):
        if text is not None and type(text) is not str:
            return None
    key = memo_key(drug)
    if key is None:
        return None
    detected = medication_request_version(resource)
    outcome, concept = _memoised_drug(key, (detected,) if detected else _GUESSED_VERSIONS)
    if outcome.model is None or type(concept) is not Concept:
        return None
    return MedicationOrder(
        reference=f"MedicationRequest/{resource_id}"
        if resource_id
        else fallback_reference or "MedicationRequest/#0",
        resource_type="MedicationRequest",
        fhir_version=detected or FhirVersion.R4,
        status=status or None,
        intent=intent or None,
        medication=concept,
        authored_on=authored_on or None,
        prior_prescription=prior or None,
        raw=resource,
    )


_GUESSED_VERSIONS = (FhirVersion.R4, FhirVersion.STU3)
"""The versions a MedicationRequest is validated against when its shape does not tell."""


def _validated_request(
    resource: Mapping[str, Any], reader: Reader, drug_only: bool
) -> tuple[FhirVersion, Any]:
    """Version and validated model of a MedicationRequest (model None: read leniently).

    A draft without a drug yet is incomplete by design, not malformed; it is read
    leniently without recording a validation problem. With ``drug_only`` the model is
    that of its ``medicationCodeableConcept`` alone, paired as ``_validated_drug`` pairs it.
    """
    detected = medication_request_version(resource)
    if "medicationCodeableConcept" not in resource and "medicationReference" not in resource:
        return detected or FhirVersion.R4, None
    versions = (detected,) if detected else _GUESSED_VERSIONS
    if drug_only:
        return detected or FhirVersion.R4, _validated_drug(resource, versions, reader)
    outcome = validate(resource, versions)
    if outcome.model is not None and outcome.version is not None:
        return outcome.version, outcome.model
    if outcome.failure:
        reader.problem(f"{outcome.failure}; read leniently")
    return detected or FhirVersion.R4, None


def _validated_drug(
    resource: Mapping[str, Any], versions: tuple[FhirVersion, ...], reader: Reader
) -> tuple[BaseModel, Any] | None:
    """The validated drug with ``regular_concept`` of it, or None (read leniently,
    problem recorded).

    Both are memoised on the drug's exact JSON, as ``validate_element`` memoises the
    validation: co-medications recur across patients, and reading the model into a
    Concept cost as much again as the memoised validation. A ``medicationReference`` is
    left as it is: the Medication it names is read as is.
    """
    concept = resource.get("medicationCodeableConcept")
    if not isinstance(concept, JSON_OBJECT):
        return None
    key = memo_key(concept)
    if key is None:
        outcome = validate_element(concept, "CodeableConcept", _DRUG, versions)
        read: Any = IRREGULAR
    else:
        outcome, read = _memoised_drug(key, versions)
    if outcome.model is None:
        if outcome.failure:
            reader.problem(f"{outcome.failure}; read leniently")
        return None
    return outcome.model, read


_DRUG = "medicationCodeableConcept"


@lru_cache(maxsize=MEMO_SIZE)
def _memoised_drug(key: bytes, versions: tuple[FhirVersion, ...]) -> tuple[Validation, Any]:
    outcome = validate_element(orjson.loads(key), "CodeableConcept", _DRUG, versions)
    return outcome, IRREGULAR if outcome.model is None else regular_concept(outcome.model)


def _medication(
    drug: Any,
    read: Any,
    resource: Mapping[str, Any],
    bundled: Mapping[str, Mapping[str, Any]],
    reader: Reader,
) -> tuple[Concept | None, MedicationProduct | None]:
    """The drug, from ``medicationCodeableConcept`` (``drug``, validated or raw; ``read``
    is it already read, or ``IRREGULAR``) or else the Medication a ``medicationReference``
    names."""
    concept = reader.concept_of(drug, _DRUG) if read is IRREGULAR else read
    if concept is not None or get(resource, "medicationReference") is None:
        return concept, None
    link = get(resource, "medicationReference")
    if not isinstance(link, JSON_OBJECT):
        reader.problem("medicationReference is not a Reference")
        return None, None
    display = reader.text(link, "display", "medicationReference.")
    fallback = Concept(text=display) if display else None
    target = _resolve(reader.text(link, "reference", "medicationReference."), resource, bundled)
    if target is None:
        reader.problem("medicationReference could not be resolved to a Medication")
        return fallback, None
    code = reader.concept(target, "code", "medicationReference→Medication.")
    if code is None:
        reader.problem("the referenced Medication has no code")
        code = fallback or _ingredients_concept(target, reader)
    if code is None:
        return None, None
    return code, _product(target, code, reader)


def _ingredients_concept(medication: Mapping[str, Any], reader: Reader) -> Concept | None:
    """A compounded product named by its ingredients, so none of them goes unnoticed."""
    path = "medicationReference→Medication."
    holder = medication.get("product") if is_node(medication.get("product")) else medication
    codings: list[Coding] = []
    labels: list[str] = []
    for item_path, ingredient in reader.items(holder, "ingredient", path):
        item = reader.concept(ingredient, "itemCodeableConcept", f"{item_path}.")
        if item is None:
            display = get(get(ingredient, "itemReference") or get(ingredient, "item"), "display")
            item = Concept(text=display) if isinstance(display, str) and display else None
        if item is not None:
            codings.extend(item.codings)
            if item.label:
                labels.append(item.label)
    if not codings and not labels:
        return None
    return Concept(codings=tuple(codings), text=" + ".join(labels) or None)


def _resolve(
    reference: str | None,
    resource: Mapping[str, Any],
    bundled: Mapping[str, Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    if not reference:
        return None
    if reference.startswith("#"):
        contained = resource.get("contained")
        for item in contained if isinstance(contained, list) else ():
            if (
                isinstance(item, JSON_OBJECT)
                and item.get("id") == reference[1:]
                and item.get("resourceType") == "Medication"
            ):
                return item
        return None
    found = bundled.get(reference)
    if found is None and (parts := reference_parts(reference)) is not None:
        found = bundled.get("/".join(parts))
    if isinstance(found, JSON_OBJECT) and found.get("resourceType") == "Medication":
        return found
    return None


def _product(medication: Mapping[str, Any], code: Concept, reader: Reader) -> MedicationProduct:
    """Form and first-ingredient strength (R4 ``strength``, STU3 ``amount``, DSTU2 ``product``)."""
    path = "medicationReference→Medication."
    holder = medication.get("product") if is_node(medication.get("product")) else medication
    form = reader.concept(holder, "form", path)
    strength = None
    for item_path, ingredient in reader.items(holder, "ingredient", path):
        key = "strength" if get(ingredient, "strength") is not None else "amount"
        strength = reader.ratio(ingredient, key, f"{item_path}.")
        break
    return MedicationProduct(code=code, form=form, strength=strength)


def _dosage(node: Any, path: str, reader: Reader) -> DosageInstruction:
    regular = _regular_dosage(node)
    return regular if regular is not None else _careful_dosage(node, path, reader)


def _careful_dosage(node: Any, path: str, reader: Reader) -> DosageInstruction:
    """Whatever can be read of a dosage of any shape, and where it went wrong."""
    holders = _holders(node, path, reader)
    dose, low, high = _dose(holders, reader)
    as_needed = bool(reader.boolean(node, "asNeededBoolean", path)) or (
        get(node, "asNeededCodeableConcept") is not None
    )
    return DosageInstruction(
        text=reader.text(node, "text", path),
        sequence=reader.integer(node, "sequence", path),
        dose=dose,
        dose_range_low=low,
        dose_range_high=high,
        timing=_timing(node, path, reader),
        as_needed=as_needed,
        max_dose_per_period=reader.ratio(node, "maxDosePerPeriod", path),
        max_dose_per_administration=reader.quantity(node, "maxDosePerAdministration", path),
        route=reader.concept(node, "route", path),
        rate=_rate(holders, reader),
    )


def _dose(
    holders: list[tuple[str, Any]], reader: Reader
) -> tuple[Quantity | None, Quantity | None, Quantity | None]:
    """R4 ``doseAndRate`` (the ordered entry first), else STU3/DSTU2 dose on the dosage."""
    for prefix, holder in holders:
        if get(holder, "doseQuantity") is not None:
            return reader.quantity(holder, "doseQuantity", prefix), None, None
        dose_range = get(holder, "doseRange")
        if dose_range is not None:
            if not is_node(dose_range):
                reader.problem(f"{prefix}doseRange is not a Range")
                return None, None, None
            low = reader.quantity(dose_range, "low", f"{prefix}doseRange.")
            high = reader.quantity(dose_range, "high", f"{prefix}doseRange.")
            return None, low, high
    return None, None, None


def _rate(holders: list[tuple[str, Any]], reader: Reader) -> Quantity | None:
    """A pump or infusion rate as amount per time (see ``DosageInstruction``).

    R4 keeps it in ``doseAndRate`` (the ordered entry first); STU3 and DSTU2 on the dosage.
    """
    for prefix, holder in holders:
        if get(holder, "rateQuantity") is not None:
            return reader.quantity(holder, "rateQuantity", prefix)
        if get(holder, "rateRatio") is not None:
            ratio = reader.ratio(holder, "rateRatio", prefix)
            return None if ratio is None else _per_time(ratio)
        rate_range = get(holder, "rateRange")
        if rate_range is not None:
            if not is_node(rate_range):
                reader.problem(f"{prefix}rateRange is not a Range")
                return None
            where = f"{prefix}rateRange."
            return reader.quantity(rate_range, "high", where) or reader.quantity(
                rate_range, "low", where
            )
    return None


def _per_time(ratio: Ratio) -> Quantity:
    """``400 ug / 1 d`` as 400 "ug/d"; ``400 ug / 24 h`` as 400 "ug/(24.h)" (UCUM), exactly."""
    numerator, denominator = ratio.numerator, ratio.denominator
    count = denominator.value
    per = "" if count == 1 else f"{int(count) if count == int(count) else count!r}."

    def joined(top: str | None, bottom: str | None) -> str | None:
        if not top or not bottom:
            return None
        return f"{top}/{bottom}" if not per else f"{top}/({per}{bottom})"

    return Quantity(
        value=numerator.value,
        unit=joined(numerator.unit, denominator.unit),
        code=joined(numerator.code, denominator.code),
        system=numerator.system if numerator.system == denominator.system else None,
    )


def _holders(node: Any, path: str, reader: Reader) -> list[tuple[str, Any]]:
    """Where a dose or rate may be: R4 ``doseAndRate`` entries (the ordered entry first),
    then the dosage itself (STU3 and DSTU2)."""
    holders = [
        (f"{item_path}.", item) for item_path, item in reader.items(node, "doseAndRate", path)
    ]
    holders.sort(key=lambda holder: not _is_ordered(holder[1]))
    holders.append((path, node))
    return holders


def _is_ordered(dose_and_rate: Any) -> bool:
    kind = get(dose_and_rate, "type")
    codings = get(kind, "coding") if is_node(kind) else None
    return any(is_node(c) and get(c, "code") == "ordered" for c in codings or ())


def _timing(node: Any, path: str, reader: Reader) -> Timing | None:
    timing = get(node, "timing")
    if timing is None:
        return None
    where = f"{path}timing."
    if not is_node(timing):
        reader.problem(f"{path}timing is not a Timing")
        return None
    code = reader.concept(timing, "code", where)
    repeat = get(timing, "repeat")
    if repeat is None:
        return Timing(code=code) if code is not None else None
    if not is_node(repeat):
        reader.problem(f"{where}repeat is not an object")
        return Timing(code=code)
    where = f"{where}repeat."
    unit_key = "periodUnits" if get(repeat, "periodUnits") is not None else "periodUnit"
    bounds = get(repeat, "boundsPeriod")
    return Timing(
        frequency=reader.integer(repeat, "frequency", where),
        frequency_max=reader.integer(repeat, "frequencyMax", where),
        period=reader.number(repeat, "period", where),
        period_max=reader.number(repeat, "periodMax", where),
        period_unit=reader.text(repeat, unit_key, where),
        when=_when(repeat, where, reader),
        code=code,
        count=reader.integer(repeat, "count", where),
        bounds_start=reader.date_text(bounds, "start", f"{where}boundsPeriod."),
        bounds_end=reader.date_text(bounds, "end", f"{where}boundsPeriod."),
    )


def _when(repeat: Any, where: str, reader: Reader) -> tuple[str, ...]:
    """STU3/R4 ``when`` is a list of codes; DSTU2 has a single code."""
    value = get(repeat, "when")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    reader.problem(f"{where}when is not a list of codes")
    return ()


class _Irregular(Exception):
    """Raised by the one-pass dosage readers on anything the careful reader would question."""


def _regular_dosage(node: Any) -> DosageInstruction | None:
    """A well-formed dosage read in one pass, or None: read it with ``_careful_dosage``.

    The draft's dosage is read on every hook call, nearly always from a validated model,
    so it skips the element-path bookkeeping and the generic ``get`` (which, for the
    elements of another FHIR version, pays for pydantic's failed attribute lookups).
    Anything the careful reader would record a problem for, or that is merely unusual
    (a lone object for a list, a tuple, a Mapping), is declined. The result is the same
    as ``_careful_dosage``'s.
    """
    try:
        fields = _fields(node)
        holders = _regular_holders(fields)
        dose, low, high = _regular_dose(holders)
        as_needed = fields.get("asNeededBoolean")
        if as_needed is not None and not isinstance(as_needed, bool):
            raise _Irregular
        return DosageInstruction(
            text=_text(fields.get("text")),
            sequence=_integer(fields.get("sequence")),
            dose=dose,
            dose_range_low=low,
            dose_range_high=high,
            timing=_regular_timing(fields.get("timing")),
            as_needed=bool(as_needed) or fields.get("asNeededCodeableConcept") is not None,
            max_dose_per_period=_ratio(fields.get("maxDosePerPeriod")),
            max_dose_per_administration=_quantity(fields.get("maxDosePerAdministration")),
            route=_concept(fields.get("route")),
            rate=_regular_rate(holders),
        )
    except _Irregular:
        return None


def _fields(node: Any) -> Mapping[str, Any]:
    """The elements of a JSON object, or of a validated model (its field values by name:
    what ``get`` finds, without a failed attribute lookup for an absent element)."""
    if type(node) is dict:
        return node
    if isinstance(node, BaseModel):
        return node.__dict__
    raise _Irregular


def _regular_holders(dosage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """As ``_holders``: the ``doseAndRate`` entries (the ordered entry first), then the dosage."""
    entries = dosage.get("doseAndRate")
    if entries is None:
        return [dosage]
    if type(entries) is not list:
        raise _Irregular
    holders = [_fields(entry) for entry in entries]
    holders.sort(key=lambda holder: not _regular_is_ordered(holder))
    holders.append(dosage)
    return holders


def _regular_is_ordered(dose_and_rate: Mapping[str, Any]) -> bool:
    kind = dose_and_rate.get("type")
    if kind is None:
        return False
    codings = _fields(kind).get("coding")
    if codings is None:
        return False
    if type(codings) is not list:
        raise _Irregular
    return any(_fields(coding).get("code") == "ordered" for coding in codings)


def _regular_dose(
    holders: list[Mapping[str, Any]],
) -> tuple[Quantity | None, Quantity | None, Quantity | None]:
    for holder in holders:
        dose = holder.get("doseQuantity")
        if dose is not None:
            return _quantity(dose), None, None
        dose_range = holder.get("doseRange")
        if dose_range is not None:
            bounds = _fields(dose_range)
            return None, _quantity(bounds.get("low")), _quantity(bounds.get("high"))
    return None, None, None


def _regular_rate(holders: list[Mapping[str, Any]]) -> Quantity | None:
    for holder in holders:
        rate = holder.get("rateQuantity")
        if rate is not None:
            return _quantity(rate)
        ratio = holder.get("rateRatio")
        if ratio is not None:
            return _per_time(_required(_ratio(ratio)))
        rate_range = holder.get("rateRange")
        if rate_range is not None:
            bounds = _fields(rate_range)
            return _quantity(bounds.get("high")) or _quantity(bounds.get("low"))
    return None


def _regular_timing(timing: Any) -> Timing | None:
    if timing is None:
        return None
    fields = _fields(timing)
    code = _concept(fields.get("code"))
    repeat = fields.get("repeat")
    if repeat is None:
        return Timing(code=code) if code is not None else None
    repeat = _fields(repeat)
    unit = repeat.get("periodUnits")
    bounds = repeat.get("boundsPeriod")
    period = _fields(bounds) if bounds is not None else _EMPTY_FIELDS
    return Timing(
        frequency=_integer(repeat.get("frequency")),
        frequency_max=_integer(repeat.get("frequencyMax")),
        period=_number(repeat.get("period")),
        period_max=_number(repeat.get("periodMax")),
        period_unit=_text(repeat.get("periodUnit") if unit is None else unit),
        when=_regular_when(repeat.get("when")),
        code=code,
        count=_integer(repeat.get("count")),
        bounds_start=_date_text(period.get("start")),
        bounds_end=_date_text(period.get("end")),
    )


_EMPTY_FIELDS: Mapping[str, Any] = {}


def _regular_when(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if type(value) is list and all(isinstance(code, str) for code in value):
        return tuple(value)
    raise _Irregular


def _text(value: Any) -> str | None:
    """As ``Reader.text`` (and ``Reader.code``, which questions a number as a code)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    raise _Irregular


def _date_text(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, date) else _text(value)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    result = finite_number(value)
    if result is None:
        raise _Irregular
    return result


def _integer(value: Any) -> int | None:
    if value is None:
        return None
    number = _number(value)
    if number is not None and number.is_integer():
        return int(number)
    raise _Irregular


def _quantity(value: Any) -> Quantity | None:
    if value is None:
        return None
    quantity = regular_quantity(value)
    if quantity is None:
        raise _Irregular
    return quantity


def _ratio(value: Any) -> Ratio | None:
    if value is None:
        return None
    fields = _fields(value)
    return Ratio(
        numerator=_required(_quantity(fields.get("numerator"))),
        denominator=_required(_quantity(fields.get("denominator"))),
    )


def _concept(value: Any) -> Concept | None:
    if value is None:
        return None
    concept = regular_concept(value)
    if concept is IRREGULAR:
        raise _Irregular
    return concept  # type: ignore[return-value]


def _required(value: _T | None) -> _T:
    """An element the careful reader reports as missing when it is."""
    if value is None:
        raise _Irregular
    return value
