"""Build ``data/order-sign-lean-prefetch.json``: the benchmark request at the issue's size.

Issue 2 sets its speed target for a full-prefetch ``order-sign`` request of about 17 kB;
``data/order-sign-full-prefetch.json`` holds the same resources as Synthea and HL7 write
them, 30.9 kB. This removes from every prefetched resource the elements the service
never reads (narrative, identifiers, contact details, references to the encounter and
requester, categories and the like) and the bundles' ``search`` and ``fullUrl``, which
gives 17.9 kB and the same cards. The draft orders are left as they are.

A smaller body is not kinder to us: the bare app's whole cost is parsing it, ours is
mostly per resource, so the ratio falls (see README.md).

Run: ``python benchmarks/lean_request.py`` (reads and writes files in ``data/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "data" / "order-sign-full-prefetch.json"
OUT = HERE / "data" / "order-sign-lean-prefetch.json"

UNREAD = frozenset(
    {
        "address",
        "asserter",
        "category",
        "communication",
        "courseOfTherapyType",
        "dispenseRequest",
        "encounter",
        "extension",
        "groupIdentifier",
        "identifier",
        "insurance",
        "interpretation",
        "issued",
        "maritalStatus",
        "meta",
        "multipleBirthBoolean",
        "multipleBirthInteger",
        "note",
        "performer",
        "reasonCode",
        "reasonReference",
        "recorder",
        "referenceRange",
        "requester",
        "substitution",
        "telecom",
        "text",
    }
)


def lean(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in UNREAD}


def main() -> None:
    request = json.loads(SOURCE.read_text(encoding="utf-8"))
    prefetch = request["prefetch"]
    for key, value in prefetch.items():
        if value.get("resourceType") != "Bundle":
            prefetch[key] = lean(value)
            continue
        value["entry"] = [{"resource": lean(entry["resource"])} for entry in value["entry"]]
    OUT.write_text(json.dumps(request, separators=(",", ":")), encoding="utf-8")
    print(f"{OUT.name}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
