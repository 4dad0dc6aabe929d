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
- without the Patient the service cannot judge age, so it answers 412 (CDS Hooks §412);
- for ``patient-view`` (``HookRequest.active_list``) there is no snapshot at all, and so no
  card, when no current order on the list could be baclofen: that hook fires on every chart
  opened, and almost every patient takes none. The list is triaged first, by code and name
  as below, and unless the medication list must still be fetched nothing else of the
  request is read (not even the Patient); an order whose drug cannot be identified could
  be baclofen, so it never makes the call silent on its own.

Validating FHIR costs far more than the rest of a hook call, so the raw JSON is sorted
in one pass and triaged first; only what the engine will use is validated and
normalised: the labs ``engine.renal.lab_kinds`` says the engine reads (the newest usable
lab of each kind with its day, and the creatinines of the acute kidney injury window
before it: ``_observations``), medications that could be baclofen (the whole order) or an
interacting drug (its drug alone, the only element the engine reads of it), and
conditions that could raise a flag. A long medication list or lab history then costs
little, and a malformed resource that does not matter can neither fail the call nor
slow it. Current orders whose drug cannot be identified are
counted, never dropped in silence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache, lru_cache
from typing import Any, TypeVar

from cds_hooks import fhir
from cds_hooks.config import Settings
from cds_hooks.engine.renal import LabKind, lab_kinds
from cds_hooks.errors import PreconditionFailed
from cds_hooks.fhir.values import JSON_OBJECT, Reader
from cds_hooks.fhir_client import (
    NOTHING_FETCHED,
    FetchJob,
    FetchResult,
    check_fhir_server,
    fetch,
    reference_read,
    search_url,
)
from cds_hooks.knowledge import observation_codes
from cds_hooks.knowledge.conditions import condition_index
from cds_hooks.knowledge.drugs import triage_medication
from cds_hooks.memo import MEMO_SIZE
from cds_hooks.model import (
    LOINC,
    DataKind,
    FhirVersion,
    HookRequest,
    MedicationOrder,
    Observation,
    Patient,
    PatientSnapshot,
)
from cds_hooks.network import host_of
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
MAX_MEDICATION_READS = 50
"""Medications read one by one per call at most: beyond that the EHR's server should
answer ``_include``, and what is left unresolved is counted on the cards."""
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationOrder"})
CURRENT_MEDICATION_STATUSES = frozenset({"active", "on-hold", "draft"})
VOID_STATUSES = frozenset({"entered-in-error", "cancelled"})
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([^/]+)(?:/_history/[^/]+)?$")

T = TypeVar("T")


@cache
def _lab_code_sets() -> tuple[frozenset[str], frozenset[str]]:
    """Renal and body-weight LOINC codes (the knowledge files are read once per process)."""
    codes = observation_codes()
    return frozenset(codes.renal), frozenset(codes.body_weight)


def assemble_snapshot(request: HookRequest, settings: Settings) -> PatientSnapshot | None:
    """The snapshot; None only for an active-list hook when no current order could be
    baclofen (the module docstring)."""
    prefetched = read_prefetch(request.prefetch, request.patient_id)
    pool = _sort_pool(prefetched.pool, request.patient_id)
    if (
        request.active_list
        and not _medications_to_fetch(prefetched, request)
        and not _could_be_on_baclofen(pool)
    ):
        return None
    version = _fhir_version(request)
    patient = _prefetched_patient(prefetched, request.patient_id)

    answers = NOTHING_FETCHED
    if request.fhir_server:
        base = request.fhir_server
        reads = _MedicationReads(base)
        jobs = _fetch_jobs(prefetched, base, request.patient_id, version, patient is None)
        jobs += reads.jobs(prefetched.pool)
        # The server is vetted only when something must be fetched: a complete prefetch
        # naming a server we may not call is the usual case, not worth a warning.
        if jobs and _usable_server(base, settings):
            auth = request.fhir_authorization
            token = auth.access_token if auth else None
            answers = fetch(base, token, jobs, settings, request.patient_id, reads.follow_up)
    results = answers.by_kind
    fetched = answers.entries()
    if fetched:
        pool = _sort_pool(dedupe([*prefetched.pool, *fetched]), request.patient_id)
    if request.active_list and not _could_be_on_baclofen(pool):
        return None

    if patient is None:
        patient = _fetched_patient(results.get(DataKind.PATIENT), request.patient_id)
    if patient is None:
        raise PreconditionFailed(PATIENT_UNOBTAINABLE)
    renal, weight = _lab_code_sets()
    found = {
        DataKind.RENAL_LABS: any(not codes.isdisjoint(renal) for _, codes in pool.labs),
        DataKind.WEIGHT: any(not codes.isdisjoint(weight) for _, codes in pool.labs),
        DataKind.MEDICATIONS: bool(pool.medications),
        DataKind.CONDITIONS: bool(pool.conditions),
    }
    unavailable = frozenset(
        kind
        for kind in CLINICAL_KINDS
        if not _available(
            kind,
            prefetched.value(kind),
            results.get(kind),
            found[kind] and kind not in prefetched.doubtful,
        )
    )
    medications, unidentified = _medications(pool, request)
    return PatientSnapshot(
        patient=patient,
        observations=_observations(pool.labs),
        medications=tuple(medications),
        unidentified_medications=unidentified,
        conditions=tuple(
            _normalise(
                fhir.condition,
                (e for e in pool.conditions if _may_raise_flag(e.resource)),
            )
        ),
        unavailable=unavailable,
    )


