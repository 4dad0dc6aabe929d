"""What the client prefetched, read into one state per data kind (pure, no I/O).

CDS Hooks 2.0 lets each prefetch key be absent, ``null``, a resource, a searchset
Bundle (possibly paginated) or an OperationOutcome, and the legacy sandbox wraps every
value as ``{"resource": ..., "response": {"status": "200 OK"}}``. Clients also use keys
of their own (the sandbox captures send ``egfr`` and ``activeMeds``), so every
prefetched resource is pooled as well: a kind whose own key was not answered can still
use matching resources that arrived under another name.

A list is "none" only when the record said none. A Bundle that lost part of its answer
(its ``total`` exceeds its entries with no next page, an ``entry`` that is not a list,
entries that cannot be read, a batch entry that failed) is read for what it holds but
named as an ``Irregularity``, so the kind is fetched again or reported unavailable. A
Bundle whose ``self`` link shows a search for another patient, or with the client's
``{{...}}`` token left unreplaced, is not an answer at all: it counts as an absent key.
The same reading serves the pages fetched from the FHIR server (``fhir_client``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from itertools import chain
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from cds_hooks.fhir.values import JSON_OBJECT
from cds_hooks.model import DataKind

ERROR_SEVERITIES = frozenset({"error", "fatal"})
KINDS_BY_KEY = {kind.value: kind for kind in DataKind}
MAX_BUNDLE_DEPTH = 1
UNCOUNTED_SEARCH_MODES = frozenset({"include", "outcome"})
"""Entries a searchset's ``total`` does not count (FHIR R4 Bundle.total: matches only)."""
PATIENT_PARAMETERS = frozenset({"patient", "subject", "patient:Patient", "subject:Patient"})
KINDS_BY_TYPE: Mapping[str, tuple[DataKind, ...]] = {
    "Observation": (DataKind.RENAL_LABS, DataKind.WEIGHT),
    "MedicationRequest": (DataKind.MEDICATIONS,),
    "MedicationOrder": (DataKind.MEDICATIONS,),
    "Condition": (DataKind.CONDITIONS,),
}
"""The kinds a resource type can answer, for resources that came under a key of the
client's own naming."""


class PrefetchState(StrEnum):
    ABSENT = "absent"
    """Key not sent: the client chose not to (or could not) satisfy it (1.0 errors too)."""
    NULL = "null"
    """``null``: the client had no data, a completed search with zero results."""
    RESOURCES = "resources"
    """A resource or searchset Bundle (possibly empty)."""
    ERROR = "error"
    """An OperationOutcome, a failed response, a value we cannot read, or not an answer."""


class Irregularity(StrEnum):
    """Why an answer is not a whole list; short and free of identifiers, safe to log."""

    UNREADABLE = "unreadable"
    """A value or entry that is not a resource (not an object, no resource, no type)."""
    ENTRY_NOT_A_LIST = "entry_not_a_list"
    ENTRY_FAILED = "entry_failed"
    """A batch-response entry (or legacy wrapper) whose status is not 2xx or whose
    ``response.outcome`` is an error."""
    ERROR_OUTCOME = "error_outcome"
    """An error OperationOutcome, alone or among the entries."""
    TOTAL_EXCEEDS_ENTRIES = "total_exceeds_entries"
    """``total`` says more matched than the entries hold, and no next page says where."""
    NESTED_PAGE_MISSING = "nested_page_missing"
    """A search inside a batch-response has further pages."""
    NESTED_TOO_DEEP = "nested_too_deep"
    NOT_THIS_PATIENT = "not_this_patient"
    """The ``self`` link shows a search for another patient."""
    UNREPLACED_TEMPLATE = "unreplaced_template"
    """The ``self`` link still holds a ``{{`` prefetch token the client did not fill."""


NOT_AN_ANSWER = frozenset({Irregularity.NOT_THIS_PATIENT, Irregularity.UNREPLACED_TEMPLATE})


class Entry(NamedTuple):
    """One prefetched resource, with the Bundle ``fullUrl`` that references may use.

    A named tuple: every resource of a request becomes one, and a frozen dataclass costs
    several times as much to build.
    """

    resource: Mapping[str, Any]
    full_url: str | None = None

    @property
    def resource_type(self) -> str | None:
        value = self.resource.get("resourceType")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class PrefetchValue:
    state: PrefetchState
    entries: tuple[Entry, ...] = ()
    next_url: str | None = None
    problems: tuple[Irregularity, ...] = ()
    """Each irregularity met, once: the entries are then not the whole list."""
    total: int | None = None
    """A searchset's ``total``, when it gives a count."""
    matched: int = 0
    """Entries that ``total`` counts (search matches, not includes or outcomes)."""
    searched: str | None = None
    """The resource type the ``self`` link says was searched for."""

    @property
    def answered(self) -> bool:
        """The client gave a whole answer (data or "none"), so there is nothing to fetch."""
        return self.state in (PrefetchState.NULL, PrefetchState.RESOURCES) and not self.problems

    def with_problems(self, *problems: Irregularity) -> PrefetchValue:
        return replace(self, problems=_distinct((*self.problems, *problems)))


