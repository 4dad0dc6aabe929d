"""The hook request body (order-select, order-sign, legacy medication-prescribe, patient-view)
as a HookRequest.

Two kinds of fault are kept apart. A malformed *request* (no hook, no patient, wrong
types) is refused with a 400 OperationOutcome, because answering it would mean guessing
what the EHR meant. A malformed *draft order* never fails the call: it becomes an order
with ``problems`` so the engine can say the dose could not be checked; refusing the call
would silence the service exactly when an order is odd.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from cds_hooks import fhir
from cds_hooks.discovery import PDDI_CACHE, PDDI_FILTER, PDDI_ITEMS, ServiceDefinition
from cds_hooks.errors import BadRequest
from cds_hooks.fhir.values import JSON_OBJECT, reference_parts
from cds_hooks.model import Concept, FhirAuthorization, FhirVersion, HookRequest, MedicationOrder

_HOOK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_UNKNOWN_ENTRY = "an entry of the draft orders could not be read as a FHIR resource"
_MAX_SALVAGED_TEXT = 200
_MEDICATION_KEYS = ("medicationCodeableConcept", "medicationReference", "dosageInstruction")


def parse_hook_request(body: Any, service: ServiceDefinition) -> HookRequest:
    """Validate the request envelope and normalise its draft orders.

    Unknown top-level keys (``user``, ``patient``, ``redirect``) are tolerated, and so is
    any ``extension`` but the PDDI-CDS configuration items (``_pddi_configuration``); for
    medication-prescribe the legacy top-level ``patient``/``user`` stand in for a missing
    ``patientId``/``userId``.
    """
    if not isinstance(body, JSON_OBJECT):
        raise BadRequest("The request body must be a JSON object.")
    _check_hook(body, service)
    hook_instance = _required_text(body, "hookInstance", "hookInstance")
    fhir_server = _optional_text(body, "fhirServer", "fhirServer")
    authorization = _authorization(body.get("fhirAuthorization"), fhir_server)
    context = body.get("context")
    if not isinstance(context, JSON_OBJECT):
        raise BadRequest("context is required and must be a JSON object.", expression="context")
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, JSON_OBJECT):
        raise BadRequest("prefetch must be a JSON object.", expression="prefetch")
    prefetch = prefetch or {}

    legacy = service.hook == "medication-prescribe"
    patient_id = _optional_text(context, "patientId", "context.patientId")
    if patient_id is None and legacy:
        patient_id = _legacy_patient(body)
    if not patient_id:
        raise BadRequest("context.patientId is required.", expression="context.patientId")
    user_id = _optional_text(context, "userId", "context.userId")
    if user_id is None:
        user_id = _legacy_user(context, body if legacy else {})

    # patient-view has no drafts: the active list, read with the snapshot, is what is judged.
    drafts, selected = ((), ()) if service.active_list else _orders(service.hook, context, prefetch)
    cache, filter_repeated = _pddi_configuration(body.get("extension"))
    return HookRequest(
        hook=service.hook,
        hook_instance=hook_instance,
        service_id=service.id,
        patient_id=patient_id,
        user_id=user_id,
        encounter_id=_optional_text(context, "encounterId", "context.encounterId"),
        fhir_server=fhir_server,
        fhir_authorization=authorization,
        draft_orders=drafts,
        selected=selected,
        prefetch=prefetch,
        active_list=service.active_list,
        cache_for_order_sign=cache and service.hook == "order-select",
        filter_repeated_alerts=filter_repeated and service.hook == "order-sign",
    )


def _pddi_configuration(extension: Any) -> tuple[bool, bool]:
    """The HL7 PDDI-CDS IG's request configuration items (``extension`` ->
    ``pddi-configuration-items``: an object of named booleans), as (cache for order-sign,
    filter out repeated alerts). Absent means false: by default nothing is suppressed (IG,
    CDS service specification). The IG's other items (``alert-non-serious``,
    ``show-evidence-support``) are not ours to honour and are ignored; a value of ours
    that is not a boolean is refused, since the EHR would believe it had been obeyed.
    """
    if not isinstance(extension, JSON_OBJECT):
        return False, False
    items = extension.get(PDDI_ITEMS)
    if items is None:
        return False, False
    path = f"extension.{PDDI_ITEMS}"
    if not isinstance(items, JSON_OBJECT):
        raise BadRequest(f"{path} must be an object of configuration items.", expression=path)
    flags = []
    for name in (PDDI_CACHE, PDDI_FILTER):
        value = items.get(name, False)
        if not isinstance(value, bool):
            raise BadRequest(f"{path}.{name} must be true or false.", expression=f"{path}.{name}")
        flags.append(value)
    return flags[0], flags[1]


def _check_hook(body: Mapping[str, Any], service: ServiceDefinition) -> None:
    hook = body.get("hook")
    if not isinstance(hook, str) or not hook:
        raise BadRequest("hook is required and must be a string.", expression="hook")
    if hook != service.hook:
        named = hook if _HOOK_NAME.match(hook) else "another hook"
        raise BadRequest(
            f"Service {service.id} answers the {service.hook} hook; this request is {named}.",
            expression="hook",
        )


def _required_text(node: Mapping[str, Any], key: str, path: str) -> str:
    value = _optional_text(node, key, path)
    if value is None:
        raise BadRequest(f"{path} is required.", expression=path)
    return value


def _optional_text(node: Mapping[str, Any], key: str, path: str) -> str | None:
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{path} must be a string.", expression=path)
    return value or None


def _authorization(value: Any, fhir_server: str | None) -> FhirAuthorization | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadRequest("fhirAuthorization must be a JSON object.", expression="fhirAuthorization")
    if fhir_server is None:
        raise BadRequest(
            "fhirServer is required when fhirAuthorization is sent.", expression="fhirServer"
        )
    expires_in = value.get("expires_in")
    if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int)):
        raise BadRequest(
            "fhirAuthorization.expires_in must be an integer.",
            expression="fhirAuthorization.expires_in",
        )
    return FhirAuthorization(
        access_token=_required_text(value, "access_token", "fhirAuthorization.access_token"),
        token_type=_optional_text(value, "token_type", "fhirAuthorization.token_type") or "Bearer",
        expires_in=expires_in,
        scope=_optional_text(value, "scope", "fhirAuthorization.scope"),
        subject=_optional_text(value, "subject", "fhirAuthorization.subject"),
        patient=_optional_text(value, "patient", "fhirAuthorization.patient"),
    )


def _legacy_patient(body: Mapping[str, Any]) -> str | None:
    patient = body.get("patient")
    if not isinstance(patient, str) or not patient:
        return None
    return patient.removeprefix("Patient/")


def _legacy_user(context: Mapping[str, Any], body: Mapping[str, Any]) -> str | None:
    """The 2018 sandbox sent ``context.user``; pre-1.0 clients a top-level ``user``."""
    for candidate in (context.get("user"), body.get("user")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _orders(
    hook: str, context: Mapping[str, Any], prefetch: Mapping[str, Any]
) -> tuple[tuple[MedicationOrder, ...], tuple[str, ...]]:
    if hook == "medication-prescribe":
        container = _draft_container(context, "medications")
    else:
        container = _draft_container(context, "draftOrders")
    selections = _selections(context) if hook == "order-select" else None

    entries = _entries(container)
    bundled = _MedicationIndex((container, *prefetch.values()))
    drafts: list[MedicationOrder] = []
    full_urls: dict[str, str] = {}
    for position, (resource, full_url) in enumerate(entries):
        order = _draft(resource, position, bundled)
        if order is None:
            continue
        drafts.append(order)
        if full_url:
            full_urls[full_url] = order.reference

    if selections is None:
        return tuple(drafts), tuple(order.reference for order in drafts)
    return tuple(drafts), _selected(selections, drafts, full_urls)


class _MedicationIndex(Mapping[str, Mapping[str, Any]]):
    """``fhir.medication_index`` of the drafts and prefetch, built on first lookup: most
    drafts name their drug inline, and walking every prefetched Bundle for nothing is
    a measurable share of a hook call."""

    def __init__(self, values: tuple[Any, ...]) -> None:
        self._values = values

    @cached_property
    def _index(self) -> dict[str, dict[str, Any]]:
        return fhir.medication_index(*self._values)

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _draft_container(context: Mapping[str, Any], key: str) -> Any:
    """The Bundle of drafts; a bare array or a lone resource is accepted too (both are
    unambiguous, and refusing them would leave the order unchecked)."""
    container = context.get(key)
    path = f"context.{key}"
    if container is None:
        raise BadRequest(f"{path} is required.", expression=path)
    if not isinstance(container, JSON_OBJECT | list):
        raise BadRequest(f"{path} must be a FHIR Bundle.", expression=path)
    return container


def _selections(context: Mapping[str, Any]) -> tuple[str, ...]:
    selections = context.get("selections")
    if selections is None:
        raise BadRequest("context.selections is required.", expression="context.selections")
    if not isinstance(selections, list) or not all(isinstance(s, str) for s in selections):
        raise BadRequest(
            "context.selections must be an array of references such as MedicationRequest/123.",
            expression="context.selections",
        )
    return tuple(selections)


def _entries(container: Any) -> list[tuple[Any, str | None]]:
    """Each draft as (resource, fullUrl); unreadable entries are kept so they get a problem."""
    if isinstance(container, list):
        return [(item, None) for item in container]
    if container.get("resourceType") != "Bundle" and "entry" not in container:
        return [(container, None)]
    items = container.get("entry")
    if items is None:
        return []
    entries: list[tuple[Any, str | None]] = []
    for item in items if isinstance(items, list) else [items]:
        resource = item.get("resource") if isinstance(item, JSON_OBJECT) else item
        full_url = item.get("fullUrl") if isinstance(item, JSON_OBJECT) else None
        entries.append((resource, full_url if isinstance(full_url, str) else None))
    return entries


def _draft(
    resource: Any, position: int, bundled: Mapping[str, Mapping[str, Any]]
) -> MedicationOrder | None:
    """A medication draft, a problem order for an unreadable entry, or None for other orders.

    Anything carrying medication elements is read as a medication order whatever its
    ``resourceType``; an entry that is only text keeps that text as the drug name, so a
    mangled baclofen draft still reaches the engine as baclofen.
    """
    if isinstance(resource, JSON_OBJECT):
        resource_type = resource.get("resourceType")
        if isinstance(resource_type, str) and resource_type in fhir.ORDER_TYPES:
            return fhir.medication_order(
                resource,
                contained_or_bundled=bundled,
                fallback_reference=f"{resource_type}/#{position}",
            )
        if any(key in resource for key in _MEDICATION_KEYS):
            return fhir.medication_order(
                resource,
                contained_or_bundled=bundled,
                fallback_reference=f"MedicationRequest/#{position}",
            )
        if isinstance(resource_type, str) and resource_type:
            return None
    salvaged = resource.strip()[:_MAX_SALVAGED_TEXT] if isinstance(resource, str) else ""
    return MedicationOrder(
        reference=f"MedicationRequest/#{position}",
        resource_type="MedicationRequest",
        fhir_version=FhirVersion.R4,
        medication=Concept(text=salvaged) if salvaged else None,
        problems=(_UNKNOWN_ENTRY,),
        raw=resource if isinstance(resource, Mapping) else {},
    )


def _selected(
    selections: tuple[str, ...], drafts: list[MedicationOrder], full_urls: Mapping[str, str]
) -> tuple[str, ...]:
    """Selections that name a draft, as ``Type/id``, by reference, fullUrl or bare id.

    A selection naming no draft is ignored; if none names a draft, nothing is evaluated.
    """
    by_id: dict[str, list[str]] = {}
    references = {order.reference for order in drafts}
    for reference in references:
        by_id.setdefault(reference.split("/", 1)[-1], []).append(reference)
    chosen: list[str] = []
    for selection in selections:
        matches: list[str] = []
        if selection in references:
            matches = [selection]
        elif selection in full_urls:
            matches = [full_urls[selection]]
        elif (parts := reference_parts(selection)) is not None and "/".join(parts) in references:
            matches = ["/".join(parts)]
        elif "/" not in selection:
            matches = by_id.get(selection, [])
        chosen.extend(m for m in matches if m not in chosen)
    return tuple(chosen)