def _medications_to_fetch(prefetched: Prefetch, request: HookRequest) -> bool:
    """Would the FHIR server be asked for the medication list (or its further pages)?"""
    value = prefetched.value(DataKind.MEDICATIONS)
    return request.fhir_server is not None and (not value.answered or value.next_url is not None)


def _could_be_on_baclofen(pool: _Pool) -> bool:
    """Could any current order of the pool be baclofen? Triage by code and name
    (``triage_medication``), as ``_medications`` does; a drug that cannot be identified
    could be."""
    bundled = pool.bundled
    for entry in pool.medications:
        status = entry.resource.get("status")
        if not isinstance(status, str) or status not in CURRENT_MEDICATION_STATUSES:
            continue
        try:
            drug = fhir.medication_concept(entry.resource, bundled)
        except Exception:
            return True  # unreadable: judged (and logged) by the full reading
        if triage_medication(drug).could_be_baclofen:
            return True
    return False


def _fetch_jobs(
    prefetched: Prefetch,
    base: str,
    patient_id: str,
    version: FhirVersion | None,
    need_patient: bool,
) -> list[FetchJob]:
    """Searches for kinds the client did not answer whole, and the rest of paginated answers.

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
            jobs.append(
                FetchJob(kind, value.next_url, follow_next=True, matched_before=value.matched)
            )
    return jobs


class _MedicationReads:
    """Reads of the Medications that current orders name by reference and nothing at hand
    holds (not contained, not among the Medications prefetched or fetched), so an opioid
    written as a reference is still seen. Asked for the prefetched orders at the start,
    and for fetched ones as their search ends (servers that ignore ``_include``).
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.at_hand: set[str] = set()
        """References resolvable from what arrived, or already asked for."""
        self.budget = MAX_MEDICATION_READS

    def jobs(self, entries: Iterable[Entry]) -> list[FetchJob]:
        orders: list[Mapping[str, Any]] = []
        for entry in entries:
            resource = entry.resource
            if entry.resource_type == "Medication":
                rid = resource.get("id")
                self.at_hand.update(k for k in (f"Medication/{rid}", entry.full_url) if k)
            elif entry.resource_type in MEDICATION_TYPES:
                orders.append(resource)
        jobs: list[FetchJob] = []
        for order in orders:
            status = order.get("status")
            link = order.get("medicationReference")
            reference = link.get("reference") if isinstance(link, JSON_OBJECT) else None
            if not (isinstance(status, str) and status in CURRENT_MEDICATION_STATUSES):
                continue
            if not isinstance(reference, str) or reference in self.at_hand or not self.budget:
                continue
            job = reference_read(self.base, DataKind.MEDICATIONS, reference)
            if job is not None:
                self.at_hand.add(reference)
                self.budget -= 1
                jobs.append(job)
        return jobs

    def follow_up(self, job: FetchJob, result: FetchResult) -> list[FetchJob]:
        if job.kind is not DataKind.MEDICATIONS or job.reference is not None or not result.ok:
            return []
        return self.jobs(result.entries)


def _available(
    kind: DataKind, value: PrefetchValue, result: FetchResult | None, found: bool
) -> bool:
    """Known, and whole: a list with an irregularity, or (where every page matters) a
    page known to exist but not read, is not a list of the patient's data.

    ``found``: resources of the kind are in the pool and came from no irregular value.
    """
    if result is not None and result.ok:
        return not result.problems and (kind not in PAGED_KINDS or result.complete)
    if value.answered:
        return kind not in PAGED_KINDS or value.next_url is None
    return found


def _fhir_version(request: HookRequest) -> FhirVersion | None:
    """The drafts tell us which FHIR version the EHR speaks; None lets the readers guess."""
    for order in request.draft_orders:
        return order.fhir_version
    return None


