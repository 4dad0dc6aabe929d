"""Everything known about the patient for one hook call: prefetch first, the FHIR server second.

Rules, in the order they apply:
- a kind whose own prefetch key was answered (data, empty Bundle or ``null``) is not
  fetched; an absent key or an OperationOutcome is fetched from ``fhirServer`` when that
  server is allowlisted;
- resources prefetched under any key (clients use their own names) are pooled, so a kind
  is still known when its key was missing and the server could not be used;
- a kind known from none of these is listed in ``PatientSnapshot.unavailable`` so the
  engine says "unknown" rather than "normal"; a medication or condition list whose later
  pages could not be read counts as unavailable too (a missed opioid is a missed warning);
- without the Patient the service cannot judge age, so it answers 412 (CDS Hooks §412).

Raw resources are filtered cheaply before normalising, so a long medication list costs
little and a malformed resource that does not matter cannot fail the call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from cds_hooks import fhir
from cds_hooks.config import Settings
from cds_hooks.errors import PreconditionFailed
from cds_hooks.fhir_client import (
    FetchJob,
    FetchResult,
    check_fhir_server,
    fetch,
    host_of,
    search_url,
)
from cds_hooks.knowledge import observation_codes
from cds_hooks.knowledge.drugs import medication_of_interest
from cds_hooks.model import (
    LOINC,
    DataKind,
    FhirVersion,
    HookRequest,
    MedicationOrder,
    Patient,
    PatientSnapshot,
)
from cds_hooks.prefetch import (
    Entry,
    Prefetch,
    PrefetchState,
    PrefetchValue,
    dedupe,
    read_prefetch,
)

log = logging.getLogger(__name__)

PATIENT_UNOBTAINABLE = "Patient could not be obtained from prefetch or the FHIR server"
CLINICAL_KINDS = (
    DataKind.RENAL_LABS,
    DataKind.WEIGHT,
    DataKind.MEDICATIONS,
    DataKind.CONDITIONS,
)
PAGED_KINDS = frozenset({DataKind.MEDICATIONS, DataKind.CONDITIONS})
"""Kinds whose every page matters; lab searches are newest-first, so page one suffices."""
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationOrder"})
CURRENT_MEDICATION_STATUSES = frozenset({"active", "on-hold", "draft"})
VOID_STATUSES = frozenset({"entered-in-error", "cancelled"})
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([^/]+)(?:/_history/[^/]+)?$")

T = TypeVar("T")


def assemble_snapshot(request: HookRequest, settings: Settings) -> PatientSnapshot:
    prefetched = read_prefetch(request.prefetch)
    version = _fhir_version(request)
    patient = _prefetched_patient(prefetched, request.patient_id, version)

    results: dict[DataKind, FetchResult] = {}
    base = _usable_server(request, settings)
    if base is not None:
        jobs = _fetch_jobs(prefetched, base, request.patient_id, version, patient is None)
        auth = request.fhir_authorization
        results = fetch(base, auth.access_token if auth else None, jobs, settings)

    if patient is None:
        patient = _fetched_patient(results.get(DataKind.PATIENT), request.patient_id, version)
    if patient is None:
        raise PreconditionFailed(PATIENT_UNOBTAINABLE)

    fetched = [e for r in results.values() if r.ok for e in r.entries]
    entries = _for_patient(dedupe([*prefetched.pool, *fetched]), request.patient_id)
    by_kind = _by_kind(entries)
    unavailable = frozenset(
        kind
        for kind in CLINICAL_KINDS
        if not _available(kind, prefetched.value(kind), results.get(kind), bool(by_kind[kind]))
    )
    return PatientSnapshot(
        patient=patient,
        observations=tuple(
            _normalise(
                lambda r: fhir.observation(r, version),
                by_kind[DataKind.RENAL_LABS] + by_kind[DataKind.WEIGHT],
            )
        ),
        medications=tuple(_medications(by_kind[DataKind.MEDICATIONS], entries, request)),
        conditions=tuple(
            _normalise(lambda r: fhir.condition(r, version), by_kind[DataKind.CONDITIONS])
        ),
        unavailable=unavailable,
    )


def _fetch_jobs(
    prefetched: Prefetch,
    base: str,
    patient_id: str,
    version: FhirVersion | None,
    need_patient: bool,
) -> list[FetchJob]:
    """Searches for kinds the client did not answer, and the rest of paginated answers.

    A ``null`` patient means the client has no such patient: nothing to fetch.
    """
    jobs: list[FetchJob] = []
    if need_patient and prefetched.value(DataKind.PATIENT).state is not PrefetchState.NULL:
        jobs.append(
            FetchJob(DataKind.PATIENT, search_url(base, DataKind.PATIENT, patient_id, version))
        )
    for kind in CLINICAL_KINDS:
        value = prefetched.value(kind)
        paged = kind in PAGED_KINDS
        if not value.answered:
            url = search_url(base, kind, patient_id, version)
            jobs.append(FetchJob(kind, url, follow_next=paged))
        elif value.next_url and paged:
            jobs.append(FetchJob(kind, value.next_url, follow_next=True))
    return jobs


def _by_kind(entries: list[Entry]) -> dict[DataKind, list[Entry]]:
    codes = observation_codes()
    renal, weight = frozenset(codes.renal), frozenset(codes.body_weight)
    return {
        DataKind.RENAL_LABS: [e for e in entries if _observation_with_code(e, renal)],
        DataKind.WEIGHT: [e for e in entries if _observation_with_code(e, weight)],
        DataKind.MEDICATIONS: [e for e in entries if e.resource_type in MEDICATION_TYPES],
        DataKind.CONDITIONS: [e for e in entries if e.resource_type == "Condition"],
    }


def _available(
    kind: DataKind, value: PrefetchValue, result: FetchResult | None, found: bool
) -> bool:
    fetched_ok = result is not None and result.ok
    if not (value.answered or fetched_ok or found):
        return False
    return kind not in PAGED_KINDS or _complete(value.next_url, result)


def _complete(prefetch_next: str | None, result: FetchResult | None) -> bool:
    """False when a page of the list is known to exist but could not be read."""
    if result is not None and result.ok:
        return result.complete
    return prefetch_next is None


def _fhir_version(request: HookRequest) -> FhirVersion | None:
    """The drafts tell us which FHIR version the EHR speaks; None lets the readers guess."""
    for order in request.draft_orders:
        return order.fhir_version
    return None


def _usable_server(request: HookRequest, settings: Settings) -> str | None:
    if not request.fhir_server:
        return None
    reason = check_fhir_server(request.fhir_server, settings)
    if reason is not None:
        log.warning(
            "fhirServer not used: %s",
            reason,
            extra={"host": host_of(request.fhir_server), "reason": reason},
        )
        return None
    return request.fhir_server


def _prefetched_patient(
    prefetched: Prefetch, patient_id: str, version: FhirVersion | None
) -> Patient | None:
    own = prefetched.value(DataKind.PATIENT)
    for entry in own.entries:
        if entry.resource_type == "Patient" and entry.resource.get("id") in (None, patient_id):
            found = _patient({**entry.resource, "id": patient_id}, version)
            if found is not None:
                return found
    for entry in prefetched.pool:
        if entry.resource_type == "Patient" and entry.resource.get("id") == patient_id:
            found = _patient(entry.resource, version)
            if found is not None:
                return found
    return None


def _fetched_patient(
    result: FetchResult | None, patient_id: str, version: FhirVersion | None
) -> Patient | None:
    if result is None or not result.ok:
        return None
    for entry in result.entries:
        if entry.resource.get("id") == patient_id:
            return _patient(entry.resource, version)
    return None


def _patient(resource: Mapping[str, Any], version: FhirVersion | None) -> Patient | None:
    return _safely(lambda r: fhir.patient(r, version), resource)


def _for_patient(entries: Iterable[Entry], patient_id: str) -> list[Entry]:
    """Drop resources that name another patient (a client bug must not mix two charts)."""
    kept = []
    for entry in entries:
        other = _referenced_patient(entry.resource)
        if other is None or other == patient_id:
            kept.append(entry)
    return kept


def _referenced_patient(resource: Mapping[str, Any]) -> str | None:
    for field_name in ("subject", "patient"):
        ref = resource.get(field_name)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            match = _PATIENT_REFERENCE.search(ref["reference"])
            return match.group(1) if match else None
    return None


def _observation_with_code(entry: Entry, codes: frozenset[str]) -> bool:
    resource = entry.resource
    if entry.resource_type != "Observation" or _text(resource, "status") in VOID_STATUSES:
        return False
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    return any(
        isinstance(c, Mapping) and c.get("system") == LOINC and _text(c, "code") in codes
        for c in (codings if isinstance(codings, list) else ())
    )


def _medications(
    candidates: list[Entry], entries: list[Entry], request: HookRequest
) -> Iterable[MedicationOrder]:
    """Current medications other than this hook's drafts; only those that may matter."""
    drafts = {order.reference for order in request.draft_orders}
    bundled = _bundled_medications(entries)
    for entry in candidates:
        resource = entry.resource
        if _text(resource, "status") not in CURRENT_MEDICATION_STATUSES:
            continue
        if f"{entry.resource_type}/{resource.get('id')}" in drafts:
            continue
        view = _coded_view(resource, bundled)
        if view is not None and _safely(medication_of_interest, view) is False:
            continue
        order = _safely(lambda r: fhir.medication_order(r, contained_or_bundled=bundled), resource)
        if order is not None:
            yield order


