"""Getting resources out of whatever container a client put them in.

Clients send a searchset Bundle, a bare resource, a plain array of resources (legacy
``medication-prescribe``) or a legacy prefetch wrapper ``{"resource": ..., "response":
...}``. Junk is skipped rather than fatal: one bad entry must not hide the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cds_hooks.fhir.values import JSON_OBJECT


def bundle_entries(value: Any) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Each resource (a shallow copy) with its ``fullUrl`` (None outside a Bundle)."""
    for resource, full_url in _entries(value):
        yield dict(resource), full_url


def _entries(value: Any) -> Iterator[tuple[Mapping[str, Any], str | None]]:
    """As ``bundle_entries`` without copying, for callers that only look."""
    if isinstance(value, list):
        for item in value:
            yield from _entries(item)
        return
    if not isinstance(value, JSON_OBJECT):
        return
    if "resourceType" not in value and isinstance(value.get("resource"), JSON_OBJECT):
        yield from _entries(value["resource"])
        return
    if value.get("resourceType") != "Bundle":
        if isinstance(value.get("resourceType"), str):
            yield value, None
        return
    entries = value.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, JSON_OBJECT):
            continue
        resource = entry.get("resource")
        if isinstance(resource, JSON_OBJECT) and isinstance(resource.get("resourceType"), str):
            full_url = entry.get("fullUrl")
            yield resource, full_url if isinstance(full_url, str) else None


def bundle_resources(value: Any) -> list[dict[str, Any]]:
    """The resources of a Bundle, or ``[value]`` for a bare resource; junk yields []."""
    return [resource for resource, _ in bundle_entries(value)]


def medication_index(*values: Any) -> dict[str, dict[str, Any]]:
    """Medication resources keyed by ``Medication/id`` and by ``fullUrl``."""
    index: dict[str, dict[str, Any]] = {}
    for value in values:
        for found, full_url in _entries(value):
            if found.get("resourceType") != "Medication":
                continue
            resource = dict(found)
            if isinstance(resource.get("id"), str) and resource["id"]:
                index[f"Medication/{resource['id']}"] = resource
            if full_url:
                index[full_url] = resource
    return index
