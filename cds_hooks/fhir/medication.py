"""Medication orders of every FHIR version (DSTU2 MedicationOrder, STU3/R4 MedicationRequest).

A draft order is the very thing the service checks, so reading it never fails: what
cannot be read is named in ``MedicationOrder.problems`` and whatever could be read (above
all the drug) is kept, so the engine can say "dose not computable" instead of staying
silent about a baclofen order it did not understand.

The order is always read from its JSON by ``Reader``; ``fhir.resources`` validation of
what the engine uses is the gate that decides whether the order is trusted as valid FHIR
(its failure is one more problem) and, when the shape does not tell, which version it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_hooks.fhir.values import (
    JSON_OBJECT,
    Reader,
    get,
    is_node,
    reference_parts,
)
from cds_hooks.fhir.versions import (
    medication_request_version,
    validate,
    validate_element,
)
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
_DRUG = "medicationCodeableConcept"
_GUESSED_VERSIONS = (FhirVersion.R4, FhirVersion.STU3)
"""The versions a MedicationRequest is validated against when its shape does not tell."""


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
    reads the drug alone: only the drug is validated (as a CodeableConcept, a fraction of
    the cost of the whole MedicationRequest) and dosage instructions are not read at all
    (``dosages`` stays empty).
    """
    if not isinstance(resource, JSON_OBJECT):
        return MedicationOrder(
            reference=fallback_reference or "MedicationRequest/#0",
            resource_type="MedicationRequest",
            fhir_version=FhirVersion.R4,
            problems=("the order is not a FHIR resource",),
        )
    reader = Reader()
    resource_type = resource.get("resourceType")
    if resource_type == "MedicationOrder":
        version = FhirVersion.DSTU2
    elif resource_type == "MedicationRequest":
        version = _validated_version(resource, reader, drug_only)
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
    medication, product = _medication(resource, contained_or_bundled, reader)
    dosages = (
        ()
        if drug_only
        else tuple(
            _dosage(item, f"{path}.", reader)
            for path, item in reader.items(resource, "dosageInstruction", "")
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
        authored_on=reader.date_text(resource, written, ""),
        prior_prescription=reader.reference(resource, "priorPrescription", ""),
        problems=tuple(reader.problems),
        raw=resource,
    )


def medication_concept(
    resource: Mapping[str, Any], contained_or_bundled: Mapping[str, Mapping[str, Any]] = _EMPTY
) -> Concept | None:
    """The drug an order names, read as ``medication_order`` reads it but unvalidated and
    without its problems: what a co-medication's relevance is decided on, before any of it
    is validated. None when the drug cannot be identified."""
    return _medication(resource, contained_or_bundled, Reader())[0]


def _validated_version(resource: Mapping[str, Any], reader: Reader, drug_only: bool) -> FhirVersion:
    """The version of a MedicationRequest, with a problem when what is read is not valid FHIR.

    A draft without a drug yet is incomplete by design, not malformed: it is not
    validated. With ``drug_only`` only the drug is (a ``medicationReference`` is not: the
    Medication it names is read as it is).
    """
    detected = medication_request_version(resource)
    if _DRUG not in resource and "medicationReference" not in resource:
        return detected or FhirVersion.R4
    versions = (detected,) if detected else _GUESSED_VERSIONS
    if drug_only:
        concept = resource.get(_DRUG)
        if not isinstance(concept, JSON_OBJECT):
            return detected or FhirVersion.R4
        outcome = validate_element(concept, "CodeableConcept", _DRUG, versions)
    else:
        outcome = validate(resource, versions)
    if outcome.model is None and outcome.failure:
        reader.problem(f"{outcome.failure}; read leniently")
    if drug_only or outcome.version is None:
        return detected or FhirVersion.R4
    return outcome.version


def _medication(
    resource: Mapping[str, Any],
    bundled: Mapping[str, Mapping[str, Any]],
    reader: Reader,
) -> tuple[Concept | None, MedicationProduct | None]:
    """The drug, from ``medicationCodeableConcept`` or else the Medication a
    ``medicationReference`` names (contained, bundled or prefetched)."""
    concept = reader.concept(resource, _DRUG, "")
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