ABSENT = PrefetchValue(PrefetchState.ABSENT)
_entry = partial(tuple.__new__, Entry)
"""``Entry((resource, full_url))`` without the Python-level ``__new__`` that ``NamedTuple``
generates: every resource of a request becomes an Entry."""


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Per-kind states for our own keys plus every resource from every key, de-duplicated.

    ``doubtful``: kinds that an irregular value answered, under our key or the client's
    own (judged by the resource types it held or searched): resources of such a kind
    found in the pool are not a whole list.
    """

    by_kind: Mapping[DataKind, PrefetchValue]
    pool: tuple[Entry, ...]
    doubtful: frozenset[DataKind] = frozenset()

    def value(self, kind: DataKind) -> PrefetchValue:
        return self.by_kind.get(kind, ABSENT)


def read_prefetch(prefetch: Any, patient_id: str | None = None) -> Prefetch:
    """``patient_id``: the hook's patient, against which ``self`` links are checked."""
    if not isinstance(prefetch, JSON_OBJECT):
        return Prefetch(by_kind={}, pool=())
    by_kind: dict[DataKind, PrefetchValue] = {}
    values: list[PrefetchValue] = []
    doubtful: set[DataKind] = set()
    for key, raw in prefetch.items():
        value = read_value(raw, patient_id)
        values.append(value)
        kind = KINDS_BY_KEY.get(key)
        if kind is not None:
            by_kind[kind] = value
        if value.problems:
            doubtful.update(_kinds_answered(value))
            if kind is not None:
                doubtful.add(kind)
    return Prefetch(
        by_kind=by_kind,
        pool=dedupe(chain.from_iterable(v.entries for v in values)),
        doubtful=frozenset(doubtful),
    )


def _kinds_answered(value: PrefetchValue) -> Iterable[DataKind]:
    types = {e.resource_type for e in value.entries} | {value.searched}
    return chain.from_iterable(KINDS_BY_TYPE.get(t or "", ()) for t in types)


def read_value(raw: Any, patient_id: str | None = None) -> PrefetchValue:
    """One prefetch value, in whichever of the five (plus legacy) shapes it came."""
    if raw is None:
        return PrefetchValue(PrefetchState.NULL)
    if not isinstance(raw, JSON_OBJECT):
        return _failed(Irregularity.UNREADABLE)
    if "resourceType" not in raw and ("resource" in raw or "response" in raw):
        return _read_legacy(raw, patient_id)
    resource_type = raw.get("resourceType")
    if resource_type == "OperationOutcome":
        return _failed(Irregularity.ERROR_OUTCOME)
    if resource_type == "Bundle":
        return whole_search(read_bundle(raw, patient_id))
    if isinstance(resource_type, str):
        return PrefetchValue(PrefetchState.RESOURCES, (Entry(raw),))
    return _failed(Irregularity.UNREADABLE)


def _failed(problem: Irregularity) -> PrefetchValue:
    return PrefetchValue(PrefetchState.ERROR, problems=(problem,))


def _read_legacy(raw: Mapping[str, Any], patient_id: str | None) -> PrefetchValue:
    response = raw.get("response")
    status = response.get("status") if isinstance(response, JSON_OBJECT) else None
    if status is not None and not _succeeded(status):
        return _failed(Irregularity.ENTRY_FAILED)
    resource = raw.get("resource")
    if resource is None:
        return PrefetchValue(PrefetchState.NULL)
    return read_value(resource, patient_id)


def whole_search(value: PrefetchValue, matched_before: int = 0) -> PrefetchValue:
    """The last page read of a search: fewer matches than its ``total`` is a loss.

    ``matched_before``: matches on the pages read before this one.
    """
    total = value.total
    if value.next_url is None and total is not None and total > matched_before + value.matched:
        return value.with_problems(Irregularity.TOTAL_EXCEEDS_ENTRIES)
    return value