def _text(node: Mapping[str, Any], key: str) -> str | None:
    """A string field, or None (a list where a code belongs must not raise)."""
    value = node.get(key)
    return value if isinstance(value, str) else None


def _coded_view(
    resource: Mapping[str, Any], bundled: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The order with its drug as a code, for the cheap relevance check.

    A ``medicationReference`` is resolved (contained or bundled Medication); when it
    cannot be, None: the drug is unknown, so the order is normalised rather than dropped.
    """
    if "medicationCodeableConcept" in resource or "medicationReference" not in resource:
        return resource
    link = resource.get("medicationReference")
    reference = link.get("reference") if isinstance(link, Mapping) else None
    if not isinstance(reference, str):
        return None
    target = bundled.get(reference)
    if target is None and reference.startswith("#"):
        contained = resource.get("contained")
        target = next(
            (
                item
                for item in (contained if isinstance(contained, list) else ())
                if isinstance(item, Mapping) and item.get("id") == reference[1:]
            ),
            None,
        )
    code = target.get("code") if isinstance(target, Mapping) else None
    if not isinstance(code, Mapping):
        return None
    return {**resource, "medicationCodeableConcept": code}


def _bundled_medications(entries: Iterable[Entry]) -> dict[str, Mapping[str, Any]]:
    """Medication resources by every reference form a medicationReference may use."""
    found: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        if entry.resource_type != "Medication":
            continue
        rid = entry.resource.get("id")
        if isinstance(rid, str):
            found[f"Medication/{rid}"] = entry.resource
        if entry.full_url:
            found[entry.full_url] = entry.resource
    return found


def _normalise(
    normaliser: Callable[[Mapping[str, Any]], T | None], entries: Iterable[Entry]
) -> Iterable[T]:
    for entry in entries:
        value = _safely(normaliser, entry.resource)
        if value is not None:
            yield value


def _safely(function: Callable[[Mapping[str, Any]], T], resource: Mapping[str, Any]) -> T | None:
    """One malformed resource is skipped and logged by type, never fails the call."""
    try:
        return function(resource)
    except Exception as exc:
        log.warning(
            "prefetched resource skipped",
            extra={"resource_type": resource.get("resourceType"), "error": type(exc).__name__},
        )
        return None
