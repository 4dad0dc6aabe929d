"""What the client prefetched, read into one state per data kind (pure, no I/O).

CDS Hooks 2.0 lets each prefetch key be absent, ``null``, a resource, a searchset
Bundle (possibly paginated) or an OperationOutcome, and the legacy sandbox wraps every
value as ``{"resource": ..., "response": {"status": "200 OK"}}``. Clients also use keys
of their own (the sandbox captures send ``egfr`` and ``activeMeds``), so every
prefetched resource is pooled as well: a kind whose own key was not answered can still
use matching resources that arrived under another name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from itertools import chain
from typing import Any, NamedTuple

from cds_hooks.fhir.values import JSON_OBJECT
from cds_hooks.model import DataKind

ERROR_SEVERITIES = frozenset({"error", "fatal"})
KINDS_BY_KEY = {kind.value: kind for kind in DataKind}
MAX_BUNDLE_DEPTH = 1


class PrefetchState(StrEnum):
    ABSENT = "absent"
    """Key not sent: the client chose not to (or could not) satisfy it (1.0 errors too)."""
    NULL = "null"
    """``null``: the client had no data, a completed search with zero results."""
    RESOURCES = "resources"
    """A resource or searchset Bundle (possibly empty)."""
    ERROR = "error"
    """An OperationOutcome, a failed legacy response or a value we cannot read."""


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

    @property
    def answered(self) -> bool:
        """The client gave a usable answer (data or "none"), so there is nothing to fetch."""
        return self.state in (PrefetchState.NULL, PrefetchState.RESOURCES)


ABSENT = PrefetchValue(PrefetchState.ABSENT)
_entry = partial(tuple.__new__, Entry)
"""``Entry((resource, full_url))`` without the Python-level ``__new__`` that ``NamedTuple``
generates: every resource of a request becomes an Entry."""


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Per-kind states for our own keys plus every resource from every key, de-duplicated."""

    by_kind: Mapping[DataKind, PrefetchValue]
    pool: tuple[Entry, ...]

    def value(self, kind: DataKind) -> PrefetchValue:
        return self.by_kind.get(kind, ABSENT)


def read_prefetch(prefetch: Any) -> Prefetch:
    if not isinstance(prefetch, JSON_OBJECT):
        return Prefetch(by_kind={}, pool=())
    by_kind: dict[DataKind, PrefetchValue] = {}
    values: list[PrefetchValue] = []
    for key, raw in prefetch.items():
        value = read_value(raw)
        values.append(value)
        kind = KINDS_BY_KEY.get(key)
        if kind is not None:
            by_kind[kind] = value
    return Prefetch(by_kind=by_kind, pool=dedupe(chain.from_iterable(v.entries for v in values)))


def read_value(raw: Any) -> PrefetchValue:
    """One prefetch value, in whichever of the five (plus legacy) shapes it came."""
    if raw is None:
        return PrefetchValue(PrefetchState.NULL)
    if not isinstance(raw, JSON_OBJECT):
        return PrefetchValue(PrefetchState.ERROR)
    if "resourceType" not in raw and ("resource" in raw or "response" in raw):
        return _read_legacy(raw)
    resource_type = raw.get("resourceType")
    if resource_type == "OperationOutcome":
        return PrefetchValue(PrefetchState.ERROR)
    if resource_type == "Bundle":
        return read_bundle(raw)
    if isinstance(resource_type, str):
        return PrefetchValue(PrefetchState.RESOURCES, (Entry(raw),))
    return PrefetchValue(PrefetchState.ERROR)


def _read_legacy(raw: Mapping[str, Any]) -> PrefetchValue:
    response = raw.get("response")
    status = response.get("status") if isinstance(response, JSON_OBJECT) else None
    if status is not None and not str(status).strip().startswith("2"):
        return PrefetchValue(PrefetchState.ERROR)
    resource = raw.get("resource")
    if resource is None:
        return PrefetchValue(PrefetchState.NULL)
    return read_value(resource)


def read_bundle(bundle: Mapping[str, Any], depth: int = 0) -> PrefetchValue:
    """A searchset Bundle: its resources, whether it carries an error outcome, and ``next``.

    Warning-level outcomes (e.g. "unknown search parameter ignored") do not make the
    answer an error; an error or fatal issue does, though resources that came with it
    are kept for the pool. A batch-response Bundle holding searchset Bundles is read
    through (one level; deeper nesting is not FHIR anyone sends).
    """
    entries: list[Entry] = []
    failed = False
    raw_entries = bundle.get("entry")
    for item in raw_entries if isinstance(raw_entries, list) else ():
        if not isinstance(item, JSON_OBJECT):
            continue
        resource = item.get("resource")
        if not isinstance(resource, JSON_OBJECT):
            continue
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            continue
        if resource_type == "OperationOutcome":
            failed = failed or is_error_outcome(resource)
            continue
        if resource_type == "Bundle":
            if depth < MAX_BUNDLE_DEPTH:
                inner = read_bundle(resource, depth + 1)
                entries.extend(inner.entries)
                failed = failed or inner.state is PrefetchState.ERROR
            continue
        full_url = item.get("fullUrl")
        entries.append(_entry((resource, full_url if isinstance(full_url, str) else None)))
    state = PrefetchState.ERROR if failed else PrefetchState.RESOURCES
    return PrefetchValue(state, tuple(entries), next_link(bundle))


def is_error_outcome(outcome: Mapping[str, Any]) -> bool:
    issues = outcome.get("issue")
    if not isinstance(issues, list) or not issues:
        return True
    return any(
        isinstance(i, JSON_OBJECT) and str(i.get("severity")) in ERROR_SEVERITIES for i in issues
    )


def next_link(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, JSON_OBJECT) and link.get("relation") == "next":
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