def read_bundle(
    bundle: Mapping[str, Any], patient_id: str | None = None, depth: int = 0
) -> PrefetchValue:
    """One page of a searchset (or a batch-response): its resources, ``next`` and problems.

    Warning-level outcomes (e.g. "unknown search parameter ignored") do not make the
    answer an error; an error or fatal issue does, though resources that came with it
    are kept for the pool. A batch-response Bundle holding searchset Bundles is read
    through (one level; deeper nesting is not FHIR anyone sends). Whether the page is
    short of its ``total`` is for the caller, who knows whether it is the last
    (``whole_search``).
    """
    self_url = _link(bundle, "self")
    searched = _searched_type(self_url)
    not_an_answer = _not_an_answer(self_url, patient_id)
    if not_an_answer is not None:
        return PrefetchValue(PrefetchState.ERROR, problems=(not_an_answer,), searched=searched)
    entries: list[Entry] = []
    problems: list[Irregularity] = []
    failed = False
    matched = 0
    raw_entries = bundle.get("entry")
    if raw_entries is not None and not isinstance(raw_entries, list):
        problems.append(Irregularity.ENTRY_NOT_A_LIST)
    for item in raw_entries if isinstance(raw_entries, list) else ():
        if not isinstance(item, JSON_OBJECT):
            problems.append(Irregularity.UNREADABLE)
            continue
        response = item.get("response")
        if response is not None and not _entry_succeeded(response):
            problems.append(Irregularity.ENTRY_FAILED)
            continue
        resource = item.get("resource")
        if not isinstance(resource, JSON_OBJECT):
            problems.append(Irregularity.UNREADABLE)
            continue
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            problems.append(Irregularity.UNREADABLE)
            continue
        if resource_type == "OperationOutcome":
            if is_error_outcome(resource):
                failed = True
                problems.append(Irregularity.ERROR_OUTCOME)
            continue
        if resource_type == "Bundle":
            if depth < MAX_BUNDLE_DEPTH:
                inner = read_bundle(resource, patient_id, depth + 1)
                if inner.next_url is not None:
                    inner = inner.with_problems(Irregularity.NESTED_PAGE_MISSING)
                inner = whole_search(inner)
                entries.extend(inner.entries)
                problems.extend(inner.problems)
                failed = failed or inner.state is PrefetchState.ERROR
            else:
                problems.append(Irregularity.NESTED_TOO_DEEP)
            continue
        search = item.get("search")
        mode = search.get("mode") if isinstance(search, JSON_OBJECT) else None
        if not (isinstance(mode, str) and mode in UNCOUNTED_SEARCH_MODES):
            matched += 1
        full_url = item.get("fullUrl")
        entries.append(_entry((resource, full_url if isinstance(full_url, str) else None)))
    total = bundle.get("total")
    return PrefetchValue(
        PrefetchState.ERROR if failed else PrefetchState.RESOURCES,
        tuple(entries),
        next_link(bundle),
        problems=_distinct(problems),
        total=total if type(total) is int and total >= 0 else None,
        matched=matched,
        searched=searched,
    )


def _distinct(problems: Iterable[Irregularity]) -> tuple[Irregularity, ...]:
    return tuple(dict.fromkeys(problems))


def _succeeded(status: Any) -> bool:
    """An HTTP status as a batch entry gives it ("200 OK", "201", 200): 2xx or not."""
    return str(status).strip().startswith("2")


def _entry_succeeded(response: Any) -> bool:
    """A batch-response entry's ``response``: a 2xx status and no error outcome."""
    if not isinstance(response, JSON_OBJECT) or not _succeeded(response.get("status")):
        return False
    outcome = response.get("outcome")
    return outcome is None or (
        isinstance(outcome, JSON_OBJECT)
        and outcome.get("resourceType") == "OperationOutcome"
        and not is_error_outcome(outcome)
    )


def _not_an_answer(self_url: str | None, patient_id: str | None) -> Irregularity | None:
    """Why the search a ``self`` link describes does not answer for this patient."""
    if self_url is None:
        return None
    if "{{" in self_url or "{{" in unquote(self_url):
        return Irregularity.UNREPLACED_TEMPLATE
    if patient_id is None:
        return None
    searched = searched_patients(self_url)
    if searched and not any(_names_patient(value, patient_id) for value in searched):
        return Irregularity.NOT_THIS_PATIENT
    return None


def searched_patients(url: str) -> list[str]:
    """The patient values a search URL names (``patient=``, ``subject=``, a compartment
    path ``Patient/{id}/...``); empty when it names none, so nothing can be said."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    values = [
        v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k in PATIENT_PARAMETERS
    ]
    segments = [unquote(s) for s in parts.path.split("/")]
    for index, segment in enumerate(segments[:-2]):
        if segment == "Patient":
            values.append(segments[index + 1])
    return values


def _names_patient(value: str, patient_id: str) -> bool:
    """``value`` (an id, ``Patient/id``, a full URL, or such a list joined by commas)
    includes this patient."""
    if _is_patient(value, patient_id):
        return True
    return any(_is_patient(part, patient_id) for part in value.split(","))


def _is_patient(value: str, patient_id: str) -> bool:
    value = value.strip()
    return value == patient_id or value.endswith(f"Patient/{patient_id}")


def _searched_type(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last or None


def is_error_outcome(outcome: Mapping[str, Any]) -> bool:
    issues = outcome.get("issue")
    if not isinstance(issues, list) or not issues:
        return True
    return any(
        isinstance(i, JSON_OBJECT) and str(i.get("severity")) in ERROR_SEVERITIES for i in issues
    )


def next_link(bundle: Mapping[str, Any]) -> str | None:
    return _link(bundle, "next")


def _link(bundle: Mapping[str, Any], relation: str) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, JSON_OBJECT) and link.get("relation") == relation:
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def dedupe(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """Drop repeats of the same ``Type/id`` (the same lab can arrive under two keys)."""
    seen: set[tuple[str, str]] = set()
    kept: list[Entry] = []
    for entry in entries:
        resource = entry.resource
        rid = resource.get("id")
        if isinstance(rid, str):
            resource_type = resource.get("resourceType")
            if isinstance(resource_type, str) and resource_type:
                key = (resource_type, rid)
                if key in seen:
                    continue
                seen.add(key)
        kept.append(entry)
    return tuple(kept)