def _usable_server(base: str, settings: Settings) -> bool:
    reason = check_fhir_server(base, settings)
    if reason is not None:
        log.warning(
            "fhirServer not used: %s", reason, extra={"host": host_of(base), "reason": reason}
        )
        return False
    return True


def _prefetched_patient(prefetched: Prefetch, patient_id: str) -> Patient | None:
    own = prefetched.value(DataKind.PATIENT)
    for entry in own.entries:
        if entry.resource_type == "Patient" and entry.resource.get("id") in (None, patient_id):
            found = _patient({**entry.resource, "id": patient_id})
            if found is not None:
                return found
    for entry in prefetched.pool:
        if entry.resource_type == "Patient" and entry.resource.get("id") == patient_id:
            found = _patient(entry.resource)
            if found is not None:
                return found
    return None


def _fetched_patient(result: FetchResult | None, patient_id: str) -> Patient | None:
    if result is None or not result.ok:
        return None
    for entry in result.entries:
        if entry.resource.get("id") == patient_id:
            return _patient(entry.resource)
    return None


def _patient(resource: Mapping[str, Any]) -> Patient | None:
    return _safely(fhir.patient, resource)


@dataclass(slots=True)
class _Pool:
    """The patient's pooled resources, sorted once by what they can be used for."""

    labs: list[tuple[Entry, frozenset[str]]] = field(default_factory=list)
    """Observations not void, with those of their LOINC codes the engine knows."""
    medications: list[Entry] = field(default_factory=list)
    conditions: list[Entry] = field(default_factory=list)
    bundled: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Medication resources by every reference form a medicationReference may use."""


def _sort_pool(entries: Iterable[Entry], patient_id: str) -> _Pool:
    """One pass over the pool; resources naming another patient are dropped (a client bug
    must not mix two charts)."""
    pool = _Pool()
    renal, weight = _lab_code_sets()
    known = renal | weight
    own = f"Patient/{patient_id}"
    for entry in entries:
        resource = entry.resource
        subject = resource.get("subject")
        # Nearly every resource names this very patient as its subject, as written here.
        if not (type(subject) is dict and subject.get("reference") == own):
            other = _referenced_patient(resource)
            if other is not None and other != patient_id:
                continue
        resource_type = resource.get("resourceType")
        if resource_type == "Observation":
            codes = _lab_codes(resource, known)
            if codes:
                pool.labs.append((entry, codes))
        elif resource_type in MEDICATION_TYPES:
            pool.medications.append(entry)
        elif resource_type == "Condition":
            pool.conditions.append(entry)
        elif resource_type == "Medication":
            rid = resource.get("id")
            if isinstance(rid, str):
                pool.bundled[f"Medication/{rid}"] = resource
            if entry.full_url:
                pool.bundled[entry.full_url] = resource
    return pool


def _lab_codes(resource: Mapping[str, Any], known: frozenset[str]) -> frozenset[str]:
    """The known LOINC codes of a raw Observation; none when it is void."""
    if _text(resource, "status") in VOID_STATUSES:
        return frozenset()
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, JSON_OBJECT) else None
    if not isinstance(codings, list):
        return frozenset()
    return frozenset(
        code
        for coding in codings
        if isinstance(coding, JSON_OBJECT)
        and coding.get("system") == LOINC
        and isinstance(code := coding.get("code"), str)
        and code in known
    )


def _referenced_patient(resource: Mapping[str, Any]) -> str | None:
    for field_name in ("subject", "patient"):
        ref = resource.get(field_name)
        if isinstance(ref, JSON_OBJECT) and isinstance(ref.get("reference"), str):
            match = _PATIENT_REFERENCE.search(ref["reference"])
            return match.group(1) if match else None
    return None


def _observations(labs: list[tuple[Entry, frozenset[str]]]) -> tuple[Observation, ...]:
    """The labs and weights the renal engine will use, read newest first; the rest unread.

    ``renal.assess`` takes, per kind (eGFR, CrCl, serum creatinine, body weight), the
    newest value it can use, chooses among the results of that value's day, and compares
    a creatinine with those of the days before it that ``LabKind.history_days`` names.
    Candidates are put in its order from the raw JSON (effective day newest first, then
    the preferred code, then list order) and read one by one until the engine would
    use one (status, value and unit it accepts); the rest of that day and of the history
    days is read too, and so is any lab whose date the JSON does not give plainly. So an
    old malformed lab costs nothing and cannot fail the call, and a newest lab too broken
    to use does not hide the next one.
    """
    # Every pooled lab has a code of at least one kind, so each one's day is needed.
    kinds = _lab_kinds()
    by_kind: tuple[list[tuple[int, int, int]], ...] = tuple([] for _ in kinds)
    for index, (entry, lab_codes) in enumerate(labs):
        day = -_day(entry).toordinal()
        for kind, rank in _kind_ranks(lab_codes):
            by_kind[kind].append((day, rank, index))
    read: dict[int, Observation | None] = {}
    for candidates, lab_kind in zip(by_kind, kinds, strict=True):
        candidates.sort()
        decides = lab_kind.decides
        # Days are those of each lab's own UTC offset while the engine compares instants:
        # one more day covers any offset.
        history = lab_kind.history_days + 1 if lab_kind.history_days else 0
        oldest: int | None = None
        for day, _rank, index in candidates:
            if oldest is not None and day > oldest and day != _UNDATED:
                continue
            if index in read:
                found = read[index]
            else:
                # _safely written out: it runs for every lab read.
                resource = labs[index][0].resource
                try:
                    found = fhir.observation(resource)
                except Exception as exc:
                    _skipped(resource, exc)
                    found = None
                read[index] = found
            if oldest is None and found is not None and decides(found):
                oldest = day + history  # days are negated ordinals: older is larger
    return tuple(found for _, found in sorted(read.items()) if found is not None)


_UNDATED = -date.min.toordinal()


@lru_cache(maxsize=MEMO_SIZE)
def _kind_ranks(lab_codes: frozenset[str]) -> tuple[tuple[int, int], ...]:
    """Each kind of lab (its index in ``_lab_kinds``) that a lab with these codes is, with
    the preference rank of its best code for that kind."""
    return tuple(
        (kind, min(ranks[code] for code in lab_codes if code in ranks))
        for kind, ranks in enumerate(lab.ranks for lab in _lab_kinds())
        if not lab_codes.isdisjoint(ranks)
    )


@cache
def _lab_kinds() -> tuple[LabKind, ...]:
    return lab_kinds(observation_codes())


def _day(entry: Entry) -> date:
    effective = fhir.observation_effective(entry.resource)
    return effective.date() if effective else date.min


def _may_raise_flag(resource: Mapping[str, Any]) -> bool:
    """Could this raw Condition raise a condition flag? Only those are worth validating."""
    concept = Reader().concept(resource, "code", "")
    return concept is not None and condition_index().may_flag(concept)


def _medications(pool: _Pool, request: HookRequest) -> tuple[list[MedicationOrder], int]:
    """Current medications other than this hook's drafts that may matter, and how many
    current orders name a drug that cannot be identified (no code, no name, or a
    ``medicationReference`` to a Medication found nowhere): those are counted, never
    dropped in silence, as one of them may be the opioid that makes a combination deadly.

    Each order's drug is read first and triaged; of a drug that cannot be baclofen the
    engine reads only the drug, so only that is validated.
    """
    drafts = {order.reference for order in request.draft_orders}
    bundled = pool.bundled
    orders: list[MedicationOrder] = []
    unidentified = 0
    for entry in pool.medications:
        resource = entry.resource
        status = resource.get("status")
        if not isinstance(status, str) or status not in CURRENT_MEDICATION_STATUSES:
            continue
        # Pooled orders have a MedicationRequest or MedicationOrder resourceType. A draft
        # of this hook listed again is left out; the active version of a drafted order is
        # kept, as an EHR may send a stop or a new dose as that order itself (same id).
        if (
            status == "draft"
            and drafts
            and f"{resource['resourceType']}/{resource.get('id')}" in drafts
        ):
            continue
        # _safely written out: this loop runs for every current order of the list.
        try:
            drug = fhir.medication_concept(resource, bundled)
            if drug is None:
                unidentified += 1
                continue
            triage = triage_medication(drug)
            if not triage.of_interest:
                continue
            orders.append(
                fhir.medication_order(
                    resource, contained_or_bundled=bundled, drug_only=not triage.could_be_baclofen
                )
            )
        except Exception as exc:
            _skipped(resource, exc)
            unidentified += 1
    return orders, unidentified


def _text(node: Mapping[str, Any], key: str) -> str | None:
    """A string field, or None (a list where a code belongs must not raise)."""
    value = node.get(key)
    return value if isinstance(value, str) else None


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
        _skipped(resource, exc)
        return None


def _skipped(resource: Mapping[str, Any], exc: Exception) -> None:
    log.warning(
        "prefetched resource skipped",
        extra={"resource_type": resource.get("resourceType"), "error": type(exc).__name__},
    )
